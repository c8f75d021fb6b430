"""Decoders by name: decode.decoder picks one of ds2.decoders' registry, auto picks as ds2 always has (by
decode.lm and decode.beam), a setting that contradicts the decoder is one line, and eval, serve and
the decoder benchmark take their decoders from the same registry."""
import dataclasses
import re

import numpy as np
import pytest

from ds2 import decoders, lm, lm_decode
from ds2.__main__ import main
from ds2.config import DECODER_NAMES, DecodeConfig, load_config
from ds2.errors import UserError
from ds2.inference import build_decoder
from tests.helpers import label_frames
from tests.test_user_mistakes import one_line_error

LABELS = "_'ABCDEFGHIJKLMNOPQRSTUVWXYZ "


def spoken(*spec) -> np.ndarray:
    """Model outputs that spell `spec`: a string is its letters, each near-certain; a dict
    {label: probability} is one uncertain frame."""
    return label_frames(LABELS, *[frame for item in spec for frame in (item if isinstance(item, str) else [item])])


@pytest.fixture
def checkpoint(tmp_path):
    """A checkpoint path (build_decoder reads only the LM settings beside it) and an ARPA file."""
    path = tmp_path / "run" / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True)
    arpa = tmp_path / "words.arpa"
    lm.build_arpa(["THE CAT", "A DOG"] * 5, 1, arpa)
    return path, arpa


def decoder_for(checkpoint_path, *overrides, name=None):
    cfg = load_config("small", overrides=list(overrides))
    return build_decoder(cfg, LABELS, checkpoint_path, name=name)


def test_the_config_lists_exactly_the_registry_s_decoders_and_auto_is_the_default():
    field = {f.name: f for f in dataclasses.fields(DecodeConfig)}["decoder"]
    assert field.metadata["choices"] == ("auto", "greedy", "prefix", "lm")
    assert tuple(decoders.DECODERS) == DECODER_NAMES == ("greedy", "prefix", "lm")
    assert load_config("small").decode.decoder == "auto"
    assert load_config("small", overrides=["decode.decoder=Prefix"]).decode.decoder == "prefix"


def test_each_name_builds_its_decoder_and_only_lm_reads_the_language_model(checkpoint):
    log_probs = spoken("THE ", {"K": 0.6, "C": 0.4}, "AT")
    assert decoders.build("greedy", LABELS)(log_probs) == "THE KAT"
    assert decoders.build("prefix", LABELS, beam=4)(log_probs) == "THE KAT"
    assert decoders.build("prefix", LABELS)(log_probs) == "THE KAT"       # beam 0: the prefix search's own width
    with pytest.raises(ValueError, match="needs a language model"):
        decoders.build("lm", LABELS)
    pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    _, arpa = checkpoint
    lm_decoder = decoders.build("lm", LABELS, lm_path=arpa, alpha=0.5, beta=1.0)
    assert isinstance(lm_decoder, lm_decode.LmDecoder) and lm_decoder.settings["beam"] == lm_decode.DEFAULT_BEAM
    assert lm_decoder(log_probs) == "THE CAT"                               # KAT is no word of the LM


def test_an_unknown_decoder_is_one_line_naming_the_choices(capsys):
    with pytest.raises(UserError, match=r"^config key decode.decoder: 'beamy' is not one of auto, greedy, prefix, "
                                        r"lm$"):
        load_config("small", overrides=["decode.decoder=beamy"])
    one_line_error(capsys, main(["eval", "--decoder", "beamy"]), "is not one of auto, greedy, prefix, lm")


def test_auto_makes_the_choice_ds2_made_by_decode_lm_and_decode_beam(checkpoint):
    pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    path, arpa = checkpoint
    built = load_config("small", overrides=[f"data.data_dir={arpa.parent / 'data'}"])
    lm.lm_path_for(built).parent.mkdir(parents=True)
    lm.lm_path_for(built).write_bytes(arpa.read_bytes())
    data = f"data.data_dir={arpa.parent / 'data'}"
    # (decode.lm, whether tune-lm stored settings) -> the decoder chosen with beam 0 and with beam 8
    expected = {("none", False): ("greedy", "beam8"), ("tuned", False): ("greedy", "beam8"),
                ("none", True): ("greedy", "beam8"), ("tuned", True): ("lm", "lm"),
                ("built", False): ("lm", "lm"), (str(arpa), False): ("lm", "lm")}
    for (lm_setting, tuned), names in expected.items():
        settings = lm_decode.settings_path(path)
        if tuned:
            lm_decode.save_settings(path, lm_decode.LmSettings(str(arpa), 0.5, 1.0, beam=16))
        elif settings.exists():
            settings.unlink()
        for beam, name in zip((0, 8), names):
            decoder = decoder_for(path, f"decode.lm={lm_setting}", f"decode.beam={beam}", data)
            assert decoder.name == name, (lm_setting, tuned, beam)
            assert decoder.kind == {"greedy": "greedy", "beam8": "prefix", "lm": "lm"}[name]
            if name == "lm":   # the beam given, else the tuned one, else the LM decoder's default
                assert decoder.settings["beam"] == (beam or (16 if tuned else lm_decode.DEFAULT_BEAM))
            assert decoder.decode(spoken("THE CAT")) == "THE CAT"


def test_each_name_builds_its_decoder_whatever_auto_would_choose(checkpoint):
    pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    path, arpa = checkpoint
    lm_decode.save_settings(path, lm_decode.LmSettings(str(arpa), 0.5, 1.0))   # auto would choose lm
    assert decoder_for(path, "decode.decoder=greedy").name == "greedy"
    prefix = decoder_for(path, "decode.decoder=prefix")
    assert (prefix.kind, prefix.name, prefix.settings["beam"]) == ("prefix", "beam32", 32)
    assert decoder_for(path, "decode.decoder=prefix", "decode.beam=4").name == "beam4"
    chosen = decoder_for(path, "decode.decoder=lm")
    assert (chosen.kind, chosen.settings["lm"], chosen.settings["alpha_from"]) == ("lm", str(arpa), "tuned")
    # serve builds every decoder for its requests, leaving out the settings that do not apply
    with_weights = ["decode.decoder=lm", "decode.alpha=2", "decode.beam=8"]
    assert decoder_for(path, *with_weights, name="greedy").kind == "greedy"
    assert decoder_for(path, *with_weights, name="prefix").kind == "prefix"


def test_a_setting_that_contradicts_the_decoder_is_a_one_line_user_error(checkpoint):
    path, arpa = checkpoint
    mistakes = {("decode.decoder=lm",): "there is none: give one with --lm FILE",
                ("decode.decoder=lm", "decode.lm=none"): "turns it off: drop one or the other",
                ("decode.decoder=greedy", f"decode.lm={arpa}"): "decodes without a language model, and decode.lm=",
                ("decode.decoder=prefix", "decode.alpha=1"): "decode.decoder=prefix decodes without one",
                ("decode.decoder=greedy", "decode.beam=8"): "takes no beam width, and --beam (decode.beam) gives 8"}
    for overrides, expected in mistakes.items():
        with pytest.raises(UserError, match=re.escape(expected)) as caught:
            decoder_for(path, *overrides)
        assert "\n" not in str(caught.value)


def test_serve_offers_every_decoder_it_can_build(checkpoint):
    from ds2.serve import offered_decoders

    path, arpa = checkpoint
    cfg = load_config("small")
    default, offered = offered_decoders(cfg, LABELS, path, 0)
    assert default.kind == "greedy" and list(offered) == ["greedy", "prefix"]     # no LM: no lm decoder
    pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    lm_decode.save_settings(path, lm_decode.LmSettings(str(arpa), 0.5, 1.0))
    default, offered = offered_decoders(cfg, LABELS, path, 0)
    assert default.kind == "lm" and list(offered) == ["lm", "greedy", "prefix"]
    assert all(offered[name].kind == name for name in offered)


def test_the_decoder_benchmark_takes_the_registry_s_names(checkpoint, tmp_path, capsys):
    from bench import lm_decoders

    _, arpa = checkpoint
    log_probs = [spoken("THE ", {"K": 0.6, "C": 0.4}, "AT"), spoken("A DOG")]   # greedy reads THE KAT
    for split in ("dev", "test"):
        lm_decode.save_log_probs(tmp_path / f"{split}.npz", log_probs, ["THE CAT", "A DOG"], ["u1", "u2"], LABELS)
    arguments = ["--dev", str(tmp_path / "dev.npz"), "--test", str(tmp_path / "test.npz"), "--lm", str(arpa)]

    def rows(decoders):
        assert lm_decoders.main(arguments + ["--decoders", decoders, "--prefix-beam", "4", "--alphas", "0,1",
                                             "--betas", "0,1"]) == 0
        return {line.split(" | ")[0][2:]: line.split(" | ")[2:4] for line in capsys.readouterr().out.splitlines()
                if line.startswith("| ") and not line.startswith("| decoder |")}

    assert rows("greedy,prefix") == {"greedy": ["25.00", "10.00"], "ds2 prefix beam 4": ["25.00", "10.00"]}
    with pytest.raises(SystemExit):
        lm_decoders.main(arguments + ["--decoders", "greedy,flashlight"])
    assert "unknown flashlight; choose from greedy, prefix, lm, pyctcdecode" in capsys.readouterr().err
    pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    assert rows("lm") == {"flashlight-text beam 64": ["0.00", "0.00"]}     # the LM knows CAT, not KAT
