"""`ds2 lm`, `ds2 tune-lm` and the LM decoding of `ds2 eval` / `ds2 transcribe`: the LM comes from the
training transcripts only, tune-lm stores its choice beside the checkpoint, eval and transcribe use it,
explicit flags win, and LibriSpeech's official LM is downloaded, resumed and checked."""
import functools
import gzip
import hashlib
import http.server
import json
import shutil
import threading

import pytest

from ds2 import lm, lm_decode
from ds2.__main__ import main
from ds2.config import load_config
from tests.helpers import tiny_overrides, write_tone_corpus
from tests.test_librispeech import RangeHandler
from tests.test_user_mistakes import one_line_error

pytest.importorskip("flashlight.lib.text.decoder.kenlm")


def transcripts(manifest):
    return [s["transcript"] for s in json.loads(manifest.read_text())["samples"]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm-commands")
    return root, write_tone_corpus(root / "corpus")


@pytest.fixture(scope="module")
def trained(corpus):
    """A tiny trained run (its best.ckpt) and the overrides that point at it."""
    pytest.importorskip("mindspore")
    root, manifests = corpus
    overrides = tiny_overrides(root / "run", root / "data", manifests, **{"train.epochs": 2})
    assert main(["train"] + overrides) == 0
    return root, manifests, overrides


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the trained run for one test: tuned settings written beside its checkpoints stay there."""
    root, manifests, overrides = trained
    shutil.copytree(root / "run" / "checkpoints", tmp_path / "run" / "checkpoints")
    overrides = overrides + ["--set", f"run_dir={tmp_path / 'run'}", "--set", f"data.data_dir={tmp_path / 'data'}"]
    return tmp_path / "run", manifests, overrides


def summary(run_dir, name, split="test"):
    return json.loads((run_dir / "eval" / f"{split}_{name}_summary.json").read_text())


def hypotheses(run_dir, name, split="test"):
    lines = (run_dir / "eval" / f"{split}_{name}.jsonl").read_text().splitlines()
    return {record["id"]: record["hyp"] for record in map(json.loads, lines)}


# ---------------------------------------------------------------------------------------------
# ds2 lm


def test_lm_is_built_from_the_training_transcripts_only(corpus, tmp_path, capsys):
    root, manifests = corpus
    data = ["--set", f"data.data_dir={tmp_path}", "--set", f"data.train_manifest={manifests['train']}",
            "--set", f"data.dev_manifest={manifests['dev']}"]
    assert main(["lm"] + data) == 0          # the small preset: order 1
    out = capsys.readouterr().out
    path = tmp_path / "lm" / "train-1gram.arpa"
    train, dev = set(transcripts(manifests["train"])), set(transcripts(manifests["dev"]))
    assert dev - train, "the corpus must have dev words the training transcripts lack"
    assert set(lm.arpa_vocabulary(path)) == train
    assert f"built a 1-gram LM from the 24 transcripts of {manifests['train']}" in out
    unknown = sum(word not in train for sentence in transcripts(manifests["dev"]) for word in sentence.split())
    assert f"; {unknown} of their 6 words" in out and "dev perplexity" in out

    assert main(["lm", "--order", "2"] + data) == 0
    model = lm.read_arpa(tmp_path / "lm" / "train-2gram.arpa")
    assert model.order == 2 and {w for ngram in model.probabilities[1] for w in ngram} <= train | {"<s>", "</s>"}


def test_lm_without_a_dev_manifest_says_so(corpus, tmp_path, capsys):
    _, manifests = corpus
    assert main(["lm", "--set", f"data.data_dir={tmp_path}", "--set", f"data.train_manifest={manifests['train']}",
                 "--output", str(tmp_path / "elsewhere.arpa")]) == 0
    assert "no dev manifest" in capsys.readouterr().out and (tmp_path / "elsewhere.arpa").is_file()


# ---------------------------------------------------------------------------------------------
# LibriSpeech's official LM: ds2 lm --official, through a local mirror


def fails_with(capsys, code, expected):
    """Exit 1 and, after the download's progress line, one line saying `expected`; no traceback."""
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and expected in err.splitlines()[-1], err


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """An HTTP server with Range support serving resources/11/<official LM> (a tiny gzipped ARPA file)."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    served = tmp_path / "served" / "resources" / "11"
    served.mkdir(parents=True)
    model = lm.kneser_ney(["ABC DE", "ABC AB", "DE"] * 3, 2)
    lm.write_arpa(model, tmp_path / "official.arpa.gz")
    archive = served / "3-gram.pruned.1e-7.arpa.gz"
    archive.write_bytes((tmp_path / "official.arpa.gz").read_bytes())
    monkeypatch.setitem(lm.OFFICIAL_LM_MD5, archive.name, hashlib.md5(archive.read_bytes()).hexdigest())
    handler = functools.partial(RangeHandler, directory=str(tmp_path / "served"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.state = {"requests": [], "honour_range": True, "cut_after": None}
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield {"url": f"http://127.0.0.1:{httpd.server_port}/resources", "state": httpd.state, "archive": archive}
    httpd.shutdown()
    httpd.server_close()


def test_official_lm_comes_from_the_corpus_mirror_resumed_and_checked(corpus, mirror, tmp_path, capsys):
    _, manifests = corpus
    # The seed preset's LM is the official one, from the corpus mirror's resource 11.
    args = ["lm", "--preset", "seed", "--set", f"data.data_dir={tmp_path / 'data'}",
            "--set", f"data.librispeech_url={mirror['url']}/12", "--set", f"data.dev_manifest={manifests['dev']}"]
    size = mirror["archive"].stat().st_size
    mirror["state"]["cut_after"] = size // 2
    fails_with(capsys, main(args), "run again to resume")
    assert main(args) == 0
    assert mirror["state"]["requests"] == [None, f"bytes={size // 2}-"]
    path = tmp_path / "data" / "lm" / "3-gram.pruned.1e-7.arpa.gz"
    assert path.read_bytes() == mirror["archive"].read_bytes()
    out = capsys.readouterr().out
    assert "downloaded from" in out and "MD5 checked" in out and "dev perplexity" in out

    assert main(args) == 0                     # there already: used as it is, not fetched again
    assert len(mirror["state"]["requests"]) == 2 and "already there" in capsys.readouterr().out


def test_official_lm_with_a_wrong_checksum_is_refused(mirror, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(lm.OFFICIAL_LM_MD5, "3-gram.pruned.1e-7.arpa.gz", "0" * 32)
    args = ["lm", "--official", "--set", f"data.data_dir={tmp_path}", "--set", f"lm.url={mirror['url']}/11"]
    fails_with(capsys, main(args), "set lm.url to another mirror")
    assert not (tmp_path / "lm" / "3-gram.pruned.1e-7.arpa.gz").exists()
    # lm.md5 stands in for the built-in table (should OpenSLR's file ever differ from it).
    md5 = hashlib.md5(mirror["archive"].read_bytes()).hexdigest()
    assert main(args + ["--set", f"lm.md5={md5}"]) == 0
    assert (tmp_path / "lm" / "3-gram.pruned.1e-7.arpa.gz").is_file()


def test_official_lm_url_is_the_corpus_mirrors_resource_11():
    cfg = load_config("seed", overrides=["data.librispeech_url=https://us.openslr.org/resources/12/"])
    assert lm.official_lm_url(cfg) == "https://us.openslr.org/resources/11"
    assert lm.official_lm_url(load_config("seed", overrides=["lm.url=http://m/lm"])) == "http://m/lm"
    with pytest.raises(lm.LmError, match="set lm.url"):
        lm.official_lm_url(load_config("seed", overrides=["data.librispeech_url=http://mirror/corpus"]))


def test_perplexity_of_a_file_reads_only_what_the_sentences_need(tmp_path):
    sentences = ["ABC DE", "ABC AB", "DE", "AB DE ABC"]
    model = lm.kneser_ney(sentences, 3)
    path = lm.write_arpa(model, tmp_path / "m.arpa.gz")
    dev = ["ABC DE", "DE XYZ"]
    perplexity, unknown, total = lm.perplexity_of_file(path, dev)
    assert perplexity == pytest.approx(lm.perplexity(model, dev)) and (unknown, total) == (1, 4)
    assert "AB" not in {g[0] for g in lm.read_arpa(path, words={"ABC", "DE"}).probabilities[0]}


# ---------------------------------------------------------------------------------------------
# ds2 tune-lm, then eval and transcribe


def test_tune_lm_stores_its_choice_and_eval_uses_it(run, capsys):
    run_dir, manifests, overrides = run
    assert main(["lm"] + overrides) == 0
    assert main(["tune-lm", "--alphas", "0,1", "--betas=-1,2"] + overrides) == 0
    out = capsys.readouterr().out
    assert "dev WER by alpha (rows) and beta (columns)" in out and "best: alpha" in out

    stored = json.loads((run_dir / "checkpoints" / "best.ckpt.lm.json").read_text())
    settings = lm_decode.load_settings(run_dir / "checkpoints" / "best.ckpt")
    assert len(stored["grid"]) == 4 and stored["split"] == "dev" and stored["checkpoint_step"] > 0
    best = min(stored["grid"], key=lambda row: (row["wer"], row["cer"], row["alpha"], row["beta"]))
    assert (settings.alpha, settings.beta, settings.beam) == (best["alpha"], best["beta"], 64)
    assert settings.lm_path == str(run_dir.parent / "data" / "lm" / "train-1gram.arpa")

    assert main(["eval"] + overrides) == 0     # no decoding flags: the tuned LM
    used = summary(run_dir, "lm")
    assert (used["alpha"], used["beta"], used["alpha_from"], used["beta_from"]) == \
        (settings.alpha, settings.beta, "tuned", "tuned")
    assert used["lm"] == settings.lm_path and used["decode_utterances_per_sec"] > 0
    train_words = set(transcripts(manifests["train"]))
    assert set(hypotheses(run_dir, "lm").values()) <= train_words | {""}   # the lexicon's words only
    assert "decoder: LM beam search, 64 beams" in capsys.readouterr().out

    assert main(["transcribe"] + overrides + [s["wav_path"] for s in
                                              json.loads(manifests["test"].read_text())["samples"][:2]]) == 0
    captured = capsys.readouterr()
    assert "LM beam search" in captured.err
    decoded = hypotheses(run_dir, "lm")
    lines = [line.split("\t") for line in captured.out.splitlines() if "\t" in line]
    assert [text for _, text in lines] == [decoded["test-0"], decoded["test-1"]]


def test_explicit_decoding_flags_win_over_the_tuned_settings(run, capsys):
    run_dir, _, overrides = run
    assert main(["lm"] + overrides) == 0
    assert main(["tune-lm", "--alphas", "0,1", "--betas=-1,2"] + overrides) == 0
    tuned = lm_decode.load_settings(run_dir / "checkpoints" / "best.ckpt")

    assert main(["eval", "--alpha", "3"] + overrides) == 0
    assert (summary(run_dir, "lm")["alpha"], summary(run_dir, "lm")["beta"]) == (3.0, tuned.beta)
    assert (summary(run_dir, "lm")["alpha_from"], summary(run_dir, "lm")["beta_from"]) == ("given", "tuned")
    assert main(["eval", "--set", "decode.beta=-3", "--beam", "8"] + overrides) == 0   # --set is the same path
    assert (summary(run_dir, "lm")["beta"], summary(run_dir, "lm")["beam"]) == (-3.0, 8)
    assert main(["eval", "--lm", "built"] + overrides) == 0    # the LM ds2 lm wrote: the tuned one here
    assert (summary(run_dir, "lm")["lm"], summary(run_dir, "lm")["alpha_from"]) == (tuned.lm_path, "tuned")
    assert main(["eval", "--no-lm"] + overrides) == 0
    assert summary(run_dir, "greedy")["decoder"] == "greedy"
    assert main(["eval", "--no-lm", "--beam", "4"] + overrides) == 0
    assert summary(run_dir, "beam4")["decoder"] == "beam4"
    (run_dir / "eval" / "test_greedy_summary.json").unlink()
    assert main(["eval", "--decoder", "greedy"] + overrides) == 0     # by name: the tuned LM stays unused
    assert summary(run_dir, "greedy")["decoder"] == "greedy"
    assert main(["eval", "--decoder", "prefix"] + overrides) == 0     # the prefix search's own width
    assert summary(run_dir, "beam32")["beam"] == 32
    out = capsys.readouterr().out
    assert "every decoder evaluated" in out and "beam4" in out.split("every decoder evaluated")[-1]


def test_another_lm_gets_default_weights_and_a_stale_tuning_is_named(run, capsys):
    run_dir, _, overrides = run
    assert main(["lm"] + overrides) == 0
    assert main(["tune-lm", "--alphas", "1", "--betas", "2"] + overrides) == 0
    other = run_dir / "other.arpa"
    assert main(["lm", "--order", "2", "--output", str(other)] + overrides) == 0
    capsys.readouterr()
    assert main(["eval", "--lm", str(other)] + overrides) == 0
    used = summary(run_dir, "lm")
    assert (used["lm"], used["alpha"], used["beta"], used["alpha_from"]) == \
        (str(other), lm_decode.DEFAULT_ALPHA, lm_decode.DEFAULT_BETA, "default")
    assert "defaults: ds2 tune-lm tunes them" in capsys.readouterr().out

    settings_file = run_dir / "checkpoints" / "best.ckpt.lm.json"
    stored = json.loads(settings_file.read_text())
    settings_file.write_text(json.dumps(dict(stored, checkpoint_step=stored["checkpoint_step"] + 1000)))
    assert main(["eval"] + overrides) == 0
    assert "ds2 tune-lm again" in capsys.readouterr().out


def test_decoding_mistakes_are_one_line(run, capsys):
    run_dir, _, overrides = run
    one_line_error(capsys, main(["eval", "--alpha", "1"] + overrides), "there is none: give one with --lm FILE")
    one_line_error(capsys, main(["eval", "--no-lm", "--beta", "1"] + overrides), "drop one or the other")
    one_line_error(capsys, main(["eval", "--lm", str(run_dir / "missing.arpa")] + overrides), "no language model at")
    one_line_error(capsys, main(["tune-lm", "--lm", str(run_dir / "missing.arpa")] + overrides), "build it with ds2 lm")
    one_line_error(capsys, main(["tune-lm", "--set", "decode.decoder=greedy"] + overrides), "uses no language model")
    one_line_error(capsys, main(["eval", "--decoder", "lm", "--no-lm"] + overrides), "drop one or the other")
    (run_dir / "checkpoints" / "best.ckpt.lm.json").write_text('{"alpha": 1}')
    one_line_error(capsys, main(["eval"] + overrides), "run ds2 tune-lm again")
    assert main(["lm"] + overrides) == 0
    lm_path = run_dir.parent / "data" / "lm" / "train-1gram.arpa"
    lm_decode.save_settings(run_dir / "checkpoints" / "best.ckpt", lm_decode.LmSettings(str(lm_path), 0.5, 1.0))
    lm_path.unlink()
    capsys.readouterr()
    one_line_error(capsys, main(["eval"] + overrides), "is gone")
