"""`ds2 export`: the MindIR graph reproduces the checkpoint (log-probabilities within 1e-5, the same greedy
transcripts on the test split), appears whole with its sidecar or not at all, and ONNX is refused in one line."""
import json
import os

import numpy as np
import pytest

pytest.importorskip("mindspore")

from ds2.__main__ import main  # noqa: E402
from tests.helpers import save_untrained_checkpoint, tiny_overrides, write_tone_corpus  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    manifests = write_tone_corpus(root / "corpus")
    overrides = tiny_overrides(root / "run", root / "data", manifests)
    return save_untrained_checkpoint(overrides), manifests, overrides


def test_export_writes_a_verified_graph_and_its_sidecar(run, capsys):
    from ds2.checkpoint.storage import file_sha256

    checkpoint_path, _, overrides = run
    assert main(["export", "--checkpoint", str(checkpoint_path)] + overrides) == 0
    out = capsys.readouterr().out
    graph = checkpoint_path.with_suffix(".mindir")
    assert "verified on 6 test utterances" in out and f"wrote {graph}" in out
    sidecar = json.loads(graph.with_name(graph.name + ".json").read_text())
    assert sidecar["sha256"] == file_sha256(graph)
    assert sidecar["checkpoint"]["sha256"] == file_sha256(checkpoint_path) and sidecar["checkpoint"]["step"] == 4
    assert sidecar["labels"] == sidecar["config"]["model"]["labels"] and sidecar["features"]["n_fft"] > 0
    assert sidecar["inputs"]["features"]["shape"][0] is None and sidecar["inputs"]["features"]["shape"][3] is None
    assert graph.stat().st_mode & 0o044    # readable by a server running as another user
    assert not [p for p in graph.parent.iterdir() if p.name.startswith(".tmp")]


def test_the_exported_graph_matches_the_checkpoint_on_the_test_split(run):
    from ds2.config import load_config
    from ds2.data.sets import load_sets
    from ds2.export import PARITY_TOLERANCE, load_graph
    from ds2.inference import load_for_inference, log_probs_of
    from ds2 import decoders

    checkpoint_path, _, overrides = run
    graph_path = checkpoint_path.with_suffix(".mindir")
    if not graph_path.exists():
        assert main(["export", "--checkpoint", str(checkpoint_path), "--verify", "0"] + overrides) == 0
    cfg = load_config("small", overrides=[o for o in overrides if o != "--set"])
    loaded = load_for_inference(cfg, str(checkpoint_path), ["train.shapes=dynamic"])
    data = load_sets(loaded.cfg, ["test"])["test"]
    expected = dict(log_probs_of(loaded.model, data, []))
    exported = dict(log_probs_of(load_graph(graph_path), data, []))
    assert expected.keys() == exported.keys() and len(expected) == 6
    greedy = decoders.build(decoders.GREEDY, loaded.cfg.model.labels)
    for index, log_probs in expected.items():
        assert exported[index].shape == log_probs.shape
        assert np.abs(exported[index] - log_probs).max() <= PARITY_TOLERANCE
        assert greedy(exported[index]) == greedy(log_probs)
    assert any(greedy(lp) for lp in expected.values()), "every transcript is empty: the comparison shows nothing"


def test_an_export_that_does_not_match_is_not_written(run, tmp_path, monkeypatch, capsys):
    import ds2.export

    checkpoint_path, _, overrides = run
    monkeypatch.setattr(ds2.export, "PARITY_TOLERANCE", -1.0)    # nothing can match
    destination = tmp_path / "model.mindir"
    assert main(["export", "--checkpoint", str(checkpoint_path), "--output", str(destination)] + overrides) == 1
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if "does not record the data settings" not in line]   # the test's manifests are written by hand
    assert len(err) == 1 and "does not reproduce" in err[0] and "nothing written" in err[0]
    assert os.listdir(tmp_path) == []


def test_onnx_is_refused_in_one_line(run, capsys):
    checkpoint_path, _, overrides = run
    assert main(["export", "--checkpoint", str(checkpoint_path), "--format", "onnx"] + overrides) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot export this model to ONNX" in err[0] and "--format mindir" in err[0]
    assert not checkpoint_path.with_suffix(".onnx").exists()
