"""`ds2 convert SOURCE`: a ds2 checkpoint from another code base's DeepSpeech2 checkpoint.

    ds2 convert --preset seed --set model.rnn_batch_norm=false zoo_deepspeech2.ckpt
    ds2 convert --preset seed --set model.activation=hardtanh --set features.window=hamming \\
        librispeech_pretrained_v2.pth

Sources, told apart by content (a .ckpt may be either):
- MindSpore .ckpt: ds2's own from any MindSpore version, or the MindSpore model zoo's DeepSpeech2
  (ds2.reconcile.REFERENCE_ZOO: names mapped, flat LSTM weights split, no conv bias and no
  BatchNorm before the output layer filled with neutral values, output rows reordered from the
  zoo's labels, blank last, to the config's);
- deepspeech.pytorch: a V2 .pth (labels and audio_conf at the top level) or a V3 PyTorch Lightning
  .ckpt as released (hyper_parameters holding omegaconf configs). A torch pickle, read with a
  restricted unpickler because unpickling can run any code: tensors, OrderedDict and plain
  Python values are allowed, and the configuration classes a V3 checkpoint names (omegaconf
  containers and nodes, deepspeech.pytorch's config dataclasses and enums, its checkpoint
  callback class, Lightning's AttributeDict; V3_CONFIG_CLASSES) are replaced by inert stand-ins
  that only record the state the file gives them. Nothing of omegaconf, hydra, Lightning or
  deepspeech_pytorch is imported, and anything else is refused, naming the class. Labels and
  spectrogram settings (sample rate, window size and stride, window) come from the checkpoint.
  Its LSTM tensors are already in ds2's layout: PyTorch and MindSpore's LSTM kernels both order
  the gates (input, forget, cell, output), weight_ih [4H, in], weight_hh [4H, H], and ds2 keeps
  the two biases apart.

The model is the configured one (preset, --config, --set), with the labels and spectrogram
settings a deepspeech.pytorch checkpoint stores taken from it. The source's architecture, read
from its tensor shapes plus what its code fixes (activation, strides, how directions merge), is
compared with it first; every difference is listed with the --set that fixes it, and what ds2
cannot represent at all is named. Then ds2.reconcile maps the tensors and prints its table.

Output: a ds2 checkpoint at step 0 with a fresh optimizer state (converted weights restart the
optimizer), by default <run_dir>/checkpoints/step-0000000.ckpt, so `ds2 eval --checkpoint last`
and `ds2 train --resume` (fine-tuning) take it as it is.
"""
from __future__ import annotations

import _compat_pickle
import collections
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


# The classes a deepspeech.pytorch V3 checkpoint names, as its training code saves it (V3.0:
# PyTorch Lightning 1.1, hydra-core 1.0, omegaconf 2.0). Lightning's save_hyperparameters() keeps
# the model's constructor arguments: labels, precision, and the omegaconf DictConfig nodes
# model_cfg, optim_cfg and spect_cfg, each with its parent, so the whole training config comes
# along: DictConfig / ListConfig containers of value nodes, each node with its Metadata, typed by
# deepspeech.pytorch's config dataclasses and enums (RNNType's values are torch.nn classes).
# `callbacks` is keyed by the checkpoint callback's class. Each of these unpickles to an inert
# stand-in (InertObject / InertDict below) and nothing else is imported.
V3_CONFIG_CLASSES = frozenset(
    [("omegaconf.dictconfig", "DictConfig"), ("omegaconf.listconfig", "ListConfig"),
     ("omegaconf.base", "Metadata"), ("omegaconf.base", "ContainerMetadata")]
    + [("omegaconf.nodes", name) for name in ("AnyNode", "StringNode", "IntegerNode", "FloatNode",
                                              "BooleanNode", "EnumNode")]
    + [("deepspeech_pytorch.configs.train_config", name) for name in (
        "SpectConfig", "AugmentationConfig", "DataConfig", "BiDirectionalConfig", "UniDirectionalConfig",
        "OptimConfig", "SGDConfig", "AdamConfig", "GCSCheckpointConfig", "DeepSpeechTrainerConf",
        "DeepSpeechConfig")]
    + [("deepspeech_pytorch.enums", name) for name in ("SpectrogramWindow", "RNNType", "DecoderType")]
    + [("deepspeech_pytorch.checkpoint", name) for name in ("CheckpointHandler", "FileCheckpointHandler",
                                                            "GCSCheckpointHandler")]
    + [("hydra_configs.pytorch_lightning.callbacks", "ModelCheckpointConf"),
       ("hydra_configs.pytorch_lightning.trainer", "TrainerConf"),
       ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
       ("torch.nn.modules.rnn", "LSTM"), ("torch.nn.modules.rnn", "GRU"), ("torch.nn.modules.rnn", "RNN")]
    + [("typing", name) for name in ("Any", "List", "Dict", "Tuple", "Optional", "Union")])
# Lightning keeps hyper-parameters in an AttributeDict, a dict subclass.
V3_DICT_CLASSES = frozenset([("pytorch_lightning.utilities.parsing", "AttributeDict")])
# Plain classes such configs use as types and containers; calling them runs no code of the file.
PLAIN_GLOBALS = {("builtins", "dict"): dict, ("builtins", "list"): list, ("builtins", "tuple"): tuple,
                 ("builtins", "int"): int, ("builtins", "float"): float, ("builtins", "str"): str,
                 ("builtins", "bool"): bool, ("collections", "defaultdict"): collections.defaultdict}


class UnsafeCheckpoint(Exception):
    """The file asks for something a checkpoint of tensors and plain values never needs."""


class InertObject:
    """Stands in for an allow-listed class: records what unpickling hands it, runs nothing.
    `args`: constructor arguments (an enum member is unpickled as EnumClass(value)); `state`:
    what pickle restores into the object (omegaconf nodes: their __dict__)."""
    qualified_name = "?"

    def __new__(cls, *args, **kwargs):
        instance = super().__new__(cls)
        instance.args, instance.state = args, None
        return instance

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<inert {self.qualified_name}>"


class InertDict(dict):
    """Stands in for an allow-listed dict subclass: its items, and any attribute state, recorded."""
    qualified_name = "?"

    def __setstate__(self, state):
        self.state = state


def _stand_in(module: str, name: str, base: type) -> type:
    return type(name, (base,), {"qualified_name": f"{module}.{name}", "__module__": "ds2.convert.inert"})


STAND_INS = {**{key: _stand_in(*key, InertObject) for key in V3_CONFIG_CLASSES},
             **{key: _stand_in(*key, InertDict) for key in V3_DICT_CLASSES}}


def _typing_subscript(origin, arguments):
    """operator.getitem as pickle calls it to rebuild typing.List[typing.Any] (a config field's type):
    allowed on typing's stand-ins only, and it returns the type's name."""
    if not (isinstance(origin, type) and issubclass(origin, InertObject) and origin.qualified_name.startswith("typing.")):
        raise UnsafeCheckpoint(f"operator.getitem applied to {origin!r}")
    arguments = arguments if isinstance(arguments, tuple) else (arguments,)
    return f"{origin.qualified_name}[{', '.join(str(plain(argument)) for argument in arguments)}]"


PLAIN_GLOBALS[("_operator", "getitem")] = _typing_subscript


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # Protocol 2, torch.save's, writes Python 2 names (__builtin__.dict); pickle maps them back in
        # its own find_class, after this check, so map them here first (Python 3 names map to themselves).
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in STAND_INS:
            return STAND_INS[(module, name)]
        if (module, name) in PLAIN_GLOBALS:
            return PLAIN_GLOBALS[(module, name)]
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafeCheckpoint(f"{module}.{name}")
        return super().find_class(module, name)


def plain(value: Any) -> Any:
    """A checkpoint entry with its stand-ins turned into plain values: an omegaconf DictConfig
    becomes a dict of its values, a ListConfig a list, a value node its value, an enum member
    its value, a class its qualified name. Node parents are not followed."""
    if isinstance(value, type) and issubclass(value, (InertObject, InertDict)):
        return value.qualified_name
    if isinstance(value, InertObject):
        state = value.state if isinstance(value.state, dict) else {}
        if "_content" in state:
            content = state["_content"]
            if isinstance(content, dict):
                return {key: plain(item) for key, item in content.items()}
            if isinstance(content, list):
                return [plain(item) for item in content]
            return content   # None, or a missing ('???') or interpolated ('${...}') value
        if "_val" in state:
            return plain(state["_val"])
        if len(value.args) == 1:
            return plain(value.args[0])
        return value
    if isinstance(value, dict):
        return {(plain(key) if isinstance(key, type) else key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    return value


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
    """(state_dict as numpy arrays, the other top-level entries as plain values) of a torch checkpoint,
    unpickled restrictedly."""
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
            f"refusing to read {path}: unpickling it would import {exc}, and only tensors, plain Python values "
            "and the configuration classes of deepspeech.pytorch checkpoints are allowed (a torch checkpoint "
            "is a pickle, and unpickling can run any code). If you trust the file, load it with torch yourself "
            "and save the plain parts: "
            "torch.save({'state_dict': ckpt['state_dict'], 'labels': list_of_labels}, 'plain.pth')") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a dict (a state_dict or a checkpoint holding one), got {type(loaded).__name__}")
    state = loaded["state_dict"] if "state_dict" in loaded else loaded
    others = {key: plain(value) for key, value in loaded.items() if key != "state_dict"} if "state_dict" in loaded else {}
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
            for line in adopt_torch_settings(cfg, torch_features(others), labels):
                print(line)
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
