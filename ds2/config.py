"""Run configuration: plain dataclasses with defaults that run, presets, YAML files, overrides.

    cfg = load_config(preset="small", path=None, overrides=["train.lr=1e-3"])

Precedence: preset defaults < YAML file < command-line overrides. The resolved config is written
next to every run's outputs and stored in every checkpoint, so eval uses the features and labels
the model was trained with.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

# Index 0 is the CTC blank. The reference implementation puts blank last; ds2.reconcile maps orders.
DEFAULT_LABELS = "_'ABCDEFGHIJKLMNOPQRSTUVWXYZ "


@dataclass
class FeatureConfig:
    """log1p |STFT| spectrogram; stored with the checkpoint and reused unchanged at eval."""
    sample_rate: int = 16000
    n_fft: int = 320
    win_length: int = 320
    hop_length: int = 160
    window: str = "hann"          # 'hanning' is accepted with a warning and mapped to 'hann'
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
    source: str = "synth"
    data_dir: str = "runs/data"                 # corpus audio, manifests and feature cache
    librispeech_dir: str = ""                   # existing LibriSpeech root; downloads go here if empty
    train_subsets: List[str] = field(default_factory=lambda: ["train-clean-100"])
    dev_subsets: List[str] = field(default_factory=lambda: ["dev-clean"])
    test_subsets: List[str] = field(default_factory=lambda: ["test-clean"])
    train_manifest: str = ""                    # set by preprocess when empty
    dev_manifest: str = ""
    test_manifest: str = ""
    synth_train: int = 2000                     # utterances in the embedded default corpus
    synth_dev: int = 100
    synth_test: int = 100
    synth_seed: int = 1234
    max_duration: float = 35.0                  # seconds; longer utterances are reported and skipped


@dataclass
class ModelConfig:
    """DS2: 2 conv layers + BiLSTM stack + linear + CTC. Defaults are the report's model."""
    conv_channels: int = 32
    conv1_kernel: Tuple[int, int] = (41, 11)    # (frequency, time)
    conv1_stride: Tuple[int, int] = (2, 2)
    conv2_kernel: Tuple[int, int] = (21, 11)
    conv2_stride: Tuple[int, int] = (2, 1)
    activation: str = "tanh"                    # conv activation: tanh (reference) or hardtanh (0..20)
    rnn_hidden: int = 1024
    rnn_layers: int = 5
    rnn_merge: str = "sum"                      # BiLSTM directions: sum (reference) or concat
    rnn_batch_norm: bool = True                 # BatchNorm before BiLSTM layers 2..n
    labels: str = DEFAULT_LABELS


@dataclass
class TrainConfig:
    epochs: int = 70
    lr: float = 3e-4
    warmup_steps: int = 500
    lr_anneal: float = 1.1                      # lr divided by this after every epoch
    weight_decay: float = 1e-5
    grad_clip: float = 400.0                    # global-norm clip
    max_batch_seconds: float = 160.0            # audio seconds per batch (length-bucketed)
    max_batch_size: int = 32
    num_buckets: int = 16                       # padded widths (one graph compile per width; see batching)
    seed: int = 1
    checkpoint_every: int = 200                 # steps; a checkpoint is also written at each epoch end
    keep_last: int = 3
    eval_every_epochs: int = 1
    threads: int = 0                            # 0: use every core the container may use
    device: str = "CPU"                         # CPU or GPU
    fit_memory: bool = True                     # fewer buckets / shorter batches when they do not fit
    # Diagnostics written into every train record of the metrics log (off: they cost time and space).
    # A data-parallel job's workers must log equal digests and different utterances at every step.
    log_param_digest: bool = False              # SHA-256 of the trainable parameters after the step
    log_utterance_ids: bool = False             # the ids of the utterances in the step's batch


@dataclass
class Config:
    name: str = "default"
    run_dir: str = "runs/default"               # checkpoints, metrics, plots, eval results
    features: FeatureConfig = field(default_factory=FeatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def seed_preset() -> Config:
    """The report's experiment: 5 x BiLSTM 1024 on LibriSpeech."""
    cfg = Config(name="seed", run_dir="runs/seed")
    cfg.data.source = "librispeech"
    return cfg


def small_preset() -> Config:
    """The embedded default: a small model that learns the synthetic corpus in minutes on 2 cores.

    Measured on 2 shared cores (numbers in the README): preprocess + 4 epochs over 4000 synthetic
    utterances + test eval take about 8 minutes. More utterances beat more epochs here: at the same
    number of steps, 4000 x 4 epochs reached dev CER 0.056 where 2000 x 8 reached 0.082 (the
    model memorises 2000). Most of a step's time is the second convolution, hence 8 channels and a
    narrow time kernel there. A time stride of 4 (40 ms per output frame) halves the recurrent
    steps and learns faster than 2; espeak-ng's fastest speakers still leave every label sequence
    enough output frames.
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
    cfg.train.checkpoint_every = 100
    return cfg


PRESETS = {"seed": seed_preset, "small": small_preset}


def _coerce(value: str, current: Any) -> Any:
    """Parse an override string to the type of the field it replaces."""
    if isinstance(current, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, (list, tuple)):
        parsed = json.loads(value) if value.startswith("[") else [v for v in value.split(",") if v]
        return type(current)(_coerce(str(v), current[0]) if current else v for v in parsed)
    return value


def _apply(obj: Any, values: Dict[str, Any], where: str) -> None:
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"unknown config key {where}{key!r}; known: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"config key {where}{key} is a section; give it a mapping")
            _apply(current, value, f"{where}{key}.")
        elif isinstance(current, tuple) and isinstance(value, list):
            setattr(obj, key, tuple(value))
        else:
            setattr(obj, key, value)


def apply_override(cfg: Config, override: str) -> None:
    """Apply one 'section.key=value' override, e.g. 'train.lr=1e-3'."""
    if "=" not in override:
        raise ValueError(f"override {override!r} is not of the form section.key=value")
    dotted, value = override.split("=", 1)
    *path, key = dotted.strip().split(".")
    target: Any = cfg
    for part in path:
        if not hasattr(target, part) or not dataclasses.is_dataclass(getattr(target, part)):
            raise ValueError(f"unknown config section {part!r} in override {override!r}")
        target = getattr(target, part)
    if not dataclasses.is_dataclass(target) or key not in {f.name for f in dataclasses.fields(target)}:
        raise ValueError(f"unknown config key {dotted!r} in override {override!r}")
    setattr(target, key, _coerce(value, getattr(target, key)))


def load_config(preset: str = "small", path: Optional[str] = None,
                overrides: Optional[List[str]] = None) -> Config:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = PRESETS[preset]()
    if path:
        import yaml  # only needed for config files
        text = Path(path).read_text()
        values = yaml.safe_load(text) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        _apply(cfg, values, "")
    for override in overrides or []:
        apply_override(cfg, override)
    return cfg


def to_dict(cfg: Config) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(values: Dict[str, Any]) -> Config:
    """Rebuild a Config from to_dict() output (e.g. stored in a checkpoint)."""
    cfg = Config()
    _apply(cfg, values, "")
    return cfg


def save_config(cfg: Config, path: Path) -> None:
    import yaml
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(json.loads(json.dumps(to_dict(cfg))), sort_keys=False))
