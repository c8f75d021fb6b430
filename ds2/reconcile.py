"""Reconcile a checkpoint with a ds2 model (and optimizer) before loading anything into them.

    report = load_into(model, optimizer, "step-0001200.ckpt")   # CheckpointMismatch if it cannot load
    print(report.summary())

Checkpoints come from other MindSpore versions and other code, and MindSpore's own loading does
not say what went wrong until it is too late:
- older optimizers stored Adam's beta1_power / beta2_power with shape (1,), nn.Adam now uses ().
  MindSpore 2.4 refused them ("Can not change the shape of Parameter which has been initialized.
  Current shape is (), and incoming is (1,)"); 2.7.2 silently gives the optimizer the old shape;
- global_step may be absent, and a learning rate may be stored as a whole schedule;
- load_param_into_net leaves every parameter whose name it cannot match at its random initial
  value and only returns the names, so a checkpoint from another code base "loads" and the model
  then predicts nothing but blanks.

So everything is decided here before any value is set. Every checkpoint entry ends up as a model
parameter, an optimizer state entry, or a row in the report's table:
- model: every model parameter must be found with the same shape, or a shape that differs only
  by size-1 dimensions (reshaped), and every checkpoint entry that is not optimizer state must be
  used (an unused weight means another architecture). Otherwise nothing is loaded.
- optimizer: its state is loaded only when the model's parameters came over unchanged and every
  entry it needs (moments, beta powers) is there; otherwise the model still loads and the report
  says "restarting the optimizer". global_step and learning_rate are optional: ds2 keeps its
  schedule step in the checkpoint meta and assigns the learning rate every step.

Layouts. ds2's own names are the live model's names (model.parameters_and_names()), optionally
under a wrapper's prefix (a checkpoint saved from the training cell). Other code bases are
described as data in Layout tables: the MindSpore model zoo's DeepSpeech2 (REFERENCE_ZOO) and
deepspeech.pytorch (DEEPSPEECH_PYTORCH, used by ds2.convert). They map checkpoint names to
roles ("conv1.weight", "rnn2.weight_hh_reverse", "fc_bn.gamma", ...), and model_roles() finds
each role's parameter in the live model by walking its cells, so neither side hard-codes ds2's
parameter names.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ds2.checkpoint import META_KEY, OPTIMIZER_PREFIX

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
    """
    name: str
    names: Tuple[Tuple[str, str], ...] = ()
    neutral: Tuple[str, ...] = ()
    ignored: Tuple[str, ...] = ()
    labels: Optional[str] = None

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


# ds2's own checkpoints: names are the live model's (see _native_name); no table needed.
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
        # one flat weight vector per bidirectional layer, for ops.LSTM (see split_flat_lstm)
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
)

MINDSPORE_LAYOUTS = (NATIVE, REFERENCE_ZOO)


class CheckpointMismatch(ValueError):
    """The checkpoint's model weights do not fit the model; the message holds the table."""

    def __init__(self, report: "ReconcileReport"):
        super().__init__(report.summary() + "\n" + report.format_table())
        self.report = report


@dataclass
class Entry:
    """One row of the report: a checkpoint entry, the ds2 parameter it is for, or both."""
    part: str                                   # "model" or "optimizer"
    checkpoint_name: str                        # "" when the checkpoint has no such entry
    model_name: str                             # "" when ds2 has no place for it
    checkpoint_shape: Optional[Tuple[int, ...]]
    model_shape: Optional[Tuple[int, ...]]
    note: str = ""


@dataclass
class ReconcileReport:
    layout: str = NATIVE.name
    model_params: Dict[str, np.ndarray] = field(default_factory=dict)     # model name -> value to load
    optimizer_state: Dict[str, np.ndarray] = field(default_factory=dict)  # optimizer name -> value to load
    optimizer_restart: str = ""      # why the optimizer state is not loaded; "" when it is (or no optimizer)
    loaded: int = 0                  # model parameters found under their own name (maybe under a
                                     # wrapper's prefix) and shape
    mapped: List[Entry] = field(default_factory=list)      # found under another name or converted
    reshaped: List[Entry] = field(default_factory=list)    # shapes differing only by size-1 dimensions
    filled: List[Entry] = field(default_factory=list)      # no counterpart in the layout: neutral value
    missing: List[Entry] = field(default_factory=list)
    unexpected: List[Entry] = field(default_factory=list)
    mismatched: List[Entry] = field(default_factory=list)
    ignored: List[Entry] = field(default_factory=list)     # read and deliberately not loaded

    @property
    def refused(self) -> bool:
        """True when the model's weights cannot be loaded: nothing is loaded then."""
        return any(e.part == "model" for e in self.missing + self.unexpected + self.mismatched)

    def summary(self) -> str:
        if self.refused:
            problems = [f"{sum(1 for e in rows if e.part == 'model')} {what}" for what, rows in
                        (("missing", self.missing), ("unexpected", self.unexpected), ("mismatched", self.mismatched))
                        if any(e.part == "model" for e in rows)]
            return (f"checkpoint (layout {self.layout}) does not fit the model: "
                    f"{', '.join(problems)} model entries; nothing was loaded")
        text = (f"checkpoint layout {self.layout}: {len(self.model_params)} model parameters "
                f"({self.loaded} by name, {len(self.mapped)} mapped, {len(self.filled)} filled neutral, "
                f"{len([e for e in self.reshaped if e.part == 'model'])} reshaped)")
        if self.optimizer_restart:
            text += f"; optimizer state not loaded ({self.optimizer_restart}): restarting the optimizer"
        elif self.optimizer_state:
            text += f"; optimizer state loaded ({len(self.optimizer_state)} entries)"
        return text

    def format_table(self) -> str:
        """Every entry that did not load unchanged under its own name, one row each."""
        rows = [(status, e) for status, entries in (
            ("MISSING", self.missing), ("UNEXPECTED", self.unexpected), ("MISMATCHED", self.mismatched),
            ("reshaped", self.reshaped), ("mapped", self.mapped), ("filled", self.filled),
            ("ignored", self.ignored)) for e in entries]
        if not rows:
            return "(every entry loaded under its own name and shape)"
        header = ("status", "part", "checkpoint entry", "ds2 name", "checkpoint shape", "model shape", "note")
        lines = [header] + [(status, e.part, e.checkpoint_name or "-", e.model_name or "-",
                             _shape_text(e.checkpoint_shape), _shape_text(e.model_shape), e.note)
                            for status, e in rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
        return "\n".join(("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1]).rstrip()
                         for line in lines)


def _shape_text(shape: Optional[Tuple[int, ...]]) -> str:
    return "-" if shape is None else "(" + ",".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


# ---------------------------------------------------------------------------------------------
# Reading


def read_checkpoint(path) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """(entries by name, ds2 meta or None) of any MindSpore .ckpt file."""
    import mindspore as ms

    values = ms.load_checkpoint(str(path))
    meta_text = values.pop(META_KEY, None)
    return values, (json.loads(meta_text) if isinstance(meta_text, str) else None)


def _as_array(value) -> Optional[np.ndarray]:
    """numpy value of a Parameter, Tensor or array; None for anything else (e.g. appended strings)."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "asnumpy"):
        return value.asnumpy()
    return None


# ---------------------------------------------------------------------------------------------
# The live model and optimizer


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
        raise RuntimeError(f"ds2.reconcile.model_roles cannot place model parameters {unplaced}: the model's "
                           "structure changed; teach model_roles the new cell")
    return roles


def _native_name(checkpoint_name: str, model_names) -> Optional[str]:
    """The model parameter a ds2-layout checkpoint name is for: itself, or without wrapper prefixes."""
    name = checkpoint_name
    while True:
        if name in model_names:
            return name
        prefix = next((p for p in WRAPPER_PREFIXES if name.startswith(p)), None)
        if prefix is None:
            return None
        name = name[len(prefix):]


def _optimizer_targets(optimizer, model) -> List[Tuple[str, Any, Tuple[str, str, str]]]:
    """(name, parameter, key) of the optimizer's own state. key: ("state", kind, model name) for
    per-parameter state, ("scalar", name, "") for the rest. Derived from the live optimizer."""
    model_ids = {id(param): name for name, param in model.parameters_and_names()}
    by_param_name = {param.name: model_ids.get(id(param)) for param in optimizer.parameters}
    targets = []
    for name, param in optimizer.parameters_and_names():
        if id(param) in model_ids:
            continue    # the optimizer lists the model's parameters too
        kind, _, rest = name.partition(".")
        if by_param_name.get(rest):
            targets.append((name, param, ("state", STATE_KINDS.get(kind, kind), by_param_name[rest])))
        else:
            targets.append((name, param, ("scalar", name, "")))
    return targets


def _optimizer_key(checkpoint_name: str, model_names, state_kinds) -> Optional[Tuple[str, str, str]]:
    """The optimizer key (see _optimizer_targets) of a checkpoint entry, or None if it is not optimizer state."""
    name = checkpoint_name[len(OPTIMIZER_PREFIX):] if checkpoint_name.startswith(OPTIMIZER_PREFIX) else checkpoint_name
    if name in OPTIMIZER_SCALARS:
        return ("scalar", name, "")
    kind, _, rest = name.partition(".")
    if kind in state_kinds:
        return ("state", STATE_KINDS.get(kind, kind), _native_name(rest, model_names) or rest)
    if checkpoint_name.startswith(OPTIMIZER_PREFIX):
        return ("scalar", name, "")
    return None


# ---------------------------------------------------------------------------------------------
# Values


def fit_shape(value: np.ndarray, shape: Tuple[int, ...]) -> Optional[np.ndarray]:
    """`value` in `shape` when the two shapes differ only by size-1 dimensions, else None."""
    if tuple(value.shape) == tuple(shape):
        return value
    if [d for d in value.shape if d != 1] == [d for d in shape if d != 1]:
        return value.reshape(shape)
    return None


def split_flat_lstm(flat: np.ndarray, input_size: int, hidden_size: int) -> Dict[str, np.ndarray]:
    """One bidirectional layer's flat ops.LSTM weight vector (CPU layout) as ds2's per-direction tensors.

    The CPU kernel's layout, measured against it (tests/test_convert.py runs a network built on it):
    W_ih forward, W_ih backward, W_hh forward, W_hh backward, bias forward, bias backward; each W is
    [4H, in] row-major with gates (input, forget, cell, output), as ds2 and PyTorch order them, and
    one bias per direction (b_ih + b_hh), which goes to bias_ih with bias_hh zero.
    The GPU (cuDNN) layout has two biases per direction and an order not verified here: refused.
    """
    gates = 4 * hidden_size
    sizes = [("weight_ih", gates * input_size), ("weight_ih_reverse", gates * input_size),
             ("weight_hh", gates * hidden_size), ("weight_hh_reverse", gates * hidden_size),
             ("bias_ih", gates), ("bias_ih_reverse", gates)]
    expected = sum(size for _, size in sizes)
    flat = flat.reshape(-1)
    if flat.size == expected + 2 * gates:
        raise ValueError(f"flat LSTM weights of {flat.size} values are the GPU (cuDNN) layout with two bias "
                         f"vectors per direction; its order is not verified, so it is not converted")
    if flat.size != expected:
        raise ValueError(f"flat LSTM weights of {flat.size} values; a bidirectional layer of input {input_size} "
                         f"and hidden {hidden_size} has {expected} (CPU layout)")
    parts, start = {}, 0
    for name, size in sizes:
        parts[name] = flat[start:start + size]
        start += size
    return {
        "weight_ih": parts["weight_ih"].reshape(gates, input_size),
        "weight_hh": parts["weight_hh"].reshape(gates, hidden_size),
        "bias_ih": parts["bias_ih"],
        "bias_hh": np.zeros(gates, flat.dtype),
        "weight_ih_reverse": parts["weight_ih_reverse"].reshape(gates, input_size),
        "weight_hh_reverse": parts["weight_hh_reverse"].reshape(gates, hidden_size),
        "bias_ih_reverse": parts["bias_ih_reverse"],
        "bias_hh_reverse": np.zeros(gates, flat.dtype),
    }


def label_order(source_labels: str, target_labels: str) -> np.ndarray:
    """rows such that source_output[rows] is in target label order; raises if the label sets differ."""
    if len(set(source_labels)) != len(source_labels) or len(set(target_labels)) != len(target_labels):
        raise ValueError(f"labels repeat a character: source {source_labels!r}, target {target_labels!r}")
    if set(source_labels) != set(target_labels):
        raise ValueError(f"label sets differ: source {source_labels!r}, model {target_labels!r} "
                         f"(only in source: {sorted(set(source_labels) - set(target_labels))}, "
                         f"only in model: {sorted(set(target_labels) - set(source_labels))})")
    return np.array([source_labels.index(label) for label in target_labels])


def _neutral_value(role: str, shape: Tuple[int, ...], eps: float) -> np.ndarray:
    """A value for a parameter the source has no counterpart of that makes it do nothing."""
    parameter = role.rsplit(".", 1)[1]
    if parameter == "gamma":
        return np.ones(shape, np.float32)
    if parameter == "moving_variance":
        # (x - 0) / sqrt((1 - eps) + eps) * 1 + 0 = x: an exact identity in inference.
        return np.full(shape, 1.0 - eps, np.float32)
    return np.zeros(shape, np.float32)   # beta, moving_mean, biases


# ---------------------------------------------------------------------------------------------
# Reconciliation


def detect_layout(names, model_names, layouts=MINDSPORE_LAYOUTS) -> Layout:
    """The layout that accounts for the most checkpoint names; ds2's own wins a tie."""
    def count(layout: Layout) -> int:
        if layout is NATIVE:
            return sum(1 for name in names if _native_name(name, model_names))
        return sum(1 for name in names if layout.role_of(name))
    return max(layouts, key=lambda layout: (count(layout), layout is NATIVE))


def reconcile(values: Dict[str, Any], model, optimizer=None, source_labels: Optional[str] = None,
              layout: Optional[Layout] = None) -> ReconcileReport:
    """Decide, without loading anything, what of `values` goes where in `model` and `optimizer`.

    values: checkpoint entries by name (Parameters, Tensors or numpy arrays; other values such as
      appended strings are reported as ignored). source_labels: label order of the checkpoint's
      output layer, when known (ds2 meta, the source's hyper-parameters); default: the layout's.
      layout: None detects it among ds2's own and the model zoo's.
    """
    report = ReconcileReport()
    params = {name: param for name, param in model.parameters_and_names()}
    roles = model_roles(model)
    targets = _optimizer_targets(optimizer, model) if optimizer is not None else []
    state_kinds = set(STATE_KINDS) | {name.partition(".")[0] for name, _, key in targets if key[0] == "state"}

    arrays: Dict[str, np.ndarray] = {}
    optimizer_entries: Dict[Tuple[str, str, str], Tuple[str, np.ndarray]] = {}
    for name, value in values.items():
        array = _as_array(value)
        key = _optimizer_key(name, params, state_kinds)
        if array is None:
            report.ignored.append(Entry("model", name, "", None, None, f"not a tensor ({type(value).__name__})"))
        elif name in TRAINING_COUNTERS:
            report.ignored.append(Entry("model", name, "", tuple(array.shape), None, "training-loop counter"))
        elif key is not None:
            optimizer_entries[key] = (name, array)
        else:
            arrays[name] = array

    layout = layout or detect_layout(arrays, params)
    report.layout = layout.name
    if layout is NATIVE:
        found = _match_native(arrays, params, report)
    else:
        found = _match_layout(arrays, layout, roles, params, model, report)

    for name, param in params.items():
        if name not in found:
            report.missing.append(Entry("model", "", name, None, tuple(param.shape)))
            continue
        checkpoint_name, value = found[name]
        fitted = fit_shape(value, tuple(param.shape))
        if fitted is None:
            report.mismatched.append(Entry("model", checkpoint_name, name, tuple(value.shape), tuple(param.shape),
                                           _shape_hint(name, roles, tuple(value.shape), tuple(param.shape))))
            continue
        if fitted is not value:
            report.reshaped.append(Entry("model", checkpoint_name, name, tuple(value.shape), tuple(param.shape)))
        report.model_params[name] = fitted

    relabelled = _reorder_output_rows(report, roles, params, model, source_labels or layout.labels)
    if report.refused:
        return report   # nothing will be loaded: the optimizer's side would only bury the model's rows

    if optimizer is None:
        _ignore_optimizer_entries(report, optimizer_entries, "not loaded: no optimizer given")
    elif layout is not NATIVE or relabelled:
        report.optimizer_restart = (f"converted from the {layout.name} layout" if layout is not NATIVE
                                    else "output rows reordered to the model's labels")
        _ignore_optimizer_entries(report, optimizer_entries, "not loaded: restarting the optimizer")
    else:
        _match_optimizer(report, optimizer_entries, targets)
    return report


def _shape_hint(name: str, roles: Dict[str, str], stored: Tuple[int, ...], expected: Tuple[int, ...]) -> str:
    """Which configuration a shape mismatch of this parameter points to."""
    role = next((r for r, n in roles.items() if n == name), "")
    if role.startswith("rnn0.weight_ih") and len(stored) == 2 and stored[1] != expected[1]:
        return "first LSTM input = conv channels x frequency rows: check features.n_fft and the conv kernels/strides"
    if role.startswith("fc.") and stored[:1] != expected[:1]:
        return "output rows: check model.labels"
    if role.startswith("conv"):
        return "check model.conv_channels and the conv kernels"
    return "check model.rnn_hidden and model.rnn_merge"


def _match_native(arrays, params, report) -> Dict[str, Tuple[str, np.ndarray]]:
    found: Dict[str, Tuple[str, np.ndarray]] = {}
    for checkpoint_name, array in arrays.items():
        name = _native_name(checkpoint_name, params)
        if name is None or name in found:
            note = "no model parameter of this name" if name is None else f"a second entry for {name}"
            report.unexpected.append(Entry("model", checkpoint_name, "", tuple(array.shape), None, note))
            continue
        found[name] = (checkpoint_name, array)
        if tuple(array.shape) == tuple(params[name].shape):
            report.loaded += 1
    return found


def _match_layout(arrays, layout: Layout, roles, params, model, report) -> Dict[str, Tuple[str, np.ndarray]]:
    """Map another layout's entries to model names through roles; split flat LSTM weights; fill neutral roles."""
    by_role: Dict[str, Tuple[str, np.ndarray]] = {}
    for checkpoint_name, array in arrays.items():
        role = layout.role_of(checkpoint_name)
        if layout.ignores(checkpoint_name):
            report.ignored.append(Entry("model", checkpoint_name, "", tuple(array.shape), None,
                                        f"not used by ds2 ({layout.name})"))
        elif role is None or role in by_role:
            note = f"no {layout.name} rule for this name" if role is None else f"a second entry for role {role}"
            report.unexpected.append(Entry("model", checkpoint_name, "", tuple(array.shape), None, note))
        elif role.endswith(".flat") or role in roles:
            by_role[role] = (checkpoint_name, array)
        else:
            report.unexpected.append(Entry("model", checkpoint_name, "", tuple(array.shape), None,
                                           f"role {role}: the model has no such parameter"))

    for role, (checkpoint_name, array) in list(by_role.items()):
        if not role.endswith(".flat"):
            continue
        del by_role[role]
        layer = role[:-len(".flat")]
        weight_ih = params.get(roles.get(layer + ".weight_ih", ""))
        if weight_ih is None:
            report.unexpected.append(Entry("model", checkpoint_name, "", tuple(array.shape), None,
                                           f"the model has no LSTM layer {layer}"))
            continue
        hidden_size = weight_ih.shape[0] // 4
        try:
            parts = split_flat_lstm(array, weight_ih.shape[1], hidden_size)
        except ValueError as exc:
            # Its parameters are then also listed as missing: nothing else can provide them.
            report.mismatched.append(Entry("model", checkpoint_name, "", tuple(array.shape), None, str(exc)))
            continue
        for name, part in parts.items():
            by_role[f"{layer}.{name}"] = (checkpoint_name, part)

    found: Dict[str, Tuple[str, np.ndarray]] = {}
    cells = dict(model.cells_and_names())
    for role, name in roles.items():
        if role in by_role:
            checkpoint_name, value = by_role[role]
            found[name] = (checkpoint_name, value)
            report.mapped.append(Entry("model", checkpoint_name, name, tuple(value.shape), tuple(params[name].shape),
                                       f"role {role}"))
        elif layout.is_neutral(role):
            owner = cells.get(name.rpartition(".")[0])
            value = _neutral_value(role, tuple(params[name].shape), float(getattr(owner, "eps", 0.0)))
            found[name] = ("", value)
            report.filled.append(Entry("model", "", name, None, tuple(params[name].shape),
                                       f"{layout.name} has no {role}: neutral value"))
    return found


def _reorder_output_rows(report, roles, params, model, source_labels: Optional[str]) -> bool:
    """Put the output layer's rows in the model's label order. True when they were reordered."""
    target_labels = model.cfg.labels
    if not source_labels or source_labels == target_labels:
        return False
    output_names = [roles[role] for role in ("fc.weight", "fc.bias") if role in roles]
    try:
        rows = label_order(source_labels, target_labels)
    except ValueError as exc:
        for name in output_names:
            report.model_params.pop(name, None)
            report.mismatched.append(Entry("model", "", name, None, tuple(params[name].shape), str(exc)))
        return True
    for name in output_names:
        if name in report.model_params:
            report.model_params[name] = report.model_params[name][rows]
            report.mapped.append(Entry("model", "", name, None, tuple(params[name].shape),
                                       f"rows reordered from labels {source_labels!r} to {target_labels!r}"))
    return True


def _ignore_optimizer_entries(report, optimizer_entries, note: str) -> None:
    """One row for all of the checkpoint's optimizer entries: none of them is looked at."""
    if not optimizer_entries:
        return
    names = [name[len(OPTIMIZER_PREFIX):] if name.startswith(OPTIMIZER_PREFIX) else name
             for name, _ in optimizer_entries.values()]
    groups = sorted({name.partition(".")[0] + ".*" if "." in name else name for name in names})
    report.ignored.append(Entry("optimizer", f"{len(names)} entries: {', '.join(groups)}", "", None, None, note))


def _match_optimizer(report, optimizer_entries, targets) -> None:
    """Load the optimizer's state only if every entry it needs is there and fits."""
    import mindspore as ms

    loadable: List[Tuple[str, str, np.ndarray, np.ndarray, Any]] = []   # checkpoint name, name, stored, fitted, param
    unusable: List[str] = []
    missing_state: Dict[str, int] = {}   # kind -> how many parameters' state of that kind is missing
    used = set()
    for name, param, key in targets:
        shape = tuple(param.shape)
        optional = key[0] == "scalar" and key[1] in OPTIONAL_OPTIMIZER_STATE
        if key not in optimizer_entries and key[0] == "state":
            kind = name.partition(".")[0]
            missing_state[kind] = missing_state.get(kind, 0) + 1
            continue
        if key not in optimizer_entries:
            report.missing.append(Entry("optimizer", "", name, None, shape,
                                        "optional: the fresh value is kept" if optional else "required"))
            if not optional:
                unusable.append(f"{name} missing")
            continue
        used.add(key)
        checkpoint_name, value = optimizer_entries[key]
        fitted = fit_shape(value, shape)
        if fitted is None:
            report.mismatched.append(Entry(
                "optimizer", checkpoint_name, name, tuple(value.shape), shape,
                "optional: not loaded, the fresh value is kept (a stored schedule?)" if optional else "required"))
            if not optional:
                unusable.append(f"{name} has shape {_shape_text(tuple(value.shape))}, not {_shape_text(shape)}")
            continue
        loadable.append((checkpoint_name, name, value, fitted, param))
    for kind, count in missing_state.items():   # one row per kind, not one per parameter
        report.missing.append(Entry("optimizer", "", f"{kind}.* ({count} parameters)", None, None, "required"))
        unusable.append(f"{kind}.* of {count} parameters missing")
    for key, (checkpoint_name, value) in optimizer_entries.items():
        if key not in used:
            report.unexpected.append(Entry("optimizer", checkpoint_name, "", tuple(value.shape), None,
                                           "the optimizer has no such state"))
    if unusable:
        report.optimizer_restart = ", ".join(unusable[:3]) + (f" and {len(unusable) - 3} more"
                                                              if len(unusable) > 3 else "")
        for checkpoint_name, name, value, _, _ in loadable:
            report.ignored.append(Entry("optimizer", checkpoint_name, name, tuple(value.shape), None,
                                        "not loaded: restarting the optimizer"))
        return
    for checkpoint_name, name, value, fitted, param in loadable:
        if fitted is not value:
            report.reshaped.append(Entry("optimizer", checkpoint_name, name, tuple(value.shape), tuple(param.shape)))
        report.optimizer_state[name] = fitted.astype(ms.dtype_to_nptype(param.dtype))


# ---------------------------------------------------------------------------------------------
# Loading


def apply(report: ReconcileReport, model, optimizer=None) -> None:
    """Set the reconciled values. Refuses (CheckpointMismatch) when the model's weights do not fit."""
    import mindspore as ms

    if report.refused:
        raise CheckpointMismatch(report)
    for name, param in model.parameters_and_names():
        param.set_data(ms.Tensor(report.model_params[name], dtype=param.dtype))
    if optimizer is not None:
        for name, param in optimizer.parameters_and_names():
            if name in report.optimizer_state:
                param.set_data(ms.Tensor(report.optimizer_state[name], dtype=param.dtype))


def restore(values: Dict[str, Any], model, optimizer=None, source_labels: Optional[str] = None) -> ReconcileReport:
    """reconcile + apply: what ds2.checkpoint.restore does, for checkpoints of any version and layout."""
    report = reconcile(values, model, optimizer, source_labels)
    apply(report, model, optimizer)
    return report


def load_into(model, optimizer, path, source_labels: Optional[str] = None) -> ReconcileReport:
    """Read `path`, reconcile it with model (and optimizer, may be None), load, return the report.

    The labels stored in a ds2 checkpoint's meta are used as source_labels when none are given.
    """
    values, meta = read_checkpoint(path)
    if source_labels is None and meta:
        source_labels = meta.get("config", {}).get("model", {}).get("labels")
    return restore(values, model, optimizer, source_labels)
