"""`ds2 convert SOURCE`: a ds2 checkpoint from another code base's DeepSpeech2 checkpoint.

    ds2 convert --preset seed --set model.rnn_batch_norm=false zoo_deepspeech2.ckpt
    ds2 convert --preset seed --set model.activation=hardtanh --set features.window=hamming \\
        librispeech_pretrained_v2.pth

Sources, told apart by content (a .ckpt may be either):
- MindSpore .ckpt: ds2's own from any MindSpore version, or the MindSpore model zoo's DeepSpeech2
  (ds2.checkpoint.layouts.REFERENCE_ZOO: names mapped, flat LSTM weights split, no conv bias and no
  BatchNorm before the output layer filled with neutral values, output rows reordered from the
  zoo's labels, blank last, to the config's);
- deepspeech.pytorch: a V2 .pth (labels and audio_conf at the top level) or a V3 PyTorch Lightning
  .ckpt as released (hyper_parameters holding omegaconf configs), read with the restricted
  unpickler of ds2.checkpoint.torch_unpickler, because unpickling can run any code. Labels and
  spectrogram settings (sample rate, window size and stride, window) come from the checkpoint.
  Its LSTM tensors are already in ds2's layout: PyTorch and MindSpore's LSTM kernels both order
  the gates (input, forget, cell, output), weight_ih [4H, in], weight_hh [4H, H], and ds2 keeps
  the two biases apart.

The model is the configured one (preset, --config, --set), with the labels and spectrogram
settings a deepspeech.pytorch checkpoint stores taken from it. The source's architecture, read
from its tensor shapes plus what its code fixes (activation, strides, how directions merge), is
compared with it first; every difference is listed with the --set that fixes it, and what ds2
cannot represent at all is named. Then ds2.checkpoint.reconcile maps the tensors and prints its table.

Output: a ds2 checkpoint at step 0 with a fresh optimizer state (converted weights restart the
optimizer), by default <run_dir>/checkpoints/step-0000000.ckpt, so `ds2 eval --checkpoint last`
and `ds2 train --resume` (fine-tuning) take it as it is.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

from ds2 import files
from ds2.checkpoint import layouts, storage
from ds2.checkpoint.torch_unpickler import UnsafeCheckpoint, is_torch_file, read_torch_checkpoint
from ds2.config import Config, to_dict


def add_arguments(parser) -> None:
    parser.add_argument("source", help="checkpoint to convert: MindSpore .ckpt (ds2 or model zoo) or "
                                       "deepspeech.pytorch .pth / Lightning .ckpt")
    parser.add_argument("--output", metavar="PATH",
                        help="where to write the ds2 checkpoint (default: <run_dir>/checkpoints/step-0000000.ckpt)")
    parser.add_argument("--source-labels", metavar="LABELS",
                        help="label order of the source's output layer, e.g. \"_'ABC...Z \" (default: stored in "
                             "the checkpoint, else the source code base's default)")


def _stored(others: Dict[str, Any], key: str):
    """A hyper-parameter of a deepspeech.pytorch checkpoint: top level (v2) or under hyper_parameters (v3)."""
    if key in others:
        return others[key]
    hyper = others.get("hyper_parameters")
    return hyper.get(key) if isinstance(hyper, dict) else None


# ---------------------------------------------------------------------------------------------
# Architecture: the source's versus the config's

def source_architecture(arrays: Dict[str, Any], layout) -> Tuple[Dict[str, Any], List[str]]:
    """(ModelConfig values the source implies, what ds2 cannot represent) from its tensor shapes."""
    by_role = {}
    for name, array in arrays.items():
        role = layout.role_of(name)
        if role:
            by_role[role] = array
    values: Dict[str, Any] = dict(layout.architecture)
    unsupported: List[str] = []
    for k in (1, 2):
        weight = by_role.get(f"conv{k}.weight")
        if weight is not None:
            values["conv_channels"] = int(weight.shape[0])
            values[f"conv{k}_kernel"] = (int(weight.shape[2]), int(weight.shape[3]))
    layers = sorted({int(m.group(1)) for role in by_role for m in [re.match(r"rnn(\d+)\.", role)] if m})
    if layers:
        values["rnn_layers"] = layers[-1] + 1
    if "fc.weight" in by_role:
        values["rnn_hidden"] = int(by_role["fc.weight"].shape[1])
    with_norm = [i for i in layers if f"rnn{i}.bn.gamma" in by_role]
    if 0 in with_norm:
        unsupported.append("a BatchNorm before the first LSTM layer: ds2 has none there")
    if layers:
        values["rnn_batch_norm"] = bool(with_norm)
        if with_norm and with_norm != layers[1:]:
            unsupported.append(f"BatchNorm before LSTM layers {with_norm} only: ds2 has it before all of "
                               f"layers 1..{layers[-1]} or none")
    for i in layers:
        weight_hh = by_role.get(f"rnn{i}.weight_hh")
        if weight_hh is not None and weight_hh.shape[0] != 4 * weight_hh.shape[1]:
            gates = weight_hh.shape[0] // weight_hh.shape[1]
            kind = {3: "a GRU", 1: "a plain RNN"}.get(gates, f"{gates}-gate")
            unsupported.append(f"recurrent layer {i} is {kind}: ds2's layers are LSTMs")
        if f"rnn{i}.weight_ih" in by_role and f"rnn{i}.weight_ih_reverse" not in by_role:
            unsupported.append(f"LSTM layer {i} is unidirectional: ds2's layers are bidirectional "
                               "(and it has no Lookahead layer)")
    if any(name.startswith("lookahead.") for name in arrays):
        unsupported.append("a Lookahead layer (unidirectional models): ds2 has none")
    return values, unsupported


def _override_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def config_differences(section: str, source: Dict[str, Any], configured) -> List[Tuple[str, str]]:
    """(description, --set override) for each value of `source` that the config section differs in."""
    differences = []
    for key, value in source.items():
        current = getattr(configured, key)
        if (tuple(current) if isinstance(current, (tuple, list)) else current) != value:
            differences.append((f"{section}.{key}: the checkpoint has {_override_text(value)}, the config "
                                f"{_override_text(current)}", f"--set {section}.{key}={_override_text(value)}"))
    return differences


def torch_features(others: Dict[str, Any]) -> Dict[str, Any]:
    """FeatureConfig values of a deepspeech.pytorch checkpoint's audio settings, when it stores them."""
    audio = _stored(others, "audio_conf") or _stored(others, "spect_cfg")
    if not isinstance(audio, dict) or "sample_rate" not in audio:
        return {}
    rate = int(audio["sample_rate"])
    values: Dict[str, Any] = {"sample_rate": rate}
    if "window_size" in audio:   # seconds; deepspeech.pytorch's n_fft = int(rate * window_size)
        values["n_fft"] = values["win_length"] = int(rate * audio["window_size"])
    if "window_stride" in audio:
        values["hop_length"] = int(rate * audio["window_stride"])
    if isinstance(audio.get("window"), str):
        values["window"] = audio["window"]
    return values


def adopt_torch_settings(cfg: Config, features: Dict[str, Any], labels) -> List[str]:
    """Set cfg's features to the checkpoint's spectrogram settings and cfg's labels to its labels
    (when they are a ds2 label set: blank first, a space, no duplicates), so the converted model
    computes its inputs and reads its outputs as the source did. Returns what changed, one line each."""
    from ds2.text import check_labels

    changed = []
    for key, value in features.items():
        if getattr(cfg.features, key) != value:
            changed.append(f"features.{key}: {_override_text(value)} from the checkpoint "
                           f"(the config had {_override_text(getattr(cfg.features, key))})")
            setattr(cfg.features, key, value)
    if labels is not None and labels != cfg.model.labels:
        try:
            check_labels(labels)
        except ValueError:
            return changed   # reconcile maps the rows, or says which labels it cannot map
        changed.append(f"model.labels: {labels!r} from the checkpoint (the config had {cfg.model.labels!r})")
        cfg.model.labels = labels
    return changed


# ---------------------------------------------------------------------------------------------
# The command


def run(cfg: Config, args) -> int:
    from ds2.checkpoint import reconcile
    from ds2.step import build_training_state

    source = Path(args.source)
    output = Path(args.output) if args.output else storage.step_path(cfg.run_dir, 0)
    if not source.is_file():
        print(f"ds2 convert: no file {source}", file=sys.stderr)
        return 1
    if output.resolve().parent.name == storage.checkpoint_dir(".").name:  # into a run: hold it
        files.hold(storage.run_folder(output, cfg.run_dir), "convert")
        files.sweep(output.parent, held=True)
    if output.exists():
        print(f"ds2 convert: {output} exists; remove it or give another --output", file=sys.stderr)
        return 1

    labels = args.source_labels
    differences: List[Tuple[str, str]] = []
    unsupported: List[str] = []
    try:
        if is_torch_file(source):
            values, others = read_torch_checkpoint(source)
            layout = layouts.DEEPSPEECH_PYTORCH
            stored = _stored(others, "labels")
            if labels is None and stored is not None:
                labels = "".join(stored)
            for line in adopt_torch_settings(cfg, torch_features(others), labels):
                print(line)
        else:
            values, meta = storage.read_checkpoint(source)
            layout = None
            if labels is None and meta:
                labels = meta.get("config", {}).get("model", {}).get("labels")
    except (UnsafeCheckpoint, ValueError, OSError, RuntimeError) as exc:
        print(f"ds2 convert: {exc}", file=sys.stderr)
        return 1

    model, _, optimizer, _ = build_training_state(cfg, compile_step=False)   # as ds2 train builds them
    if layout is None:
        layout = layouts.detect_layout(values, dict(model.parameters_and_names()))
    if layout is not layouts.NATIVE:
        architecture, unsupported = source_architecture(values, layout)
        differences += config_differences("model", architecture, cfg.model)
        if labels is None:
            labels = layout.labels
            print(f"labels: not stored in the checkpoint; assuming {layout.name}'s order {labels!r} "
                  f"(--source-labels to give another)")
    if unsupported or differences:
        print(f"ds2 convert: {source} ({layout.name}) does not match the configured model:", file=sys.stderr)
        for problem in unsupported:
            print(f"  cannot be mapped: {problem}", file=sys.stderr)
        for description, _ in differences:
            print(f"  {description}", file=sys.stderr)
        if differences:
            print("rerun with: " + " ".join(override for _, override in differences), file=sys.stderr)
        return 1

    report = reconcile.reconcile(values, model, optimizer, labels, layout)
    print(report.format_table())
    print(report.summary())
    if report.refused:
        return 1
    reconcile.apply(report, model, optimizer)
    storage.save(output, model, optimizer, {
        "config": to_dict(cfg), "step": 0, "skipped": 0, "position": {"epoch": 0, "batch": 0}, "metrics": {},
        "environment": storage.environment(),
        "converted_from": {"path": str(source), "layout": layout.name, "labels": labels or cfg.model.labels}})
    if layout is layouts.REFERENCE_ZOO and cfg.features.window != "hamming":
        print("note: the model zoo computed its training features with a 'hamming' window "
              f"(this config: {cfg.features.window!r}; --set features.window=hamming to match)")
    print(f"wrote {output}")
    return 0

