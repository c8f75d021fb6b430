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

Layouts: ds2's own names are the live model's; other code bases are tables in
ds2.checkpoint.layouts (roles), their arrays converted by ds2.checkpoint.transforms. The outcome is a
ds2.checkpoint.report.ReconcileReport; apply() sets its values, or refuses with CheckpointMismatch.
ds2 train --resume and ds2 eval do not come here: they load ds2's own checkpoints with
ds2.checkpoint.storage.restore, which takes exact names and shapes only.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ds2.checkpoint.layouts import (NATIVE, OPTIMIZER_SCALARS, OPTIONAL_OPTIMIZER_STATE,
                                    STATE_KINDS, TRAINING_COUNTERS, Layout, detect_layout, model_roles,
                                    native_name)
from ds2.checkpoint.report import CheckpointMismatch, Entry, ReconcileReport, shape_text
from ds2.checkpoint.storage import OPTIMIZER_PREFIX, read_checkpoint
from ds2.checkpoint.transforms import fit_shape, label_order, neutral_value, split_flat_lstm


def _as_array(value) -> Optional[np.ndarray]:
    """numpy value of a Parameter, Tensor or array; None for anything else (e.g. appended strings)."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "asnumpy"):
        return value.asnumpy()
    return None


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
        return ("state", STATE_KINDS.get(kind, kind), native_name(rest, model_names) or rest)
    if checkpoint_name.startswith(OPTIMIZER_PREFIX):
        return ("scalar", name, "")
    return None


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
        name = native_name(checkpoint_name, params)
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
            value = neutral_value(role, tuple(params[name].shape), float(getattr(owner, "eps", 0.0)))
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
                unusable.append(f"{name} has shape {shape_text(tuple(value.shape))}, not {shape_text(shape)}")
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


def load_into(model, optimizer, path, source_labels: Optional[str] = None) -> ReconcileReport:
    """Read `path`, reconcile it with model (and optimizer, may be None), load, return the report.

    The labels stored in a ds2 checkpoint's meta are used as source_labels when none are given.
    """
    values, meta = read_checkpoint(path)
    if source_labels is None and meta:
        source_labels = meta.get("config", {}).get("model", {}).get("labels")
    report = reconcile(values, model, optimizer, source_labels)
    apply(report, model, optimizer)
    return report
