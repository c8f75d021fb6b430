"""A deepspeech.pytorch V3 checkpoint made the way its training code saves one, for tests.

deepspeech.pytorch V3.0 trains with Hydra 1.0 (omegaconf 2.0) and PyTorch Lightning 1.1. Its
LightningModule calls save_hyperparameters(), which keeps the constructor's arguments: labels,
precision, and the omegaconf nodes model_cfg, optim_cfg, spect_cfg of the composed training
config (cfg.model, cfg.optim, cfg.data.spect), each still linked to its parent, so pickling one
pickles the whole config. Lightning's checkpoint is

    {epoch, global_step, pytorch-lightning_version, callbacks: {callback class: its state},
     optimizer_states, lr_schedulers, [native_amp_scaling_state], state_dict, hparams_name,
     hyper_parameters: dict(model.hparams)}

written with torch.save. omegaconf, hydra, Lightning and deepspeech_pytorch are not installed
here, so this module makes stand-ins with the same module and class names and the same pickled
state (omegaconf 2.0 pickles a node as its __dict__: _metadata, _parent and _content or _val),
registers them in sys.modules only while saving, and removes them again: the file names exactly
what a released checkpoint names, and reading it cannot fall back on importing them.
Written for this project from a reading of those code bases, not copied from them.
"""
from __future__ import annotations

import collections
import contextlib
import enum
import sys
import types
import typing
from dataclasses import dataclass

import torch

LIGHTNING_VERSION = "1.1.8"
FAKE_PACKAGES = ("omegaconf", "deepspeech_pytorch", "hydra_configs", "pytorch_lightning")


def _module(name: str, **members) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in members.items():
        value.__module__ = name
        value.__qualname__ = key
        setattr(module, key, value)
    return module


# --- omegaconf 2.0: nodes pickle their __dict__ ----------------------------------------------

@dataclass
class Metadata:
    ref_type: typing.Any
    object_type: typing.Any
    optional: bool
    key: typing.Any
    flags: dict = None
    resolver_cache: typing.Any = None

    def __post_init__(self):
        self.flags = self.flags if self.flags is not None else {}
        self.resolver_cache = collections.defaultdict(dict)


@dataclass
class ContainerMetadata(Metadata):
    key_type: typing.Any = None
    element_type: typing.Any = None


class Node:
    def __init__(self, parent, metadata):
        self.__dict__["_metadata"] = metadata
        self.__dict__["_parent"] = parent


class ValueNode(Node):
    ref_type = typing.Any   # a class attribute: not part of the pickled state

    def __init__(self, value, key=None, parent=None):
        super().__init__(parent, Metadata(ref_type=self.ref_type, object_type=None, optional=True, key=key))
        self.__dict__["_val"] = value


class AnyNode(ValueNode):
    pass


class StringNode(ValueNode):
    ref_type = str


class IntegerNode(ValueNode):
    ref_type = int


class FloatNode(ValueNode):
    ref_type = float


class BooleanNode(ValueNode):
    ref_type = bool


class EnumNode(ValueNode):
    def __init__(self, enum_type, value, key=None, parent=None):
        self.__dict__["fields"] = {name: member.value for name, member in enum_type.__members__.items()}
        self.__dict__["enum_type"] = enum_type
        super().__init__(value, key, parent)
        self._metadata.ref_type = self._metadata.object_type = enum_type


class Container(Node):
    """omegaconf 2.0's containers pickle their __dict__ explicitly."""

    def __getstate__(self):
        return self.__dict__

    def __setstate__(self, state):
        self.__dict__.update(state)


class DictConfig(Container):
    def __init__(self, object_type, key=None, parent=None, **values):
        super().__init__(parent, ContainerMetadata(ref_type=typing.Any, object_type=object_type, optional=True,
                                                   key=key, key_type=typing.Any, element_type=typing.Any))
        self.__dict__["_content"] = {}
        for name, value in values.items():
            self.add(name, value)

    def add(self, name, value):
        if isinstance(value, Node):
            value.__dict__["_parent"] = self
            value._metadata.key = name
        else:
            value = _node_for(value, name, self)
        self.__dict__["_content"][name] = value


class ListConfig(Container):
    def __init__(self, items, key=None, parent=None):
        # A List[Any] field's type pickles as operator.getitem(typing.List, typing.Any).
        super().__init__(parent, ContainerMetadata(ref_type=typing.List[typing.Any], object_type=list, optional=True,
                                                   key=key, element_type=typing.Any))
        self.__dict__["_content"] = [_node_for(item, index, self) for index, item in enumerate(items)]


def _node_for(value, key, parent):
    if isinstance(value, enum.Enum):
        return EnumNode(type(value), value, key, parent)
    if isinstance(value, bool):
        return BooleanNode(value, key, parent)
    kind = {int: IntegerNode, float: FloatNode, str: StringNode}.get(type(value), AnyNode)
    if isinstance(value, (list, tuple)):
        return ListConfig(list(value), key, parent)
    if isinstance(value, dict):
        return DictConfig(None, key, parent, **value)
    return kind(value, key, parent)


# --- deepspeech.pytorch V3.0's config dataclasses and enums (names and defaults) --------------

class SpectrogramWindow(enum.Enum):
    hamming = "hamming"
    hann = "hann"
    blackman = "blackman"
    bartlett = "bartlett"


class RNNType(enum.Enum):
    lstm = torch.nn.LSTM
    rnn = torch.nn.RNN
    gru = torch.nn.GRU


class DecoderType(enum.Enum):
    greedy = "greedy"
    beam = "beam"


def _config_class(name):
    return type(name, (), {})


CONFIG_CLASSES = {name: _config_class(name) for name in (
    "SpectConfig", "AugmentationConfig", "DataConfig", "BiDirectionalConfig", "UniDirectionalConfig",
    "OptimConfig", "SGDConfig", "AdamConfig", "GCSCheckpointConfig", "DeepSpeechTrainerConf", "DeepSpeechConfig")}
ModelCheckpointConf = _config_class("ModelCheckpointConf")
TrainerConf = _config_class("TrainerConf")
CheckpointHandler = _config_class("CheckpointHandler")   # a Lightning ModelCheckpoint subclass; only its name is pickled


@contextlib.contextmanager
def fake_modules():
    """The stand-ins under their real module names, for torch.save to find; removed afterwards."""
    modules = [
        _module("omegaconf"),
        _module("omegaconf.base", Metadata=Metadata, ContainerMetadata=ContainerMetadata),
        _module("omegaconf.nodes", AnyNode=AnyNode, StringNode=StringNode, IntegerNode=IntegerNode,
                FloatNode=FloatNode, BooleanNode=BooleanNode, EnumNode=EnumNode),
        _module("omegaconf.dictconfig", DictConfig=DictConfig),
        _module("omegaconf.listconfig", ListConfig=ListConfig),
        _module("deepspeech_pytorch"),
        _module("deepspeech_pytorch.configs"),
        _module("deepspeech_pytorch.configs.train_config", **CONFIG_CLASSES),
        _module("deepspeech_pytorch.enums", SpectrogramWindow=SpectrogramWindow, RNNType=RNNType,
                DecoderType=DecoderType),
        _module("deepspeech_pytorch.checkpoint", CheckpointHandler=CheckpointHandler),
        _module("hydra_configs"), _module("hydra_configs.pytorch_lightning"),
        _module("hydra_configs.pytorch_lightning.callbacks", ModelCheckpointConf=ModelCheckpointConf),
        _module("hydra_configs.pytorch_lightning.trainer", TrainerConf=TrainerConf),
    ]
    saved = {module.__name__: sys.modules.get(module.__name__) for module in modules}
    sys.modules.update({module.__name__: module for module in modules})
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def training_config(labels_path="labels.json", window=SpectrogramWindow.hamming, sample_rate=16000,
                    window_size=0.02, window_stride=0.01, hidden_size=1024, hidden_layers=5, precision=16):
    """The composed config of `python train.py +configs=librispeech` (V3.0's configs/librispeech.yaml)."""
    c = CONFIG_CLASSES
    spect = DictConfig(c["SpectConfig"], sample_rate=sample_rate, window_size=window_size,
                       window_stride=window_stride, window=window)
    augmentation = dict(speed_volume_perturb=False, spec_augment=True, noise_dir="", noise_prob=0.4,
                        noise_min=0.0, noise_max=0.5)
    data = DictConfig(c["DataConfig"], train_path="data/libri_train_manifest.json",
                      val_path="data/libri_val_manifest.json", batch_size=64, num_workers=8,
                      labels_path=labels_path, spect=spect,
                      augmentation=DictConfig(c["AugmentationConfig"], **augmentation))
    trainer = DictConfig(c["DeepSpeechTrainerConf"], _target_="pytorch_lightning.trainer.Trainer", logger=True,
                         checkpoint_callback=True, callbacks="???", default_root_dir=None, gradient_clip_val=400,
                         gpus=1, max_epochs=16, precision=precision, accelerator="ddp", plugins="ddp_sharded",
                         amp_backend="native", amp_level="O2", resume_from_checkpoint=None)
    checkpoint = DictConfig(ModelCheckpointConf, _target_="pytorch_lightning.callbacks.ModelCheckpoint",
                            filepath=None, monitor="wer", verbose=True, save_last=None, save_top_k=1,
                            save_weights_only=False, mode="min", dirpath=None, filename=None, period=1, prefix="")
    root = DictConfig(c["DeepSpeechConfig"],
                      defaults=[{"optim": "adam"}, {"model": "bidirectional"}, {"checkpoint": "file"}],
                      optim=DictConfig(c["AdamConfig"], learning_rate=1.5e-4, learning_anneal=0.99,
                                       weight_decay=1e-5, eps=1e-8, betas=(0.9, 0.999)),
                      model=DictConfig(c["BiDirectionalConfig"], rnn_type=RNNType.lstm, hidden_size=hidden_size,
                                       hidden_layers=hidden_layers),
                      checkpoint=checkpoint, trainer=trainer, data=data,
                      augmentation=DictConfig(c["AugmentationConfig"], **augmentation),
                      seed=123456, load_auto_checkpoint=False)
    root._metadata.flags["struct"] = True   # Hydra composes configs in struct mode
    return root


def lightning_checkpoint(network: torch.nn.Module, labels, config, epoch=16, extra=None):
    """The dict Lightning 1.1's dump_checkpoint builds for deepspeech.pytorch's DeepSpeech module."""
    content = config.__dict__["_content"]
    optimizer = torch.optim.AdamW(network.parameters(), lr=1.5e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.99)
    # One step for real optimizer and scheduler state. Gradients are set, not computed: torch 1.7.1 crashes
    # at exit after a backward pass in a process that imported mindspore (docs/envcheck.md, envcheck torch.exit).
    parameters = {name: parameter.detach().clone() for name, parameter in network.named_parameters()}
    for parameter in network.parameters():
        parameter.grad = torch.full_like(parameter, 1e-3)
    optimizer.step()
    scheduler.step()
    with torch.no_grad():   # the weights the test compares against stay those the network computes with
        for name, parameter in network.named_parameters():
            parameter.copy_(parameters[name])
            parameter.grad = None
    checkpoint = {
        "epoch": epoch, "global_step": 1234, "pytorch-lightning_version": LIGHTNING_VERSION,
        "callbacks": {CheckpointHandler: {"monitor": "wer", "best_model_score": torch.tensor(0.1046),
                                          "best_model_path": "/models/epoch=15.ckpt",
                                          "current_score": torch.tensor(0.1046), "dirpath": "/models"}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
        "native_amp_scaling_state": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                     "growth_interval": 2000, "_growth_tracker": 17},
        "state_dict": network.state_dict(),
        "hparams_name": "kwargs",
        "hyper_parameters": {"labels": list(labels), "model_cfg": content["model"],
                             "precision": content["trainer"].__dict__["_content"]["precision"].__dict__["_val"],
                             "optim_cfg": content["optim"],
                             "spect_cfg": content["data"].__dict__["_content"]["spect"]},
    }
    checkpoint.update(extra or {})
    return checkpoint


def save(checkpoint, path):
    """torch.save as a release is written (zip format, the default since torch 1.6)."""
    with fake_modules():
        torch.save(checkpoint, str(path))
