"""`ds2 convert SOURCE`: a ds2 checkpoint from another code base's DeepSpeech2 checkpoint.

    ds2 convert --preset seed --set model.rnn_batch_norm=false zoo_deepspeech2.ckpt
    ds2 convert --preset seed --set model.activation=hardtanh --set features.window=hamming \\
        librispeech_pretrained_v2.pth

Sources, told apart by content (a .ckpt may be either):
- MindSpore .ckpt: ds2's own from any MindSpore version, or the MindSpore model zoo's DeepSpeech2
  (ds2.reconcile.REFERENCE_ZOO: names mapped, flat LSTM weights split, no conv bias and no
  BatchNorm before the output layer filled with neutral values, output rows reordered from the
  zoo's labels, blank last, to the config's);
- deepspeech.pytorch (.pth, or a Lightning .ckpt): a torch pickle, read with a restricted
  unpickler because unpickling can run any code. Only tensors, OrderedDict and plain Python
  values are allowed; anything else is refused, naming the class. Its LSTM tensors are already
  in ds2's layout: PyTorch and MindSpore's LSTM kernels both order the gates (input, forget,
  cell, output), weight_ih [4H, in], weight_hh [4H, H], and ds2 keeps the two biases apart.

The model is the configured one (preset, --config, --set). The source's architecture, read from
its tensor shapes plus what its code fixes (activation, strides, how directions merge), is
compared with it first; every difference is listed with the --set that fixes it, and what ds2
cannot represent at all is named. Then ds2.reconcile maps the tensors and prints its table.

Output: a ds2 checkpoint at step 0 with a fresh optimizer state (converted weights restart the
optimizer), by default <run_dir>/checkpoints/step-0000000.ckpt, so `ds2 eval --checkpoint last`
and `ds2 train --resume` (fine-tuning) take it as it is.
"""
from __future__ import annotations

import pickle
import re
import sys
import types
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

from ds2 import checkpoint
from ds2.config import Config, to_dict


def add_arguments(parser) -> None:
    parser.add_argument("source", help="checkpoint to convert: MindSpore .ckpt (ds2 or model zoo) or "
                                       "deepspeech.pytorch .pth / Lightning .ckpt")
    parser.add_argument("--output", metavar="PATH",
                        help="where to write the ds2 checkpoint (default: <run_dir>/checkpoints/step-0000000.ckpt)")
    parser.add_argument("--source-labels", metavar="LABELS",
                        help="label order of the source's output layer, e.g. \"_'ABC...Z \" (default: stored in "
                             "the checkpoint, else the source code base's default)")


# ---------------------------------------------------------------------------------------------
# Reading a torch checkpoint without running it

# What unpickling a checkpoint of tensors and plain values needs to import. Nothing else is
# allowed: unpickling can call any importable function (os.system included).
TORCH_STORAGES = ("FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage",
                  "IntStorage", "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage")
ALLOWED_GLOBALS = frozenset(
    [("collections", "OrderedDict"),
     ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"),
     ("torch._utils", "_rebuild_parameter")]
    + [("torch", name) for name in TORCH_STORAGES]
    + [("builtins", name) for name in ("set", "frozenset", "complex", "slice", "bytearray")])


class UnsafeCheckpoint(Exception):
    """The file asks for something a checkpoint of tensors and plain values never needs."""


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafeCheckpoint(f"{module}.{name}")
        return super().find_class(module, name)


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


# torch.load(pickle_module=...) uses the module's Unpickler and load (torch 1.7.1 has no weights_only).
restricted_pickle = types.ModuleType("ds2_restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = _restricted_load


def is_torch_file(path) -> bool:
    """torch.save writes a zip archive, or (legacy format) a pickle, which starts with byte 0x80;
    a MindSpore .ckpt is a protobuf message, which starts with another byte."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def read_torch_checkpoint(path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(state_dict as numpy arrays, the other top-level entries) of a torch checkpoint, unpickled restrictedly."""
    import torch

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.rsplit("/", 1)[-1] == "constants.pkl" for name in archive.namelist()):
                # torch.load hands these to torch.jit.load, past any pickle_module.
                raise UnsafeCheckpoint(f"refusing to read {path}: it is a TorchScript archive (code, not a "
                                       "state_dict); save the model's state_dict() instead")
    try:
        loaded = torch.load(str(path), map_location="cpu", pickle_module=restricted_pickle)
    except UnsafeCheckpoint as exc:
        raise UnsafeCheckpoint(
            f"refusing to read {path}: unpickling it would import {exc}, and only tensors, OrderedDict and "
            "plain Python values are allowed (a torch checkpoint is a pickle, and unpickling can run any "
            "code). If you trust the file, load it with torch yourself and save the plain parts: "
            "torch.save({'state_dict': ckpt['state_dict'], 'labels': list_of_labels}, 'plain.pth')") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a dict (a state_dict or a checkpoint holding one), got {type(loaded).__name__}")
    state = loaded["state_dict"] if "state_dict" in loaded else loaded
    others = {key: value for key, value in loaded.items() if key != "state_dict"} if "state_dict" in loaded else {}
    arrays = {name: value.detach().cpu().numpy() for name, value in state.items() if torch.is_tensor(value)}
    if not arrays:
        raise ValueError(f"{path}: no tensors in its state_dict")
    return arrays, others


def _stored(others: Dict[str, Any], key: str):
    """A hyper-parameter of a deepspeech.pytorch checkpoint: top level (v2) or under hyper_parameters (v3)."""
    if key in others:
        return others[key]
    hyper = others.get("hyper_parameters")
    return hyper.get(key) if isinstance(hyper, dict) else None


# ---------------------------------------------------------------------------------------------
# Architecture: the source's versus the config's

# What the source code bases fix in code rather than in tensors.
FIXED_ARCHITECTURE = {
    "reference-zoo": {"activation": "tanh", "conv1_stride": (2, 2), "conv2_stride": (2, 1), "rnn_merge": "sum"},
    "deepspeech.pytorch": {"activation": "hardtanh", "conv1_stride": (2, 2), "conv2_stride": (2, 1),
                           "rnn_merge": "sum"},
}


def source_architecture(arrays: Dict[str, Any], layout) -> Tuple[Dict[str, Any], List[str]]:
    """(ModelConfig values the source implies, what ds2 cannot represent) from its tensor shapes."""
    by_role = {}
    for name, array in arrays.items():
        role = layout.role_of(name)
        if role:
            by_role[role] = array
    values: Dict[str, Any] = dict(FIXED_ARCHITECTURE.get(layout.name, {}))
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


# ---------------------------------------------------------------------------------------------
# The command


def run(cfg: Config, args) -> int:
    from ds2 import reconcile

    source = Path(args.source)
    output = Path(args.output) if args.output else checkpoint.step_path(cfg.run_dir, 0)
    if not source.is_file():
        print(f"ds2 convert: no file {source}", file=sys.stderr)
        return 1
    if output.exists():
        print(f"ds2 convert: {output} exists; remove it or give another --output", file=sys.stderr)
        return 1

    labels = args.source_labels
    differences: List[Tuple[str, str]] = []
    unsupported: List[str] = []
    try:
        if is_torch_file(source):
            values, others = read_torch_checkpoint(source)
            layout = reconcile.DEEPSPEECH_PYTORCH
            stored = _stored(others, "labels")
            if labels is None and stored is not None:
                labels = "".join(stored)
            differences += config_differences("features", torch_features(others), cfg.features)
        else:
            values, meta = reconcile.read_checkpoint(source)
            layout = None
            if labels is None and meta:
                labels = meta.get("config", {}).get("model", {}).get("labels")
    except (UnsafeCheckpoint, ValueError, OSError, RuntimeError) as exc:
        print(f"ds2 convert: {exc}", file=sys.stderr)
        return 1

    model, optimizer = _fresh_training_state(cfg)
    if layout is None:
        layout = reconcile.detect_layout(values, dict(model.parameters_and_names()))
    if layout is not reconcile.NATIVE:
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
    checkpoint.save(output, model, optimizer, {
        "config": to_dict(cfg), "step": 0, "skipped": 0, "position": {"epoch": 0, "batch": 0}, "metrics": {},
        "environment": checkpoint.environment(),
        "converted_from": {"path": str(source), "layout": layout.name, "labels": labels or cfg.model.labels}})
    if layout is reconcile.REFERENCE_ZOO and cfg.features.window != "hamming":
        print("note: the model zoo computed its training features with a 'hamming' window "
              f"(this config: {cfg.features.window!r}; --set features.window=hamming to match)")
    print(f"wrote {output}")
    return 0


def _fresh_training_state(cfg: Config):
    """Model and optimizer built as ds2 train builds them, so the optimizer's names match a resume."""
    from ds2.model import DeepSpeech2, TrainNetwork
    from ds2.step import build_optimizer

    model = DeepSpeech2(cfg.model, cfg.features.n_bins)
    TrainNetwork(model)   # renames the parameters as train's TrainNetwork does; the optimizer keys on those names
    return model, build_optimizer(model, cfg.train)
