"""`ds2 eval` and `ds2 transcribe` on a tiny trained run."""
import json

import pytest

pytest.importorskip("mindspore")

from ds2.__main__ import main  # noqa: E402
from tests.test_train import tiny_overrides, write_tone_corpus  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    manifests = write_tone_corpus(root / "corpus")
    overrides = tiny_overrides(root / "run", root / "data", manifests, **{"train.epochs": 2})
    assert main(["train"] + overrides) == 0
    return root, manifests, overrides


def test_eval_writes_per_utterance_results_and_summary(trained, capsys):
    root, manifests, overrides = trained
    assert main(["eval", "--checkpoint", "best", "--split", "test"] + overrides) == 0
    lines = [json.loads(l) for l in (root / "run" / "eval" / "test.jsonl").read_text().splitlines()]
    summary = json.loads((root / "run" / "eval" / "test_summary.json").read_text())
    references = {s["id"]: s["transcript"] for s in json.loads(manifests["test"].read_text())["samples"]}
    assert {l["id"]: l["ref"] for l in lines} == references
    assert summary["utterances"] == len(references) and summary["decoder"] == "greedy"
    assert summary["cer"] == pytest.approx(sum(l["char_edits"] for l in lines) / sum(l["chars"] for l in lines))
    assert summary["split"] == "test" and summary["checkpoint"].endswith("best.ckpt")
    assert "WER" in capsys.readouterr().out


def test_eval_with_beam_search(trained):
    root, _, overrides = trained
    assert main(["eval", "--checkpoint", "last", "--split", "dev", "--beam", "4"] + overrides) == 0
    summary = json.loads((root / "run" / "eval" / "dev_summary.json").read_text())
    assert summary["decoder"] == "beam4"


def test_transcribe_prints_one_line_per_file(trained, capsys):
    root, manifests, overrides = trained
    samples = json.loads(manifests["test"].read_text())["samples"][:2]
    assert main(["transcribe", "--checkpoint", "last"] + overrides + [s["wav_path"] for s in samples]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if "\t" in l]
    assert [l.split("\t")[0] for l in lines] == [s["wav_path"] for s in samples]


def test_training_wrote_metrics_and_plot(trained):
    root, _, _ = trained
    records = [json.loads(l) for l in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "epoch", "loss", "lr", "grad_norm", "audio_sec_per_sec", "skipped"} <= set(records[0])
    assert [r["epoch"] for r in records if r["kind"] == "dev"] == [1, 2]
    assert (root / "run" / "curves.png").stat().st_size > 0
