"""Run configuration: typed dataclasses with defaults that run, presets, YAML files, overrides.

    cfg = load_config(preset="small", path=None, overrides=["train.lr=1e-3"])

Precedence: preset defaults < YAML file < command-line overrides (`--set section.key=value`). Every
value, whatever its source (YAML, --set, a config stored in a checkpoint), goes through the same
typing (`_coerce`: '1e-3' is a float wherever it comes from) and the same checks (`validate`: the
limits and choices declared on each field below). A wrong key or value is a ConfigError that names
the key, what it expected and, for a misspelt key, the key that was probably meant.

The resolved config is written next to every run's outputs and stored in every checkpoint, so eval
uses the features and labels the model was trained with. This module needs only the standard
library (PyYAML for config files), so envcheck can read configurations in a broken environment.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import stat
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ds2 import kernels
from ds2.errors import DataError, UserError

DEFAULT_PRESET = "small"
# Index 0 is the CTC blank. The reference implementation puts blank last; ds2.checkpoint.reconcile maps orders.
DEFAULT_LABELS = "_'ABCDEFGHIJKLMNOPQRSTUVWXYZ "
OPENSLR_URL = "https://www.openslr.org/resources/12"
DEVICES = ("CPU", "GPU")
# LibriSpeech's official LM that `ds2 lm` downloads for the seed preset (OpenSLR resource 11).
DEFAULT_OFFICIAL_LM = "3-gram.pruned.1e-7.arpa.gz"
# decode.lm values that are not files.
TUNED_LM, BUILT_LM, NO_LM = "tuned", "built", "none"
# decode.decoder's values: auto, or a decoder of the registry in ds2.decoders (which builds them; this
# module lists the names so that it needs nothing beyond the standard library).
AUTO_DECODER = "auto"
DECODER_NAMES = ("greedy", "prefix", "lm")


class ConfigError(UserError, ValueError):
    """A config key or value that cannot be used."""


class ConfigFileError(DataError, ConfigError):
    """A YAML config file that cannot be read, or holds a value its key does not take: the file, the line
    when the YAML parser knows it, and what is wrong."""


# What to do about a config file that cannot be used.
CONFIG_FILE_FIX = "edit the file (docs/configuration.md lists every key), or leave --config out"



def setting(default=None, *, factory=None, choices: Sequence[str] = (), minimum=None, above=None, maximum=None):
    """A config field: its default and the values it accepts (checked by `validate`).

    minimum and maximum are inclusive, above exclusive; choices match case-insensitively and are stored as
    written here.
    """
    metadata = {"choices": tuple(choices), "minimum": minimum, "above": above, "maximum": maximum}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class FeatureConfig:
    """log1p |STFT| spectrogram; stored with the checkpoint and reused unchanged at eval."""
    sample_rate: int = setting(16000, minimum=1)
    n_fft: int = setting(320, minimum=2)
    win_length: int = setting(320, minimum=1)
    hop_length: int = setting(160, minimum=1)
    window: str = "hann"          # any SciPy window name; 'hanning' is mapped to 'hann' with a warning
    normalize: bool = True        # per-utterance mean/std

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1


@dataclass
class DataConfig:
    """Where the audio comes from and where manifests go.

    source: 'synth' (embedded default: espeak-ng corpus generated offline), 'librispeech'
    (download or use an extracted copy under librispeech_dir), or 'manifest' (use the
    train/dev/test manifests as given).
    """
    source: str = setting("synth", choices=("synth", "librispeech", "manifest"))
    data_dir: str = "runs/data"                 # corpus audio, manifests and feature cache
    librispeech_dir: str = ""                   # existing LibriSpeech root; downloads go here if empty
    librispeech_url: str = OPENSLR_URL          # mirror holding <subset>.tar.gz
    librispeech_md5: Dict[str, str] = setting(factory=dict)   # {subset: md5} over the built-in table
    train_subsets: List[str] = setting(factory=lambda: ["train-clean-100"])
    dev_subsets: List[str] = setting(factory=lambda: ["dev-clean"])
    test_subsets: List[str] = setting(factory=lambda: ["test-clean"])
    train_manifest: str = ""                    # set by preprocess when empty
    dev_manifest: str = ""
    test_manifest: str = ""
    synth_train: int = setting(2000, minimum=1)  # utterances in the embedded default corpus
    synth_dev: int = setting(100, minimum=1)
    synth_test: int = setting(100, minimum=1)
    synth_seed: int = 1234
    max_duration: float = setting(35.0, above=0)  # seconds; longer utterances are reported and skipped


@dataclass
class ModelConfig:
    """DS2: 2 conv layers + BiLSTM stack + linear + CTC. Defaults are the report's model."""
    conv_channels: int = setting(32, minimum=1)
    conv1_kernel: Tuple[int, int] = setting((41, 11), minimum=1)   # (frequency, time)
    conv1_stride: Tuple[int, int] = setting((2, 2), minimum=1)
    conv2_kernel: Tuple[int, int] = setting((21, 11), minimum=1)
    conv2_stride: Tuple[int, int] = setting((2, 1), minimum=1)
    activation: str = setting("tanh", choices=("tanh", "hardtanh"))  # tanh (reference) or hardtanh (0..20)
    rnn_hidden: int = setting(1024, minimum=1)
    rnn_layers: int = setting(5, minimum=1)
    rnn_merge: str = setting("sum", choices=("sum", "concat"))     # how the BiLSTM directions merge
    rnn_batch_norm: bool = True                 # BatchNorm before BiLSTM layers 2..n
    labels: str = DEFAULT_LABELS


@dataclass
class TrainConfig:
    epochs: int = setting(70, minimum=1)
    lr: float = setting(3e-4, above=0)
    warmup_steps: int = setting(500, minimum=0)
    lr_anneal: float = setting(1.1, above=0)    # lr divided by this after every epoch
    weight_decay: float = setting(1e-5, minimum=0)
    grad_clip: float = setting(400.0, above=0)  # global-norm clip
    max_batch_seconds: float = setting(160.0, above=0)  # audio seconds per batch (length-bucketed)
    max_batch_size: int = setting(32, minimum=1)
    num_buckets: int = setting(16, minimum=1)   # padded widths (see ds2.batching)
    # static: one compiled graph per batch shape (memory grows with the shapes); dynamic: one graph
    # for every shape (MindSpore dynamic shape). docs/performance.md compares them.
    shapes: str = setting("dynamic", choices=("static", "dynamic"))
    # Recompute each BiLSTM layer's forward pass during the backward pass instead of keeping its
    # activations: less memory, more time (docs/performance.md has both figures).
    recompute_rnn: bool = False
    # CPU: convolutions with time stride 1 (the seed's second) run as a convolution with a time kernel
    # of 1 and one output channel per time tap, then the taps shifted and summed: the same result,
    # faster and with a fraction of oneDNN's scratch memory (ds2.model.ConvBlock.tap_conv).
    conv_time_taps: bool = True
    # ds2's own operators (ds2.native_ops) or MindSpore's kernels (builtin); auto: ds2's operator on CPU
    # where the image's library is (ds2.kernels), builtin elsewhere. Same values and gradients.
    # The BiLSTM directions on a oneDNN LSTM operator that keeps its primitives and buffers from step to
    # step (MindSpore's kernel makes them again every step).
    lstm_kernel: str = setting("auto", choices=kernels.choices("train.lstm_kernel"))
    # The convolutions on oneDNN's own layouts (MindSpore's Conv2D convolves plain NCHW through im2col);
    # those train.conv_time_taps computes stay on the taps.
    conv_kernel: str = setting("auto", choices=kernels.choices("train.conv_kernel"))
    # The CTC loss and its gradient in one pass.
    ctc_kernel: str = setting("auto", choices=kernels.choices("train.ctc_kernel"))
    # BatchNorm in training (evaluation runs MindSpore's with the moving statistics either way).
    batch_norm_kernel: str = setting("auto", choices=kernels.choices("train.batch_norm_kernel"))
    # Zeroing the padded time steps after each block: a copy instead of a broadcast mask and a product.
    mask_kernel: str = setting("auto", choices=kernels.choices("train.mask_kernel"))
    # CPU: give MindSpore's memory pool one block the size of the usable memory (virtual until
    # touched) instead of 1 GiB blocks that fragment, and have glibc return freed large buffers
    # (oneDNN's per-kernel weight copies, re-made every step) to the system at once.
    compact_host_memory: bool = True
    seed: int = 1
    checkpoint_every: int = setting(200, minimum=1)  # steps; a checkpoint is also written at each epoch end
    keep_last: int = setting(3, minimum=1)
    eval_every_epochs: int = setting(1, minimum=1)
    threads: int = setting(0, minimum=0)        # 0: use every core the container may use
    device: str = setting("CPU", choices=DEVICES)
    fit_memory: bool = True                     # fewer buckets / shorter batches when they do not fit
    # Diagnostics written into every train record of the metrics log (off: they cost time and space).
    # A data-parallel job's workers must log equal digests and different utterances at every step.
    log_param_digest: bool = False              # SHA-256 of the trainable parameters after the step
    log_utterance_ids: bool = False             # the ids of the utterances in the step's batch


@dataclass
class AugmentConfig:
    """Training-data augmentation (ds2.augment), on the fly in the training loader; dev and test never.

    Off unless enabled. Each utterance of each epoch gets: a speed factor drawn from speed_factors (by
    resampling), with probability noise_probability a noise mixed in at an SNR drawn from snr_db, a gain
    drawn from gain_db, then freq_masks and time_masks SpecAugment masks of up to *_mask_width bins /
    frames. Noise files come from noise_dir, or when it is empty from the set `ds2 preprocess` makes
    (coloured noise and babble of training utterances, <data_dir>/noise). Draws depend on train.seed,
    the epoch and the utterance alone, so a resumed run sees the same batches.

    Enabled, the defaults add noise alone: on the small preset's 4 epochs that left greedy test WER about
    where it was (26.76 against 27.12 %) and halved test-noisy's (66.91 against 130.56 %); speed 0.9-1.1,
    +-6 dB gain and 2 + 2 masks on top measured worse on both (36.17 and 73.96 %; docs/results.md,
    Augmentation). Longer training may want them.
    """
    enabled: bool = False
    freq_masks: int = setting(0, minimum=0, maximum=10)
    freq_mask_width: int = setting(15, minimum=0)          # frequency bins
    time_masks: int = setting(0, minimum=0, maximum=10)
    time_mask_width: int = setting(10, minimum=0)          # feature frames (10 ms each by default)
    speed_factors: List[float] = setting(factory=lambda: [1.0])  # each in [0.5, 2]; 1.0: unchanged
    gain_db: Tuple[float, float] = setting((0.0, 0.0), minimum=-40.0, maximum=40.0)  # (lowest, highest)
    noise_probability: float = setting(0.5, minimum=0, maximum=1)
    snr_db: Tuple[float, float] = setting((0.0, 20.0), minimum=-10.0, maximum=60.0)   # (lowest, highest)
    noise_dir: str = ""                                     # folder of .wav / .flac noises; empty: the made set


@dataclass
class LmConfig:
    """`ds2 lm`: the word n-gram language model for beam search, written to <data_dir>/lm/.

    Built from the training transcripts (never dev or test) with modified Kneser-Ney, or, when
    `official` names one, LibriSpeech's official model downloaded from OpenSLR resource 11.
    """
    order: int = setting(3, minimum=1)          # n-gram order of the model built from transcripts
    official: str = ""                          # e.g. 3-gram.pruned.1e-7.arpa.gz: download it instead
    url: str = ""                               # mirror of resource 11; empty: data.librispeech_url's, 12 -> 11
    md5: str = ""                               # the official file's MD5, over ds2.lm.OFFICIAL_LM_MD5's


@dataclass
class DecodeConfig:
    """How `ds2 eval` and `ds2 transcribe` read transcripts from the model's outputs.

    These come from the command's own config (preset, --config, --set; --beam, --lm, --no-lm,
    --alpha, --beta are shorthands for them), not from the checkpoint's: decoding is not part of
    the trained model.
    """
    # greedy, prefix (beam search over letters, no LM) or lm (LM beam search), see ds2.decoders; auto: lm
    # when an LM is in use, else prefix when beam > 0, else greedy
    decoder: str = setting(AUTO_DECODER, choices=(AUTO_DECODER,) + DECODER_NAMES)
    beam: int = setting(0, minimum=0)           # beams; 0: prefix 32, lm the tuned (or 64); auto without an LM: greedy
    lm: str = TUNED_LM                          # ARPA file; tuned: the LM ds2 tune-lm stored beside the
                                                # checkpoint (none if it did not); built: the LM ds2 lm
                                                # writes for this config; none: no LM
    alpha: Optional[float] = setting(None, minimum=0)   # LM weight; unset: the tuned one (else 0.5)
    beta: Optional[float] = None                # word bonus; unset: the tuned one (else 1.0)


@dataclass
class ServeConfig:
    """`ds2 serve`: where it listens, how it batches requests, and what uploads it accepts.

    Requests waiting together are run as one batch of similar lengths (ds2.serving.batcher): the first
    waits up to max_wait_ms for others to join it.
    """
    host: str = "127.0.0.1"                     # 0.0.0.0 to listen on every interface (the image does)
    port: int = setting(8000, minimum=1, maximum=65535)
    model_name: str = ""                        # the model id clients name; empty: ds2-<config name>
    max_batch_size: int = setting(16, minimum=1)
    max_batch_seconds: float = setting(320.0, above=0)  # padded audio seconds in one batch
    max_wait_ms: float = setting(10.0, minimum=0)
    max_queue: int = setting(64, minimum=1)     # requests waiting; more are answered 503 with Retry-After
    max_upload_mb: float = setting(25.0, above=0)       # larger uploads: 413 (OpenAI's limit is 25 MB)
    max_audio_seconds: float = setting(300.0, above=0)  # longer audio: 413
    drain_seconds: float = setting(30.0, minimum=0)     # on SIGTERM, how long requests in flight may finish


@dataclass
class Config:
    name: str = "default"
    run_dir: str = "runs/default"               # checkpoints, metrics, plots, eval results
    features: FeatureConfig = setting(factory=FeatureConfig)
    data: DataConfig = setting(factory=DataConfig)
    model: ModelConfig = setting(factory=ModelConfig)
    train: TrainConfig = setting(factory=TrainConfig)
    augment: AugmentConfig = setting(factory=AugmentConfig)
    lm: LmConfig = setting(factory=LmConfig)
    decode: DecodeConfig = setting(factory=DecodeConfig)
    serve: ServeConfig = setting(factory=ServeConfig)


def seed_preset() -> Config:
    """The report's experiment: 5 x BiLSTM 1024 on LibriSpeech."""
    cfg = Config(name="seed", run_dir="runs/seed")
    cfg.data.source = "librispeech"
    cfg.lm.official = DEFAULT_OFFICIAL_LM
    return cfg


def small_preset() -> Config:
    """The embedded default: a small model that learns the synthetic corpus in minutes on 2 cores.

    More utterances beat more epochs here: at the same number of steps, 4000 utterances x 4 epochs
    learn better than 2000 x 8 (the model memorises 2000). Most of a step's time is the second
    convolution, hence 8 channels and a narrow time kernel there. A time stride of 4 (40 ms per
    output frame) halves the recurrent steps and learns faster than 2; espeak-ng's fastest speakers
    still leave every label sequence enough output frames.

    The corpus's sentences are words drawn independently of each other, so the best n-gram model
    of them is a unigram model (docs/language-model.md: higher orders measured
    worse on dev).
    """
    cfg = Config(name="small", run_dir="runs/small")
    cfg.data.synth_train = 4000
    cfg.model.conv_channels = 8
    cfg.model.conv1_kernel = (11, 11)
    cfg.model.conv2_kernel = (11, 5)
    cfg.model.conv2_stride = (2, 2)
    cfg.model.rnn_hidden = 192
    cfg.model.rnn_layers = 2
    cfg.train.epochs = 4
    cfg.train.lr = 2e-3
    cfg.train.warmup_steps = 50
    cfg.train.grad_clip = 5.0
    cfg.train.max_batch_seconds = 64.0
    cfg.train.shapes = "static"   # its steps are short: a graph per shape runs them faster
    # At 192 units ds2's oneDNN LSTM operator measured no faster than MindSpore's kernel (1.14x and
    # 0.88x its speed in two runs, docs/speed-levers.md), and its memory does not matter at this size.
    cfg.train.lstm_kernel = "builtin"
    cfg.train.checkpoint_every = 100
    cfg.lm.order = 1
    return cfg


PRESETS = {"seed": seed_preset, "small": small_preset}


# ---------------------------------------------------------------------------------------------
# Typing and checking values


def all_keys(cfg: Any = None, prefix: str = "") -> List[str]:
    """Every dotted key of the config, e.g. ['name', 'run_dir', 'features.sample_rate', ...]."""
    cfg = Config() if cfg is None else cfg
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += all_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _unknown_key(dotted: str) -> ConfigError:
    close = difflib.get_close_matches(dotted, all_keys(), n=1, cutoff=0.6)
    if close:
        return ConfigError(f"unknown config key {dotted}; did you mean {close[0]}?")
    section = dotted.split(".")[0] + "."
    siblings = [key for key in all_keys() if key.startswith(section)]
    known = siblings or sorted({key.split(".")[0] for key in all_keys()})
    return ConfigError(f"unknown config key {dotted}; known: {', '.join(known)}")


def _type_name(kind) -> str:
    origin = typing.get_origin(kind)
    if origin is typing.Union:
        return f"{_type_name(_optional_inner(kind))} or none"
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, str(kind))


def _optional_inner(kind):
    """X of Optional[X]."""
    return next(arg for arg in typing.get_args(kind) if arg is not type(None))


def _coerce(value: Any, kind, key: str) -> Any:
    """`value` (a --set string, or a YAML / JSON value) as the field's declared type `kind`."""
    wrong = ConfigError(f"config key {key}: expected {_type_name(kind)}, got {value!r}")
    origin = typing.get_origin(kind)
    if origin is typing.Union:   # Optional[X]: unset (None, written none, null or nothing), or an X
        if value is None or str(value).strip().lower() in ("", "none", "null"):
            return None
        try:
            return _coerce(value, _optional_inner(kind), key)
        except ConfigError:
            raise wrong from None
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise wrong
    if kind is int:
        if isinstance(value, bool):
            raise wrong
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise wrong from None
    if kind is float:
        if isinstance(value, bool):
            raise wrong
        if isinstance(value, (int, float)):
            try:
                return float(value)
            except OverflowError:   # a YAML integer of hundreds of digits
                raise ConfigError(f"config key {key}: a number too large for a float; give a finite number") from None
        try:
            return float(str(value).strip())
        except ValueError:
            raise wrong from None
    if kind is str:
        if isinstance(value, (dict, list, tuple)):
            raise wrong
        return str(value)
    if origin in (list, tuple):
        if isinstance(value, str):
            text = value.strip()
            try:
                value = json.loads(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
            except ValueError:
                raise wrong from None
        if not isinstance(value, (list, tuple)):
            raise wrong
        args = typing.get_args(kind)
        if origin is tuple:
            if len(value) != len(args):
                raise ConfigError(f"config key {key}: expected {len(args)} values, got {list(value)!r}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        return [_coerce(v, args[0], key) for v in value]
    if origin is dict:
        if isinstance(value, str):
            text = value.strip()
            try:
                value = json.loads(text) if text.startswith("{") else \
                    dict(item.split("=", 1) for item in text.split(",") if item.strip())
            except ValueError:
                raise ConfigError(f"config key {key}: expected a mapping, as NAME=VALUE,NAME=VALUE or JSON, "
                                  f"got {value!r}") from None
        if not isinstance(value, dict):
            raise wrong
        key_type, value_type = typing.get_args(kind)
        return {_coerce(k, key_type, key).strip(): _coerce(v, value_type, key).strip() for k, v in value.items()}
    raise wrong


def _check_field(value: Any, f: dataclasses.Field, key: str) -> Any:
    """`value` checked against the field's declared limits and choices (a choice in its own spelling)."""
    meta = f.metadata
    if value is None:   # an Optional setting left unset
        return value
    if meta.get("choices"):
        for choice in meta["choices"]:
            if str(value).lower() == choice.lower():
                return choice
        raise ConfigError(f"config key {key}: {value!r} is not one of {', '.join(meta['choices'])}")
    numbers = value if isinstance(value, (tuple, list)) else (value,)
    for number in numbers:
        if isinstance(number, float) and not math.isfinite(number):
            raise ConfigError(f"config key {key}: {value!r} is not a finite number; give a number (nan and inf "
                              f"would switch checks off or reach the weights)")
        if meta.get("minimum") is not None and number < meta["minimum"]:
            raise ConfigError(f"config key {key}: {value!r} is below the minimum {meta['minimum']}")
        if meta.get("above") is not None and number <= meta["above"]:
            raise ConfigError(f"config key {key}: {value!r} must be greater than {meta['above']}")
        if meta.get("maximum") is not None and number > meta["maximum"]:
            raise ConfigError(f"config key {key}: {value!r} is above the maximum {meta['maximum']}")
    return value


def _check_section(section: Any, prefix: str) -> None:
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            _check_section(value, f"{prefix}{f.name}.")
        else:
            setattr(section, f.name, _check_field(value, f, prefix + f.name))


def validate(cfg: Config) -> Config:
    """Check every value and the rules that tie values together; returns cfg (choices normalised)."""
    from ds2.text import check_labels

    _check_section(cfg, "")
    if cfg.features.win_length > cfg.features.n_fft:
        raise ConfigError(f"config key features.win_length: {cfg.features.win_length} is longer than "
                          f"features.n_fft={cfg.features.n_fft}; make it at most n_fft")
    try:
        check_labels(cfg.model.labels)
    except ValueError as exc:
        raise ConfigError(f"config key model.labels: {exc}") from None
    check_augment(cfg.augment)
    return cfg


SPEED_FACTOR_RANGE = (0.5, 2.0)


def check_augment(augment: AugmentConfig) -> None:
    """The augment section's rules that single-field limits cannot say: finite numbers, ordered ranges,
    speed factors in SPEED_FACTOR_RANGE."""
    import math

    numbers = {"augment.gain_db": augment.gain_db, "augment.snr_db": augment.snr_db,
               "augment.noise_probability": (augment.noise_probability,), "augment.speed_factors": augment.speed_factors}
    for key, values in numbers.items():
        if not all(math.isfinite(value) for value in values):
            raise ConfigError(f"config key {key}: {values!r} is not a finite number")
    for key, (lowest, highest) in (("augment.gain_db", augment.gain_db), ("augment.snr_db", augment.snr_db)):
        if lowest > highest:
            raise ConfigError(f"config key {key}: ({lowest:g}, {highest:g}) is not (lowest, highest); swap them")
    if not augment.speed_factors:
        raise ConfigError("config key augment.speed_factors: give at least one factor (1.0: no speed change)")
    low, high = SPEED_FACTOR_RANGE
    for factor in augment.speed_factors:
        if not low <= factor <= high:
            raise ConfigError(f"config key augment.speed_factors: {factor:g} is outside [{low:g}, {high:g}]")


# Keys that earlier versions had, and what replaced them. Stored configs (checkpoints, a run's
# config.yaml) that hold them still load, without them; a user who sets one is told what to use.
RETIRED_KEYS = {"train.conv_time_window": "train.conv_time_taps"}


def _set(cfg: Config, dotted: str, value: Any) -> None:
    """Set the value at 'section.key' (or a top-level 'key'), typed as the field declares."""
    key = dotted.strip()
    if key in RETIRED_KEYS:
        raise ConfigError(f"config key {key} no longer exists; remove it (see {RETIRED_KEYS[key]})")
    target: Any = cfg
    *path, name = key.split(".")
    for part in path:
        if not dataclasses.is_dataclass(target) or part not in {f.name for f in dataclasses.fields(target)} \
                or not dataclasses.is_dataclass(getattr(target, part)):
            raise _unknown_key(dotted)
        target = getattr(target, part)
    fields = {f.name: f for f in dataclasses.fields(target)}
    if name not in fields:
        raise _unknown_key(dotted)
    if dataclasses.is_dataclass(getattr(target, name)):
        raise ConfigError(f"config key {dotted} is a section; set one of its keys, e.g. {all_keys(getattr(target, name), dotted + '.')[0]}")
    kind = typing.get_type_hints(type(target))[name]
    setattr(target, name, _coerce(value, kind, dotted))


def _apply_mapping(cfg: Config, values: Dict[str, Any], prefix: str = "", stored: bool = False) -> None:
    """Apply a nested mapping (a YAML file, or a stored config: stored=True skips RETIRED_KEYS) key by key."""
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and not _is_mapping_field(dotted):
            _apply_mapping(cfg, value, dotted + ".", stored)
        elif stored and dotted in RETIRED_KEYS:
            continue
        else:
            _set(cfg, dotted, value)


def _is_mapping_field(dotted: str) -> bool:
    """True for keys whose value is itself a mapping (data.librispeech_md5), not a section."""
    target: Any = Config
    *path, name = dotted.split(".")
    for part in path:
        hints = typing.get_type_hints(target)
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            return False
        target = hints[part]
    kind = typing.get_type_hints(target).get(name)
    return kind is not None and typing.get_origin(kind) is dict


def apply_override(cfg: Config, override: str) -> None:
    """Apply one 'section.key=value' override, e.g. 'train.lr=1e-3' (checked by validate later)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form section.key=value")
    dotted, value = override.split("=", 1)
    _set(cfg, dotted, value)


def load_config(preset: str = DEFAULT_PRESET, path: Optional[str] = None,
                overrides: Optional[Sequence[str]] = None) -> Config:
    """The preset, updated by the YAML file at `path` and then by the overrides; validated."""
    if preset not in PRESETS:
        close = difflib.get_close_matches(preset, list(PRESETS), n=1)
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"
                          + (f" (did you mean {close[0]}?)" if close else ""))
    cfg = PRESETS[preset]()
    if path:
        try:
            _apply_mapping(cfg, read_yaml(path))
            validate(cfg)
        except ConfigFileError:
            raise
        except ConfigError as exc:
            raise ConfigFileError(path, str(exc), CONFIG_FILE_FIX) from None
    for override in overrides or []:
        apply_override(cfg, override)
    return validate(cfg)


# A config file sets tens of values; YAML's aliases can make a few lines hold billions, which would take
# minutes and gigabytes to check and to quote in an error.
MAX_CONFIG_VALUES = 100_000


def _more_values_than(value: Any, limit: int) -> bool:
    """True when value holds more than `limit` values, counting every list item and mapping entry (an alias
    counts each time it is used); stops counting at the limit."""
    pending, seen = [value], 0
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            pending.extend(item)
        else:
            continue
        seen += len(item)
        if seen > limit:
            return True
    return False


def read_yaml(path: str) -> Dict[str, Any]:
    """The top-level mapping of a YAML config file; ConfigFileError when it is not one."""
    import yaml  # only needed for config files

    try:
        mode = os.stat(path).st_mode   # a directory is the OS's "Is a directory" below
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # reading a FIFO waits forever, /dev/zero fills the memory
            raise ConfigFileError(path, "not a regular file (a FIFO or a device?)", "give the path of a YAML file")
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigFileError(path, "does not exist", "give the path of an existing YAML file") from None
    except OSError as exc:
        raise ConfigFileError(path, f"cannot read it ({exc.strerror or exc})", "check its permissions") from None
    except UnicodeDecodeError as exc:
        raise ConfigFileError(path, "not UTF-8 text", CONFIG_FILE_FIX, place=f"byte {exc.start}") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        raise ConfigFileError(path, f"not valid YAML: {getattr(exc, 'problem', None) or exc}", CONFIG_FILE_FIX,
                              place=f"line {where.line + 1}" if where is not None else None) from None
    except (ValueError, OverflowError, RecursionError) as exc:   # e.g. a date that does not exist: 2024-02-30
        raise ConfigFileError(path, f"a value YAML cannot build ({exc})", CONFIG_FILE_FIX) from None
    if values is None:
        return {}
    if _more_values_than(values, MAX_CONFIG_VALUES):
        raise ConfigFileError(path, f"holds more than {MAX_CONFIG_VALUES} values (YAML aliases repeating lists?)",
                              CONFIG_FILE_FIX)
    if not isinstance(values, dict) or not all(isinstance(key, str) for key in values):
        raise ConfigFileError(path, "expected a mapping of sections at the top level", CONFIG_FILE_FIX)
    return values


def to_dict(cfg: Config) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(values: Dict[str, Any]) -> Config:
    """Rebuild a Config from to_dict() output (e.g. stored in a checkpoint)."""
    cfg = Config()
    _apply_mapping(cfg, values, stored=True)
    return validate(cfg)


def with_overrides(stored: Dict[str, Any], overrides: Sequence[str]) -> Config:
    """A run's stored config (config.yaml, or a checkpoint's) with this command's --set overrides.

    What `ds2 train --resume`, `ds2 eval` and envcheck's checkpoint probe build the model from: the
    run's own settings, plus what the user asked to change now (another manifest, another device).
    """
    cfg = Config()
    _apply_mapping(cfg, stored, stored=True)
    for override in overrides:
        apply_override(cfg, override)
    return validate(cfg)


def save_config(cfg: Config, path: Path) -> None:
    import yaml

    from ds2 import files

    files.write_text(path, yaml.safe_dump(json.loads(json.dumps(to_dict(cfg))), sort_keys=False))


# ---------------------------------------------------------------------------------------------
# Command-line options, shared by `python -m ds2` and `python -m envcheck`


def add_options(parser) -> None:
    """--preset, --config and --set, as every ds2 command and envcheck take them."""
    parser.add_argument("--preset", default=DEFAULT_PRESET,
                        help=f"config preset: {' or '.join(PRESETS)} (default {DEFAULT_PRESET})")
    parser.add_argument("--config", metavar="FILE", help="YAML file overriding the preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set train.lr=1e-3 (repeatable)")


class _Shorthand(argparse.Action):
    """--flag VALUE stands for --set KEY=VALUE: appended to the same list as --set, so both take the
    same typing and checks, the last one given wins, and a command sees only the config."""

    def __init__(self, option_strings, dest, key: str, **kwargs):
        self.key = key
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        overrides = list(getattr(namespace, "overrides", None) or [])
        overrides.append(f"{self.key}={self.const if values is None or values == [] else values}")
        setattr(namespace, "overrides", overrides)


def add_shorthand(parser, flag: str, key: str, help: str, **kwargs) -> None:
    """Declare `flag` as a shorthand for --set key=VALUE (kwargs: type, metavar, nargs, const)."""
    parser.add_argument(flag, action=_Shorthand, key=key, dest="overrides", default=argparse.SUPPRESS,
                        help=f"{help} (--set {key}=...)", **kwargs)


def add_decode_options(parser) -> None:
    """The decode section's shorthands, as `ds2 eval`, `ds2 transcribe` and `ds2 serve` take them."""
    add_shorthand(parser, "--decoder", "decode.decoder", f"{', '.join(DECODER_NAMES)}, or {AUTO_DECODER} (the "
                  "default): lm when an LM is in use, else prefix with --beam N, else greedy", metavar="NAME")
    add_shorthand(parser, "--beam", "decode.beam", "beams: prefix beam search without an LM, or the LM beam search's "
                  "width (default 0: greedy without an LM, the tuned width or 64 with one)", type=count, metavar="N")
    add_shorthand(parser, "--lm", "decode.lm", f"decode with this ARPA language model, or '{BUILT_LM}': the one ds2 lm "
                  f"writes (default: the one ds2 tune-lm stored beside the checkpoint, if any)", metavar="FILE")
    add_shorthand(parser, "--no-lm", "decode.lm", "decode without a language model, even a tuned one", nargs=0,
                  const=NO_LM)
    add_shorthand(parser, "--alpha", "decode.alpha", "LM weight (default: the tuned one, else 0.5)", type=float,
                  metavar="A")
    add_shorthand(parser, "--beta", "decode.beta", "word bonus (default: the tuned one, else 1.0)", type=float,
                  metavar="B")


def count(text: str) -> int:
    """argparse type for options that count something: 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def from_options(args) -> Config:
    """The config named by the options add_options() declared."""
    return load_config(args.preset, args.config, args.overrides)
