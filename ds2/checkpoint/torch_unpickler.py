"""Reading a torch checkpoint without running it: the restricted unpickler.

A torch checkpoint is a pickle, and unpickling can call any importable function (os.system
included), so a hostile .pth could run code the moment it is loaded. read_torch_checkpoint() unpickles
with RestrictedUnpickler: tensors, OrderedDict and plain Python values are allowed, and the
configuration classes a deepspeech.pytorch V3 checkpoint names (omegaconf containers and nodes,
deepspeech.pytorch's config dataclasses and enums, its checkpoint callback class, Lightning's
AttributeDict; V3_CONFIG_CLASSES) are replaced by inert stand-ins that only record the state the file
gives them. Nothing of omegaconf, hydra, Lightning or deepspeech_pytorch is imported, and anything else
is refused (UnsafeCheckpoint), naming the class. TorchScript archives (code) are refused too.
"""
from __future__ import annotations

import _compat_pickle
import collections
import pickle
import types
import zipfile
from typing import Any, Dict, Tuple

from ds2.errors import DataError

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


class TorchCheckpointError(DataError):
    """A torch checkpoint that cannot be read as one: damaged, cut off, or not a state_dict of tensors."""


class UnsafeCheckpoint(TorchCheckpointError):
    """The file asks for something a checkpoint of tensors and plain values never needs."""


# What to do about a torch checkpoint that cannot be read.
TORCH_FIX = "give the .pth / .ckpt file as deepspeech.pytorch saved it (copy it again if it was cut off)"


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
    return type(name, (base,), {"qualified_name": f"{module}.{name}", "__module__": "ds2.checkpoint.torch_unpickler.inert"})


STAND_INS = {**{key: _stand_in(*key, InertObject) for key in V3_CONFIG_CLASSES},
             **{key: _stand_in(*key, InertDict) for key in V3_DICT_CLASSES}}


def _typing_subscript(origin, arguments):
    """operator.getitem as pickle calls it to rebuild typing.List[typing.Any] (a config field's type):
    allowed on typing's stand-ins only, and it returns the type's name."""
    if not (isinstance(origin, type) and issubclass(origin, InertObject) and origin.qualified_name.startswith("typing.")):
        raise UnsafeCheckpoint(None, f"operator.getitem applied to {origin!r}")
    arguments = arguments if isinstance(arguments, tuple) else (arguments,)
    return f"{origin.qualified_name}[{', '.join(str(plain(argument)) for argument in arguments)}]"


PLAIN_GLOBALS[("_operator", "getitem")] = _typing_subscript


# Python's own unpickler, not its C one: the C unpickler grows its memo list to whatever index a PUT opcode
# names and clears every new slot, so nine bytes of pickle (a LONG_BINPUT of 2^32 - 1) make it touch 64 GiB.
# The Python one keeps the memo in a dict. A checkpoint's pickle is small (the tensors' data is stored beside
# it), so its speed does not matter here.
class RestrictedUnpickler(pickle._Unpickler):
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
            raise UnsafeCheckpoint(None, f"{module}.{name}")
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
    unpickled restrictedly. TorchCheckpointError (UnsafeCheckpoint for what it refuses to run) on
    anything that is not one: every array it returns is finite."""
    import numpy as np
    import torch

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if any(name.rsplit("/", 1)[-1] == "constants.pkl" for name in archive.namelist()):
                    raise UnsafeCheckpoint(path, "refusing to read it: it is a TorchScript archive (code, not a "
                                                 "state_dict)", "save the model's state_dict() instead")
        loaded = torch.load(str(path), map_location="cpu", pickle_module=restricted_pickle)
    except UnsafeCheckpoint as exc:
        if exc.path:
            raise
        raise UnsafeCheckpoint(
            path, f"refusing to read it: unpickling it would import {exc.problem}, and only tensors, plain Python "
            "values and the configuration classes of deepspeech.pytorch checkpoints are allowed (a torch checkpoint "
            "is a pickle, and unpickling can run any code)",
            "if you trust the file, load it with torch yourself and save the plain parts: "
            "torch.save({'state_dict': ckpt['state_dict'], 'labels': list_of_labels}, 'plain.pth')") from None
    except OSError as exc:
        raise TorchCheckpointError(path, f"cannot read it ({exc.strerror or exc})", TORCH_FIX) from None
    except Exception as exc:  # noqa: BLE001 - whatever torch.load raises on a damaged pickle or archive is about the file
        raise TorchCheckpointError(path, f"not a readable torch checkpoint ({type(exc).__name__}: {exc})",
                                   TORCH_FIX) from None
    if not isinstance(loaded, dict):
        raise TorchCheckpointError(path, f"expected a dict (a state_dict or a checkpoint holding one), got "
                                         f"{type(loaded).__name__}", TORCH_FIX)
    state = loaded["state_dict"] if "state_dict" in loaded else loaded
    if not isinstance(state, dict):
        raise TorchCheckpointError(path, f"its state_dict is a {type(state).__name__}, not a dict", TORCH_FIX)
    others = {key: plain(value) for key, value in loaded.items() if key != "state_dict"} if "state_dict" in loaded else {}
    arrays = {}
    for name, value in state.items():
        if not torch.is_tensor(value):
            continue
        try:
            array = value.detach().cpu().numpy()
        except (TypeError, RuntimeError) as exc:   # a dtype numpy has no type for (bfloat16)
            raise TorchCheckpointError(path, f"entry {name} cannot be read as an array ({exc})", TORCH_FIX) from None
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise TorchCheckpointError(path, f"entry {name} holds values that are not finite numbers", TORCH_FIX,
                                       place=f"entry {name}")
        arrays[name] = array
    if not arrays:
        raise TorchCheckpointError(path, "no tensors in its state_dict", TORCH_FIX)
    return arrays, others
