"""`ds2 export --checkpoint best [--format mindir|onnx]`: the model as a MindIR graph, for MindSpore Lite,
MindSpore Serving or any MindSpore program, with no ds2 code needed to run it.

    ds2 export --checkpoint best              # runs/small/checkpoints/best.mindir and best.mindir.json

The graph takes features [batch, 1, n_bins, frames] float32 and frames [batch] int32, with batch and
frames left open (one graph for every length), and returns log-probabilities [output frames, batch,
labels] and the output lengths [batch], as the model does in ds2. The JSON sidecar holds what a program
needs to make the features and read the outputs (the labels, the feature settings), the whole config, and
the SHA-256 of the checkpoint it came from and of the graph file.

Before the file takes its place it is verified: the graph's log-probabilities on the first --verify
utterances of the test split must match the checkpoint's within PARITY_TOLERANCE, and the greedy
transcripts must be equal. Nothing is written unless that holds; the file appears whole or not at all.

ONNX: MindSpore 2.7.2 refuses to export dynamic shapes to ONNX, and speech needs the length left open;
the command says so in one line (docs/serving.md has what stops a fixed-shape export as well).
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

from ds2 import files
from ds2.config import Config, count

# Largest difference allowed between the exported graph's log-probabilities and the checkpoint's.
PARITY_TOLERANCE = 1e-5
FORMATS = ("mindir", "onnx")


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", default="best", metavar="PATH|best|last",
                        help="checkpoint file, or best / last of the run in run_dir (default: best)")
    parser.add_argument("--format", default="mindir", choices=FORMATS, help="mindir (default) or onnx")
    parser.add_argument("--output", metavar="FILE", help="where to write the graph (default: beside the "
                        "checkpoint, e.g. best.mindir)")
    parser.add_argument("--verify", type=count, default=100, metavar="N",
                        help="compare the graph with the checkpoint on the first N test utterances before "
                             "writing it (default 100; 0: do not compare)")


def output_path(checkpoint_path: Path, fmt: str, given: Optional[str]) -> Path:
    if given:
        path = Path(given)
        return path if path.suffix == f".{fmt}" else path.with_name(path.name + f".{fmt}")
    return checkpoint_path.with_suffix(f".{fmt}")


def sidecar_path(graph_path: Path) -> Path:
    return graph_path.with_name(graph_path.name + ".json")


def run(cfg: Config, args) -> int:
    from ds2.errors import UserError
    from ds2.inference import load_for_inference
    from ds2.runtime import configure_mindspore

    configure_mindspore(cfg)
    loaded = load_for_inference(cfg, args.checkpoint, list(args.overrides) + ["train.shapes=dynamic"])
    destination = output_path(loaded.path, args.format, args.output)
    if not destination.parent.is_dir():
        raise UserError(f"cannot write {destination}: no folder {destination.parent}")
    if args.format == "onnx":
        refuse_onnx(loaded)
    in_run = files.inside(destination, loaded.run_dir)
    if in_run:  # a folder of the user's own gets no lock file
        files.hold(loaded.run_dir, "export")
    files.sweep(destination.parent, held=in_run)
    with files.staging(destination) as work:
        graph = export_mindir(loaded.model, loaded.cfg, work / "model")
        if args.verify:
            print(verify(graph, loaded, args.verify))
        else:
            print("not verified (--verify 0)")
        publish(graph, destination, sidecar(graph, destination, loaded))
    print(f"wrote {destination} ({destination.stat().st_size / 1e6:.1f} MB) and {sidecar_path(destination).name}")
    return 0


def model_inputs(cfg: Config):
    """The graph's inputs with batch and frames open (what ds2.step.dynamic_inputs gives the model)."""
    from ds2.step import dynamic_inputs

    inputs = dynamic_inputs(cfg.features.n_bins)
    return inputs["features"], inputs["frames"]


def refuse_onnx(loaded) -> None:
    """Try MindSpore's ONNX export as speech needs it (open lengths); UserError with MindSpore's reason."""
    import mindspore as ms

    from ds2.errors import UserError, first_line

    work = Path(tempfile.mkdtemp(prefix="ds2-onnx-"))
    try:
        ms.export(loaded.model, *model_inputs(loaded.cfg), file_name=str(work / "model"), file_format="ONNX")
    except (ValueError, RuntimeError, TypeError) as exc:
        raise UserError(f"MindSpore {ms.__version__} cannot export this model to ONNX ({first_line(exc)}); speech "
                        f"needs the batch and length left open, and a fixed-shape export fails too (docs/serving.md: "
                        f"ONNX); use --format mindir") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raise UserError(f"MindSpore {ms.__version__} exported ONNX with open shapes, which this ds2 does not know it "
                    f"could: use --format mindir, and tell the project")


def export_mindir(model, cfg: Config, stem: Path) -> Path:
    """mindspore.export into stem.mindir (publish_file, which moves it into place, gives it the permissions any
    file the user writes gets: MindSpore leaves it readable by its owner alone)."""
    import mindspore as ms

    ms.export(model, *model_inputs(cfg), file_name=str(stem), file_format="MINDIR")
    graph = stem.with_suffix(".mindir")
    return graph


def load_graph(path: Path):
    """An exported graph as a callable cell: (features, frames) -> (log_probs, lengths)."""
    import mindspore as ms

    return ms.nn.GraphCell(ms.load(str(path)))


def verify(graph_path: Path, loaded, utterances: int) -> str:
    """One line: how the graph's outputs compare with the checkpoint model's on the first `utterances` of
    the test split. UserError when they differ by more than PARITY_TOLERANCE or a greedy transcript differs."""
    import numpy as np

    from ds2.data.sets import load_sets
    from ds2.errors import UserError
    from ds2.inference import log_probs_of
    from ds2 import decoders

    try:
        data = load_sets(loaded.cfg, ["test"], limit=utterances)["test"]
    except UserError as exc:
        raise UserError(f"{exc}; or export without comparing: --verify 0") from None
    decode = decoders.build(decoders.GREEDY, loaded.cfg.model.labels)
    graph = load_graph(graph_path)
    left_out = []
    expected = dict(log_probs_of(loaded.model, data, left_out))
    exported = dict(log_probs_of(graph, data, []))
    worst, differing = 0.0, []
    for index, log_probs in expected.items():
        worst = max(worst, float(np.abs(exported[index] - log_probs).max()))
        if decode(exported[index]) != decode(log_probs):
            differing.append(data.utterances[index].id)
    if worst > PARITY_TOLERANCE or differing:
        raise UserError(f"the exported graph does not reproduce {loaded.path}: log-probabilities differ by up to "
                        f"{worst:.2e} (tolerance {PARITY_TOLERANCE:g}), greedy transcripts differ on "
                        f"{len(differing)} utterances {differing[:3]}; nothing written")
    return (f"verified on {len(expected)} test utterances: log-probabilities within {worst:.1e} of the checkpoint's "
            f"(tolerance {PARITY_TOLERANCE:g}), greedy transcripts equal")


def sidecar(graph: Path, destination: Path, loaded) -> Dict[str, Any]:
    import mindspore as ms

    from ds2.checkpoint.storage import file_sha256
    from ds2.config import to_dict

    cfg = loaded.cfg
    return {
        "format": "mindir", "file": destination.name, "sha256": file_sha256(graph),
        "inputs": {"features": {"shape": [None, 1, cfg.features.n_bins, None], "dtype": "float32"},
                   "frames": {"shape": [None], "dtype": "int32"}},
        "outputs": {"log_probs": {"shape": [None, None, len(cfg.model.labels)], "dtype": "float32",
                                  "axes": "output frames, batch, labels"},
                    "lengths": {"shape": [None], "dtype": "int32"}},
        "labels": cfg.model.labels, "blank": 0,
        "features": dataclasses.asdict(cfg.features),
        "checkpoint": {"file": str(loaded.path), "sha256": file_sha256(loaded.path), "step": loaded.meta.get("step")},
        "mindspore": ms.__version__,
        "config": to_dict(cfg),
    }


def publish(graph: Path, destination: Path, description: Dict[str, Any]) -> None:
    """The sidecar, then the graph, each renamed into place from the same folder (a crash leaves the old
    files or the new ones, never part of one)."""
    files.write_json(sidecar_path(destination), description)
    files.publish_file(graph, destination)
