"""ds2.config: one typing for YAML, --set and stored configs; checked values; keys that name the fix."""
import pytest

from ds2.config import ConfigError, all_keys, apply_override, from_dict, load_config, to_dict, with_overrides
from ds2.errors import DataError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_values_are_typed_like_set_values(tmp_path):
    # PyYAML reads 1e-3 (no dot) as a string; both sources must give the float.
    from_yaml = load_config("small", write(tmp_path, "train:\n  lr: 1e-3\n  epochs: '7'\n  fit_memory: 'off'\n"))
    from_set = load_config("small", overrides=["train.lr=1e-3", "train.epochs=7", "train.fit_memory=off"])
    for cfg in (from_yaml, from_set):
        assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float)
        assert cfg.train.epochs == 7 and cfg.train.fit_memory is False


def test_lists_tuples_and_mappings_from_every_source(tmp_path):
    cfg = load_config("small", write(tmp_path, "model:\n  conv1_kernel: [7, 9]\ndata:\n  train_subsets: [dev-clean]\n"
                                               "  librispeech_md5: {dev-clean: ABC}\n"))
    assert cfg.model.conv1_kernel == (7, 9) and cfg.data.train_subsets == ["dev-clean"]
    assert cfg.data.librispeech_md5 == {"dev-clean": "ABC"}
    cfg = load_config("small", overrides=["model.conv1_kernel=[5,3]", "data.train_subsets=a,b",
                                          "data.librispeech_md5=dev-clean=abc,test-clean=def"])
    assert cfg.model.conv1_kernel == (5, 3) and cfg.data.train_subsets == ["a", "b"]
    assert cfg.data.librispeech_md5 == {"dev-clean": "abc", "test-clean": "def"}


@pytest.mark.parametrize("override, message", [
    ("train.epoch=2", "did you mean train.epochs"),
    ("trian.lr=1", "did you mean train.lr"),
    ("train.lr=fast", "train.lr: expected a number"),
    ("train.epochs=2.5", "train.epochs: expected an integer"),
    ("train.fit_memory=maybe", "train.fit_memory: expected true or false"),
    ("model.conv1_kernel=[1,2,3]", "expected 2 values"),
    ("train.epochs=0", "below the minimum 1"),
    ("train.lr=0", "must be greater than 0"),
    ("train.device=tpu", "not one of CPU, GPU"),
    ("data.source=youtube", "not one of synth, librispeech, manifest"),
    ("model.labels=ABC", "model.labels: labels must start with the CTC blank"),
    ("features.win_length=400", "longer than features.n_fft=320"),
    ("train.conv_time_window=64", "train.conv_time_window no longer exists; remove it \\(see train.conv_time_taps\\)"),
    ("train=1", "is a section"),
    ("train.lr", "not of the form section.key=value"),
    ("zzz=1", "known:"),
    ("augment.gain_db=6,-6", "augment.gain_db: \\(6, -6\\) is not \\(lowest, highest\\); swap them"),
    ("augment.snr_db=nan,10", "augment.snr_db: .* is not a finite number"),
    ("augment.noise_probability=inf", "above the maximum 1|not a finite number"),
    ("augment.noise_probability=nan", "augment.noise_probability: .* is not a finite number"),
    ("augment.speed_factors=0.9,3", "augment.speed_factors: 3 is outside \\[0.5, 2\\]"),
    ("augment.speed_factors=0.9,inf", "augment.speed_factors: .* is not a finite number"),
    ("augment.speed_factors=[]", "augment.speed_factors: give at least one factor"),
    ("augment.time_masks=-1", "augment.time_masks: -1 is below the minimum 0"),
    ("augment.snr_db=-20,10", "augment.snr_db: .* is below the minimum -10"),
])
def test_wrong_values_name_the_key_and_the_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("small", overrides=[override])


def test_choices_are_case_insensitive_and_normalised():
    assert load_config("small", overrides=["train.device=gpu"]).train.device == "GPU"
    assert load_config("small", overrides=["model.activation=HardTanh"]).model.activation == "hardtanh"


def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    """Nine aliases make 9^8 (43 million) list items; checking and quoting them took seconds and gigabytes."""
    items = ["&a [x, x, x, x, x, x, x, x, x]"] + [f"&{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefg", "bcdefgh")]
    with pytest.raises(DataError, match="holds more than 100000 values"):
        load_config("small", write(tmp_path, "model:\n  rnn_hidden: [" + ", ".join(items) + "]\n"))


def test_yaml_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key train.epoch; did you mean train.epochs"):
        load_config("small", write(tmp_path, "train:\n  epoch: 3\n"))
    with pytest.raises(DataError, match=r"c.yaml \(line 3\): not valid YAML: .*; edit the file"):
        load_config("small", write(tmp_path, "train:\n  lr: [1\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config("small", write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(DataError, match="none.yaml: does not exist; give the path"):
        load_config("small", str(tmp_path / "none.yaml"))
    with pytest.raises(ConfigError, match="did you mean seed"):
        load_config("sed")


def test_a_config_that_is_a_fifo_or_a_device_is_refused_without_reading_it(tmp_path):
    """Reading a FIFO waits for a writer forever; reading /dev/zero fills the memory."""
    import os

    os.mkfifo(tmp_path / "fifo.yaml")
    for path in (str(tmp_path / "fifo.yaml"), "/dev/zero"):
        with pytest.raises(DataError, match=r": not a regular file \(a FIFO or a device\?\); give the path of a YAML"):
            load_config("small", path)
    with pytest.raises(DataError, match=r"cannot read it \(Is a directory\)"):
        load_config("small", str(tmp_path))


def test_a_yaml_integer_too_large_for_a_float_setting_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"config key train.lr: a number too large for a float; give a finite number"):
        load_config("small", write(tmp_path, "train:\n  lr: 1" + "0" * 400 + "\n"))


def test_precedence_preset_then_file_then_overrides(tmp_path):
    cfg = load_config("seed", write(tmp_path, "train:\n  lr: 0.5\n  epochs: 3\n"), ["train.lr=0.25"])
    assert (cfg.train.lr, cfg.train.epochs, cfg.model.rnn_hidden) == (0.25, 3, 1024)


def test_stored_config_round_trips_and_takes_overrides():
    cfg = load_config("small", overrides=["train.epochs=9"])
    assert from_dict(to_dict(cfg)) == cfg
    resumed = with_overrides(to_dict(cfg), ["train.device=gpu", "data.test_manifest=/x.json"])
    assert resumed.train.epochs == 9 and resumed.train.device == "GPU" and resumed.data.test_manifest == "/x.json"
    with pytest.raises(ConfigError, match="did you mean"):
        with_overrides(to_dict(cfg), ["train.epoch=1"])


def test_stored_configs_with_a_retired_key_still_load():
    stored = to_dict(load_config("seed"))
    stored["train"]["conv_time_window"] = 64        # what checkpoints from before train.conv_time_taps hold
    assert from_dict(stored) == load_config("seed")
    assert with_overrides(stored, ["train.epochs=2"]).train.epochs == 2


def as_set_text(value) -> str:
    """How a user writes `value` after --set key=."""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def test_every_key_can_be_set_as_a_user_writes_its_value():
    cfg = load_config("seed", overrides=["data.librispeech_md5=dev-clean=abc"])
    for key in all_keys(cfg):
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        copy = load_config("small")
        apply_override(copy, f"{key}={as_set_text(value)}")
        copy_value = copy
        for part in key.split("."):
            copy_value = getattr(copy_value, part)
        assert copy_value == value, key


def test_unset_settings_are_typed_like_every_other():
    cfg = load_config("small", overrides=["decode.alpha=0.75", "decode.beta=-2"])
    assert (cfg.decode.alpha, cfg.decode.beta) == (0.75, -2.0)
    for unset in ("none", "null", ""):
        assert load_config("small", overrides=[f"decode.alpha={unset}"]).decode.alpha is None
    with pytest.raises(ConfigError, match="decode.alpha: expected a number or none"):
        load_config("small", overrides=["decode.alpha=heavy"])
    with pytest.raises(ConfigError, match="below the minimum 0"):
        load_config("small", overrides=["decode.alpha=-1"])
    assert from_dict(to_dict(cfg)) == cfg


def test_decoding_flags_are_shorthands_for_the_decode_settings():
    import argparse

    from ds2.config import add_decode_options, add_options, from_options

    parser = argparse.ArgumentParser()
    add_options(parser)
    add_decode_options(parser)
    args = parser.parse_args(["--set", "decode.beam=3", "--beam", "5", "--alpha", "0.5", "--no-lm"])
    assert args.overrides == ["decode.beam=3", "decode.beam=5", "decode.alpha=0.5", "decode.lm=none"]
    cfg = from_options(args)
    assert (cfg.decode.beam, cfg.decode.alpha, cfg.decode.lm) == (5, 0.5, "none")
    # The last one given wins, flag or --set.
    assert from_options(parser.parse_args(["--beam", "5", "--set", "decode.beam=3"])).decode.beam == 3
    assert from_options(parser.parse_args(["--lm", "x.arpa"])).decode.lm == "x.arpa"
    assert from_options(parser.parse_args([])).decode == load_config("small").decode


def test_lm_order_of_the_presets():
    assert load_config("small").lm.order == 1 and load_config("small").lm.official == ""
    assert load_config("seed").lm.official == "3-gram.pruned.1e-7.arpa.gz"


def test_augmentation_is_off_in_both_presets_unless_enabled():
    for preset in ("seed", "small"):
        assert not load_config(preset).augment.enabled
    assert load_config("seed", overrides=["augment.enabled=true"]).augment.enabled
