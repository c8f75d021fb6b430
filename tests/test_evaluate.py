"""`ds2 eval` and `ds2 transcribe` on a tiny trained run."""
import json

import pytest

pytest.importorskip("mindspore")

from ds2.__main__ import main  # noqa: E402
from tests.helpers import tiny_overrides, write_tone_corpus  # noqa: E402


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
    lines = [json.loads(l) for l in (root / "run" / "eval" / "test_greedy.jsonl").read_text().splitlines()]
    summary = json.loads((root / "run" / "eval" / "test_greedy_summary.json").read_text())
    references = {s["id"]: s["transcript"] for s in json.loads(manifests["test"].read_text())["samples"]}
    assert {l["id"]: l["ref"] for l in lines} == references
    assert summary["utterances"] == len(references) and summary["decoder"] == "greedy"
    assert summary["cer"] == pytest.approx(sum(l["char_edits"] for l in lines) / sum(l["chars"] for l in lines))
    assert summary["split"] == "test" and summary["checkpoint"].endswith("best.ckpt")
    assert summary["decode_utterances_per_sec"] > 0 and summary["utterances_per_sec"] > 0
    out = capsys.readouterr().out
    assert "WER" in out and "utterances/s in the decoder" in out


def test_eval_of_several_splits_writes_each_one(trained, capsys):
    root, _, overrides = trained
    assert main(["eval", "--checkpoint", "last", "--split", "dev,test"] + overrides) == 0
    out = capsys.readouterr().out
    for split in ("dev", "test"):
        assert json.loads((root / "run" / "eval" / f"{split}_greedy_summary.json").read_text())["split"] == split
        assert f"\n{split}: " in out
    with pytest.raises(SystemExit):
        main(["eval", "--split", "test,tset"] + overrides)
    assert "expected splits among train,dev,test,test-noisy" in capsys.readouterr().err


def model_log_probs(overrides, split, inference_overrides=()):
    """{utterance id: log-probabilities} of the last checkpoint's model on a split, decoded by nobody yet."""
    from ds2.config import load_config
    from ds2.data.sets import load_sets
    from ds2.inference import load_for_inference, log_probs_of

    cfg = load_config("small", overrides=[o for o in overrides if o != "--set"])
    loaded = load_for_inference(cfg, "last", list(inference_overrides))
    data = load_sets(loaded.cfg, [split])[split]
    return {data.utterances[i].id: lp for i, lp in log_probs_of(loaded.model, data, [])}, loaded.cfg


def test_one_dynamic_shape_graph_computes_what_the_per_shape_graphs_compute(trained):
    import numpy as np

    _, _, overrides = trained
    static, cfg = model_log_probs(overrides, "dev", ["train.shapes=static"])
    dynamic, cfg = model_log_probs(overrides, "dev", ["train.shapes=dynamic"])
    assert cfg.train.shapes == "dynamic" and static.keys() == dynamic.keys()
    for utterance, log_probs in static.items():
        np.testing.assert_allclose(dynamic[utterance], log_probs, rtol=1e-4, atol=1e-4)


def test_eval_with_beam_search_writes_the_beam_search_transcripts(trained):
    from ds2.decode import beam_search_decode
    from ds2.metrics import error_rates

    root, _, overrides = trained
    assert main(["eval", "--checkpoint", "last", "--split", "dev", "--beam", "4"] + overrides) == 0
    summary = json.loads((root / "run" / "eval" / "dev_beam4_summary.json").read_text())
    lines = [json.loads(l) for l in (root / "run" / "eval" / "dev_beam4.jsonl").read_text().splitlines()]
    log_probs, cfg = model_log_probs(overrides, "dev")
    labels = cfg.model.labels
    assert summary["decoder"] == "beam4" and summary["utterances"] == len(log_probs) == len(lines)
    for line in lines:
        assert line["hyp"] == beam_search_decode(log_probs[line["id"]], len(log_probs[line["id"]]), labels, beam_width=4)
    assert summary["wer"] == pytest.approx(error_rates([l["ref"] for l in lines], [l["hyp"] for l in lines]).wer)


def test_transcribe_prints_what_eval_decodes(trained, capsys):
    root, manifests, overrides = trained
    assert main(["eval", "--checkpoint", "last", "--split", "test"] + overrides) == 0
    decoded = {json.loads(l)["id"]: json.loads(l)["hyp"]
               for l in (root / "run" / "eval" / "test_greedy.jsonl").read_text().splitlines()}
    samples = json.loads(manifests["test"].read_text())["samples"][:3]
    capsys.readouterr()
    assert main(["transcribe", "--checkpoint", "last"] + overrides + [s["wav_path"] for s in samples]) == 0
    lines = [l.split("\t") for l in capsys.readouterr().out.splitlines() if "\t" in l]
    # One line per file, in order, with the transcript eval got from the same model (padding differs:
    # transcribe pads each file to whole seconds, eval to its bucket; the model masks padding).
    assert [(path, text) for path, text in lines] == [(s["wav_path"], decoded[s["id"]]) for s in samples]
    assert any(decoded[s["id"]] for s in samples), "the model decodes nothing: the test shows no transcript"


def test_training_wrote_metrics_and_plot(trained):
    root, _, _ = trained
    records = [json.loads(l) for l in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "epoch", "loss", "lr", "grad_norm", "audio_sec_per_sec", "skipped"} <= set(records[0])
    assert [r["epoch"] for r in records if r["kind"] == "dev"] == [1, 2]
    assert (root / "run" / "curves.png").stat().st_size > 0
