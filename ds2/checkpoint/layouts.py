"""Other code bases' DeepSpeech2 checkpoints, as data: how each names the parameters.

Every parameter has a role ("conv1.weight", "rnn2.weight_hh_reverse", "fc_bn.gamma", ...). A Layout
maps a code base's checkpoint names to roles; model_roles() finds each role's parameter in the live
model by walking its cells, so neither side hard-codes ds2's parameter names. ds2's own checkpoints
(NATIVE) need no table: their names are the live model's, maybe under a training wrapper's prefix.
The MindSpore model zoo's DeepSpeech2 (REFERENCE_ZOO) and deepspeech.pytorch (DEEPSPEECH_PYTORCH)
are tables below. Supporting another code base = one more Layout here (and, for a new file format,
a reader beside torch_unpickler).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

BATCHNORM_PARAMS = ("gamma", "beta", "moving_mean", "moving_variance")
LSTM_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh",
               "weight_ih_reverse", "weight_hh_reverse", "bias_ih_reverse", "bias_hh_reverse")

# Label orders of the output layer. ds2's is cfg.model.labels (blank '_' first).
ZOO_LABELS = "'ABCDEFGHIJKLMNOPQRSTUVWXYZ _"                  # blank '_' last, index 28
DEEPSPEECH_PYTORCH_LABELS = "_'ABCDEFGHIJKLMNOPQRSTUVWXYZ "   # its English labels.json, blank first

# Prefixes a checkpoint's names get when the model was saved from a cell wrapping it for training
# (ds2's TrainNetwork, WithLossCell, TrainOneStepCell, ...). Stripped, in any combination.
WRAPPER_PREFIXES = ("model.", "network.", "_backbone.", "backbone.")

# Per-parameter optimizer state is named "<kind>.<parameter name>". Kinds that hold the same
# quantity are interchangeable (nn.Adam's moment1 and AdamWeightDecay's adam_m are both the first moment).
STATE_KINDS = {"moment1": "first moment", "adam_m": "first moment",
               "moment2": "second moment", "adam_v": "second moment"}
# Optimizer scalars a checkpoint may hold; those in OPTIONAL_OPTIMIZER_STATE may be absent.
OPTIMIZER_SCALARS = ("beta1_power", "beta2_power", "global_step", "learning_rate")
OPTIONAL_OPTIMIZER_STATE = ("global_step", "learning_rate")
# Entries MindSpore's ModelCheckpoint can append (CheckpointConfig append_info): loop counters.
TRAINING_COUNTERS = ("epoch_num", "step_num")


@dataclass(frozen=True)
class Layout:
    """How another code base names DeepSpeech2's parameters, as data.

    names: (regular expression matching a whole checkpoint name, role template); the template's
      {fields} are filled from the expression's named groups (absent groups give "").
    neutral: regular expressions of roles ds2's model has and this layout does not (no conv bias,
      no BatchNorm before the output layer). They get values that change nothing: zero bias,
      identity BatchNorm.
    ignored: regular expressions of checkpoint entries that carry nothing ds2 needs.
    labels: label order of the layout's output layer, when the layout fixes one.
    architecture: ModelConfig values the code base fixes in code rather than in tensors (activation,
      strides, how the LSTM directions merge), as (key, value) pairs; ds2 convert compares them with
      the config.
    """
    name: str
    names: Tuple[Tuple[str, str], ...] = ()
    neutral: Tuple[str, ...] = ()
    ignored: Tuple[str, ...] = ()
    labels: Optional[str] = None
    architecture: Tuple[Tuple[str, Any], ...] = ()

    def role_of(self, checkpoint_name: str) -> Optional[str]:
        for pattern, template in self.names:
            match = re.fullmatch(pattern, checkpoint_name)
            if match:
                return template.format(**match.groupdict(default=""))
        return None

    def ignores(self, checkpoint_name: str) -> bool:
        return any(re.fullmatch(pattern, checkpoint_name) for pattern in self.ignored)

    def is_neutral(self, role: str) -> bool:
        return any(re.fullmatch(pattern, role) for pattern in self.neutral)


# ds2's own checkpoints: names are the live model's (see native_name); no table needed.
NATIVE = Layout(name="ds2")

# The MindSpore model zoo's DeepSpeech2 (official/audio/DeepSpeech2, src/deepspeech2.py), written
# from what is known of its layout: MaskConv with conv1/bn1/conv2/bn2 (Conv2d without bias) and
# tanh, BatchRNN "RNN" holding one flat ops.LSTM weight vector per bidirectional layer
# (weight0..weight4), SequenceWise(Dense without bias) as "fc.module", no BatchNorm before the
# LSTMs or the output layer, labels with blank last. The exact spelling of the LSTM names varies
# between its versions and is not verified against its source: the alternatives below (per-layer
# cells "lstm_<i>" / "lstms.<i>" / "rnn.<i>", MindSpore 2.x nn.LSTM tensors "weight_ih_l0",
# "..._reverse") are accepted, and a checkpoint with other names shows them as UNEXPECTED in the
# report. Add a line here for a spelling that is missing.
REFERENCE_ZOO = Layout(
    name="reference-zoo",
    names=(
        (r"conv\.conv(?P<k>[12])\.weight", "conv{k}.weight"),
        (r"conv\.conv(?P<k>[12])\.bias", "conv{k}.bias"),
        (r"conv\.bn(?P<k>[12])\.(?P<p>gamma|beta|moving_mean|moving_variance)", "conv{k}.bn.{p}"),
        # one flat weight vector per bidirectional layer, for ops.LSTM (see transforms.split_flat_lstm)
        (r"(?:RNN\.)?weight(?P<i>\d+)", "rnn{i}.flat"),
        (r"(?:RNN|rnn)\.(?:lstm_|lstms\.)?(?P<i>\d+)\.weight", "rnn{i}.flat"),
        # one nn.LSTM per layer; MindSpore 2.x names its tensors as PyTorch does
        (r"(?:RNN\.lstm_|RNN\.lstms\.|rnn\.)(?P<i>\d+)\.(?P<w>weight_ih|weight_hh|bias_ih|bias_hh)_l0"
         r"(?P<r>_reverse)?", "rnn{i}.{w}{r}"),
        # one multi-layer nn.LSTM
        (r"RNN\.(?:rnn|lstm)\.(?P<w>weight_ih|weight_hh|bias_ih|bias_hh)_l(?P<i>\d+)(?P<r>_reverse)?",
         "rnn{i}.{w}{r}"),
        (r"fc\.module\.weight|fc\.weight", "fc.weight"),
    ),
    neutral=(r"conv\d+\.bias", r"fc_bn\..*"),
    labels=ZOO_LABELS,
    architecture=(("activation", "tanh"), ("conv1_stride", (2, 2)), ("conv2_stride", (2, 1)), ("rnn_merge", "sum")),
)

# deepspeech.pytorch's DeepSpeech: MaskConv(Sequential(Conv2d, BatchNorm2d, Hardtanh, Conv2d,
# BatchNorm2d, Hardtanh)) as "conv.seq_module", BatchRNN layers "rnns.<i>" with an optional
# SequenceWise(BatchNorm1d) "batch_norm.module" and an nn.LSTM "rnn", and
# fc = Sequential(SequenceWise(Sequential(BatchNorm1d, Linear without bias))).
TORCH_BATCHNORM = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def _torch_batchnorm(prefix: str, role: str) -> Tuple[Tuple[str, str], ...]:
    """Name rules for a torch BatchNorm under `prefix` (a regular expression) as ds2's BatchNorm `role`."""
    return tuple((prefix + r"\." + torch_name, role + "." + mindspore_name)
                 for torch_name, mindspore_name in TORCH_BATCHNORM.items())


DEEPSPEECH_PYTORCH = Layout(
    name="deepspeech.pytorch",
    names=(
        (r"conv\.seq_module\.0\.weight", "conv1.weight"),
        (r"conv\.seq_module\.0\.bias", "conv1.bias"),
        *_torch_batchnorm(r"conv\.seq_module\.1", "conv1.bn"),
        (r"conv\.seq_module\.3\.weight", "conv2.weight"),
        (r"conv\.seq_module\.3\.bias", "conv2.bias"),
        *_torch_batchnorm(r"conv\.seq_module\.4", "conv2.bn"),
        (r"rnns\.(?P<i>\d+)\.rnn\.(?P<w>weight_ih|weight_hh|bias_ih|bias_hh)_l0(?P<r>_reverse)?", "rnn{i}.{w}{r}"),
        *_torch_batchnorm(r"rnns\.(?P<i>\d+)\.batch_norm\.module", "rnn{i}.bn"),
        *_torch_batchnorm(r"fc\.0\.module\.0", "fc_bn"),
        (r"fc\.0\.module\.1\.weight", "fc.weight"),
    ),
    ignored=(r".*\.num_batches_tracked",),   # BatchNorm's update counter; eval does not use it
    labels=DEEPSPEECH_PYTORCH_LABELS,
    architecture=(("activation", "hardtanh"), ("conv1_stride", (2, 2)), ("conv2_stride", (2, 1)),
                  ("rnn_merge", "sum")),
)

MINDSPORE_LAYOUTS = (NATIVE, REFERENCE_ZOO)


def detect_layout(names, model_names, layouts=MINDSPORE_LAYOUTS) -> Layout:
    """The layout that accounts for the most checkpoint names; ds2's own wins a tie."""
    def count(layout: Layout) -> int:
        if layout is NATIVE:
            return sum(1 for name in names if native_name(name, model_names))
        return sum(1 for name in names if layout.role_of(name))
    return max(layouts, key=lambda layout: (count(layout), layout is NATIVE))


def model_roles(model) -> Dict[str, str]:
    """role -> the live model's parameter name, found by walking its cells in order.

    conv<k>.weight / .bias and conv<k>.bn.<p> for the k-th Conv2d and BatchNorm2d (1-based, as the
    zoo numbers them); rnn<i>.<weight_ih ...> for the i-th cell owning LSTM weights (0-based);
    rnn<i>.bn.<p> for a BatchNorm1d just before that LSTM; fc_bn.<p> for the one before the Dense;
    fc.weight / fc.bias for the Dense. Raises if a model parameter gets no role, so a change to
    the model cannot make a converted checkpoint silently skip a weight.
    """
    from mindspore import nn

    roles: Dict[str, str] = {}
    convs = conv_norms = lstms = 0
    pending_norm = ""          # path of a BatchNorm1d waiting for the layer it feeds
    for path, cell in model.cells_and_names():
        prefix = path + "." if path else ""
        own = [name for name, _ in cell.parameters_and_names(expand=False)]
        if isinstance(cell, nn.Conv2d):
            convs += 1
            roles.update({f"conv{convs}.{name}": prefix + name for name in own})
        elif isinstance(cell, nn.BatchNorm2d):
            conv_norms += 1
            roles.update({f"conv{conv_norms}.bn.{name}": prefix + name for name in own})
        elif isinstance(cell, nn.BatchNorm1d):
            pending_norm = prefix
        elif own and set(own) <= set(LSTM_PARAMS):
            roles.update({f"rnn{lstms}.{name}": prefix + name for name in own})
            if pending_norm:
                roles.update({f"rnn{lstms}.bn.{name}": pending_norm + name for name in BATCHNORM_PARAMS})
                pending_norm = ""
            lstms += 1
        elif isinstance(cell, nn.Dense):
            roles.update({f"fc.{name}": prefix + name for name in own})
            if pending_norm:
                roles.update({f"fc_bn.{name}": pending_norm + name for name in BATCHNORM_PARAMS})
                pending_norm = ""
    placed = set(roles.values())
    unplaced = [name for name, _ in model.parameters_and_names() if name not in placed]
    if unplaced:
        raise RuntimeError(f"ds2.checkpoint.layouts.model_roles cannot place model parameters {unplaced}: the model's "
                           "structure changed; teach model_roles the new cell")
    return roles


def native_name(checkpoint_name: str, model_names) -> Optional[str]:
    """The model parameter a ds2-layout checkpoint name is for: itself, or without wrapper prefixes."""
    name = checkpoint_name
    while True:
        if name in model_names:
            return name
        prefix = next((p for p in WRAPPER_PREFIXES if name.startswith(p)), None)
        if prefix is None:
            return None
        name = name[len(prefix):]
