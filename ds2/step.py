"""The optimisation step: learning-rate schedule, optimizer, and the compiled training step.

One training step (compiled by MindSpore) computes the loss and gradients, measures the global gradient
norm, clips to train.grad_clip, and applies Adam only when loss and norm are finite (otherwise the step
counts as skipped). The learning rate is an input of the compiled step and assigned to the optimizer
inside the graph. Setting the optimizer's learning-rate Parameter from Python (`set_data`) between steps
does NOT work in MindSpore 2.7 GRAPH_MODE: each compiled graph (one per batch shape) keeps the value the
Parameter had when it was compiled, so with bucketed shapes every bucket would train at whatever warm-up
rate was current at its first batch. That freezes a schedule silently, while the weights still change.

Schedule: linear warm-up over warmup_steps, then lr / lr_anneal**epoch.

The training state (model, training wrapper, optimizer, compiled step) is built in one place,
build_training_state: `ds2 train`, `ds2 convert`, envcheck's checkpoint probe and the benchmarks
(bench/harness.py) all take it from there, so their checkpoints name the same parameters and their
optimizers are the same.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

from ds2 import distributed
from ds2.config import Config, TrainConfig


class TrainingState(NamedTuple):
    model: Any                            # ds2.model.DeepSpeech2
    network: Any                          # ds2.model.TrainNetwork: the model and its CTC loss
    optimizer: Any                        # build_optimizer's Adam
    train_step: Optional[Callable]        # configured_train_step's compiled step; None unless asked for


def build_training_state(cfg: Config, world_size: int = 1, compile_step: bool = True) -> TrainingState:
    """The model, its training wrapper and optimizer as cfg describes them, and (compile_step) the
    compiled step: what `ds2 train` trains and checkpoints. compile_step=False for what only reads or
    writes a checkpoint (convert, envcheck's probe): no step (train.conv_time_taps, which it applies,
    changes how a step computes the convolutions, not their parameters).

    The training wrapper comes before the optimizer: wrapping the model names its parameters as
    training does, and the optimizer names its state after them, so a checkpoint of one user of this
    function resumes in another.
    """
    from ds2.model import DeepSpeech2, TrainNetwork

    model = DeepSpeech2(cfg.model, cfg.features.n_bins)
    network = TrainNetwork(model)
    optimizer = build_optimizer(model, cfg.train)
    train_step = configured_train_step(network, optimizer, cfg, world_size) if compile_step else None
    return TrainingState(model, network, optimizer, train_step)


def learning_rate(train_cfg: TrainConfig, step: int, epoch: int) -> float:
    """Linear warm-up from lr/warmup_steps to lr over warmup_steps steps, then lr / anneal**epoch."""
    warmup = min(1.0, (step + 1) / train_cfg.warmup_steps) if train_cfg.warmup_steps > 0 else 1.0
    return train_cfg.lr * warmup / (train_cfg.lr_anneal ** epoch)


def build_optimizer(model, train_cfg: TrainConfig):
    """Adam (bias-corrected, like torch.optim.Adam) with L2 weight decay on weight matrices only.

    BatchNorm scales/shifts and biases are not decayed. The learning rate is a Parameter that
    the train step assigns every step (see make_train_step).
    """
    import mindspore as ms
    from mindspore import nn

    params = model.trainable_params()
    decay = [p for p in params if len(p.shape) > 1]
    no_decay = [p for p in params if len(p.shape) <= 1]
    groups = [{"params": decay, "weight_decay": train_cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return nn.Adam(groups, learning_rate=ms.Tensor(train_cfg.lr, ms.float32), eps=1e-8)


def dynamic_inputs(n_bins: int) -> dict:
    """The step's batch inputs with batch size, frames and label width left open: one compiled graph
    serves every bucket (train.shapes=dynamic)."""
    import mindspore as ms

    return dict(features=ms.Tensor(shape=[None, 1, n_bins, None], dtype=ms.float32),
                frames=ms.Tensor(shape=[None], dtype=ms.int32),
                labels=ms.Tensor(shape=[None, None], dtype=ms.int32),
                label_lengths=ms.Tensor(shape=[None], dtype=ms.int32))


def conv_time_taps(cfg) -> bool:
    """train.conv_time_taps where it applies: on CPU, where oneDNN convolves through im2col."""
    return cfg.train.conv_time_taps and cfg.train.device == "CPU"


def kernel(cfg, setting_key: str) -> str:
    """builtin or ds2's operator for a kernel setting (ds2.kernels.OPERATORS) where it applies
    (ds2.kernels.chosen_kernel)."""
    from ds2.kernels import chosen_kernel

    section, name = setting_key.split(".")
    return chosen_kernel(setting_key, getattr(getattr(cfg, section), name), cfg.train.device)


def use_configured_kernels(network, cfg) -> None:
    """The network (a TrainNetwork, or a DeepSpeech2 alone) computes as training's config asks:
    train.conv_time_taps and the kernel settings (ds2.kernels.OPERATORS), where they apply.
    The parameters stay the same."""
    from ds2.kernels import BUILTIN, OPERATORS

    model = getattr(network, "model", network)
    model.set_conv_time_taps(conv_time_taps(cfg))
    chosen = {key: kernel(cfg, key) for key in OPERATORS}
    if all(value == BUILTIN for value in chosen.values()):
        return
    from ds2 import native_ops

    if chosen["train.conv_kernel"] != BUILTIN:
        model.set_conv_operators(native_ops.ConvOperator)
    if chosen["train.lstm_kernel"] != BUILTIN:
        model.set_lstm_operator(native_ops.lstm_operator())
    if chosen["train.batch_norm_kernel"] != BUILTIN:
        model.set_batch_norm_operator(native_ops.batch_norm_operator())
    if chosen["train.mask_kernel"] != BUILTIN:
        model.set_mask_operator(native_ops.TimeMask())
    if chosen["train.ctc_kernel"] != BUILTIN and hasattr(network, "loss"):
        network.loss.set_operator(native_ops.ctc_operator())


def configured_train_step(network, optimizer, cfg, world_size: int = 1):
    """make_train_step as the config asks: train.grad_clip, train.shapes, train.recompute_rnn,
    train.conv_time_taps and the kernel settings."""
    use_configured_kernels(network, cfg)
    return make_train_step(network, optimizer, cfg.train.grad_clip, world_size,
                           dynamic_n_bins=cfg.features.n_bins if cfg.train.shapes == "dynamic" else 0,
                           recompute_rnn=cfg.train.recompute_rnn)


def make_train_step(network, optimizer, grad_clip: float, world_size: int = 1, dynamic_n_bins: int = 0,
                    recompute_rnn: bool = False):
    """Compiled step: (features, frames, labels, label_lengths, lr) -> (loss, grad_norm, applied).

    With world_size > 1 the loss and gradients are averaged over the workers before the norm is
    measured, so clipping, the finite check and the update are the same on every worker.
    dynamic_n_bins > 0 compiles one graph for all batch shapes with that many feature bins; 0
    compiles one graph per shape. recompute_rnn: the backward pass recomputes each BiLSTM layer's
    forward instead of keeping its activations (train.recompute_rnn).
    """
    import mindspore as ms
    from mindspore import ops

    if recompute_rnn:
        for layer in network.model.rnns:
            layer.recompute()
    grad_fn = ms.value_and_grad(network, None, optimizer.parameters)
    clip = ms.Tensor(grad_clip, ms.float32)
    gradient_mean = distributed.make_gradient_mean(optimizer.parameters, world_size)

    @ms.jit
    def train_step(features, frames, labels, label_lengths, lr):
        loss, grads = grad_fn(features, frames, labels, label_lengths)
        if gradient_mean is not None:
            loss, grads = gradient_mean(loss, grads)
        squares = [ops.reduce_sum(g * g) for g in grads]
        grad_norm = ops.sqrt(ops.addn(squares))
        scale = clip / ops.maximum(grad_norm, clip)
        grads = tuple(g * scale for g in grads)
        # With the gradient clipped to a finite norm, Adam moves each weight by about lr at most, so a finite
        # loss, norm and lr keep the weights finite: the step is applied only then.
        applied = ops.logical_and(ops.logical_and(ops.isfinite(loss), ops.isfinite(grad_norm)), ops.isfinite(lr))
        if applied:
            loss = ops.depend(loss, ops.assign(optimizer.learning_rate, lr))
            loss = ops.depend(loss, optimizer(grads))
        return loss, grad_norm, applied

    if dynamic_n_bins:
        train_step = ms.enable_dynamic(**dynamic_inputs(dynamic_n_bins))(train_step)
    return train_step
