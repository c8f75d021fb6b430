"""`ds2 train`: train (or resume) DeepSpeech2 with CTC in MindSpore GRAPH_MODE.

One training step (compiled once per batch shape) computes the loss and gradients, measures the
global gradient norm, clips to cfg.train.grad_clip, and applies Adam only when loss and norm are
finite (otherwise the step is counted as skipped). The learning rate is an input of the compiled
step and assigned to the optimizer inside the graph. Setting the optimizer's learning-rate
Parameter from Python (`set_data`) between steps does NOT work in MindSpore 2.7 GRAPH_MODE: each
compiled graph (one per batch shape) keeps the value the Parameter had when it was compiled, so
with bucketed shapes every bucket trains at whatever warm-up LR was current at its first batch.
That freezes a schedule silently, while the weights still change every step.

Schedule: linear warm-up over warmup_steps, then lr / lr_anneal**epoch.

Outputs under cfg.run_dir: config.yaml, checkpoints/ (see ds2.checkpoint), metrics.jsonl (one
JSON object per step, kind "train", and per dev evaluation, kind "dev"), curves.png.

`--resume` continues from the newest checkpoint: model, optimizer, schedule step and data
position are restored, metrics.jsonl is cut back to the checkpoint's step, and the next batch is
the one that would have followed the checkpoint, so the curves join up even after a SIGKILL.

Data parallel: with MindSpore's MS_ROLE / MS_SCHED_HOST / MS_SCHED_PORT / MS_WORKER_NUM set, the
same command is the scheduler or one worker of a data-parallel job (ds2.distributed): each worker
trains on its shard of the batches, gradients and loss are averaged over the workers inside the
compiled step, and rank 0 alone writes checkpoints, config.yaml, metrics.jsonl and the plot.
Every worker evaluates the dev set at epoch ends (so none waits on another for long); rank 0's
result is the one logged. Checkpoints store the number of workers, so `--resume` works with the
same or another number (ds2.distributed.resume_position).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from ds2 import checkpoint, distributed
from ds2.config import Config, apply_override, from_dict, save_config, to_dict

METRICS_FILE = "metrics.jsonl"  # rank r > 0 of a data-parallel job: metrics-rank<r>.jsonl
PLOT_FILE = "curves.png"


def add_arguments(parser) -> None:
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in run_dir from its newest readable checkpoint (its stored "
                             "config, plus any --set overrides); start a new run if there is none")
    parser.add_argument("--max-steps", type=int, default=0, metavar="N",
                        help="stop (with a checkpoint) once N steps are done in total; 0 = all epochs")


# ---------------------------------------------------------------------------------------------
# Environment


def available_cpus() -> int:
    """Cores this process may use: CPU affinity, capped by a cgroup CPU quota if there is one."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]  # cgroup v2
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        try:
            quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())  # cgroup v1
            period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            if quota > 0:
                cpus = min(cpus, max(1, math.ceil(quota / period)))
        except (OSError, ValueError):
            pass
    return cpus


def configure_mindspore(cfg: Config) -> int:
    """GRAPH_MODE on the configured device, CPU kernel threads = cfg.train.threads (0: all usable).

    MindSpore's default is 25 kernel threads whatever the machine has; ds2 sizes the pool to the
    cores it may use instead. (On the 2-core development machine the small preset's step took the
    same time with 1, 2 or 25 threads, so this is about not oversubscribing shared machines.)
    """
    import mindspore as ms

    threads = cfg.train.threads or available_cpus()
    ms.set_context(mode=ms.GRAPH_MODE)
    # Both settings are fixed once the runtime has started; a second stage run in the same
    # interpreter (tests) keeps the first ones.
    if ms.get_context("device_target") != cfg.train.device:
        ms.set_device(cfg.train.device)
    try:
        ms.device_context.cpu.op_tuning.threads_num(threads)
    except RuntimeError:
        pass
    ms.set_seed(cfg.train.seed)
    return threads


def fit_batch_to_memory(cfg: Config) -> Optional[str]:
    """Fewer buckets, then shorter batches, when the configured pair does not fit in memory.

    MindSpore keeps one compiled graph per batch shape with its own activation memory, so memory
    grows with train.max_batch_seconds and with train.num_buckets; envcheck/probes/memory.py holds
    the measured estimate and the choice (envcheck's memory probe reports the same). Returns an
    error message when not even the smallest setting fits. In a data-parallel job every worker must
    batch alike, so there the settings are only checked, never changed.
    """
    from envcheck.probes.memory import GIB, fit, usable_bytes

    usable = usable_bytes()
    if usable is None:
        return None
    settings = {"config": to_dict(cfg)}
    fitted = fit(settings, usable)
    if fitted is None:
        return (f"the model and batch do not fit in {usable / GIB:.1f} GiB even with few buckets and short "
                f"batches (python -m envcheck --stage train --only memory shows the estimate); give the "
                f"container more memory or choose a smaller model")
    configured = (cfg.train.num_buckets, cfg.train.max_batch_seconds)
    if (fitted["num_buckets"], fitted["batch_seconds"]) == configured:
        return None
    chosen = f"train.num_buckets={fitted['num_buckets']} train.max_batch_seconds={fitted['batch_seconds']:g}"
    if distributed.role():
        print(f"ds2 train: warning: train.num_buckets={configured[0]} and train.max_batch_seconds="
              f"{configured[1]:g} need more than the {usable / GIB:.1f} GiB here; every worker must batch "
              f"alike, so set them on all workers, e.g. --set {chosen.replace(' ', ' --set ')}", file=sys.stderr)
        return None
    print(f"ds2 train: train.num_buckets={configured[0]} and train.max_batch_seconds={configured[1]:g} need "
          f"more than the {usable / GIB:.1f} GiB this process may use; using {chosen} (about "
          f"{fitted['total_bytes'] / GIB:.1f} GiB; --set train.fit_memory=false keeps them)", file=sys.stderr)
    cfg.train.num_buckets = fitted["num_buckets"]
    cfg.train.max_batch_seconds = fitted["batch_seconds"]
    return None


# ---------------------------------------------------------------------------------------------
# Optimisation


def learning_rate(train_cfg, step: int, epoch: int) -> float:
    """Linear warm-up from lr/warmup_steps to lr over warmup_steps steps, then lr / anneal**epoch."""
    warmup = min(1.0, (step + 1) / train_cfg.warmup_steps) if train_cfg.warmup_steps > 0 else 1.0
    return train_cfg.lr * warmup / (train_cfg.lr_anneal ** epoch)


def build_optimizer(model, train_cfg):
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


def make_train_step(network, optimizer, grad_clip: float, world_size: int = 1):
    """Compiled step: (features, frames, labels, label_lengths, lr) -> (loss, grad_norm, applied).

    With world_size > 1 the loss and gradients are averaged over the workers before the norm is
    measured, so clipping, the finite check and the update are the same on every worker.
    """
    import mindspore as ms
    from mindspore import ops

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
        applied = ops.logical_and(ops.isfinite(loss), ops.isfinite(grad_norm))
        if applied:
            loss = ops.depend(loss, ops.assign(optimizer.learning_rate, lr))
            loss = ops.depend(loss, optimizer(grads))
        return loss, grad_norm, applied

    return train_step


# ---------------------------------------------------------------------------------------------
# Metrics log


class MetricsLog:
    """Append-only JSON lines, one object per line, flushed after every write."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: Dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> List[Dict[str, Any]]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut off by a kill: it and anything after it are dropped
        return records

    def truncate_after(self, step: int) -> None:
        """Keep only records up to `step` (resume rewinds to the checkpoint)."""
        kept = [r for r in self.read() if r["step"] <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)


# ---------------------------------------------------------------------------------------------
# The run


def load_sets(cfg: Config, splits, drop_unalignable: bool = False):
    """{split: UtteranceSet} from the manifests `ds2 preprocess` wrote (or the configured ones)."""
    from ds2.batching import UtteranceSet
    from ds2.data.manifest import read_manifest
    from ds2.features import FeatureCache
    from ds2.preprocess import feature_cache_dir, manifest_path

    cache = FeatureCache(feature_cache_dir(cfg), cfg.features)
    sets = {}
    for split in splits:
        path = manifest_path(cfg, split)
        utterances, problems = read_manifest(path, cfg.model.labels)
        if problems.total:
            print(f"{split} manifest {path}: {problems}", file=sys.stderr)
        sets[split] = UtteranceSet(utterances, cfg, cache, drop_unalignable)
        if sets[split].skipped_unalignable:
            print(f"{split}: {sets[split].skipped_unalignable} utterances skipped: more labels than "
                  f"output frames (CTC cannot align them)", file=sys.stderr)
    return sets


def run(cfg: Config, args) -> int:
    try:
        if distributed.role() == distributed.SCHEDULER:
            return distributed.run_scheduler()
        return train(cfg, args)
    except distributed.ClusterError as exc:
        print(f"ds2 train: {exc}", file=sys.stderr)
        return 1


def train(cfg: Config, args) -> int:
    import mindspore as ms
    from tqdm import tqdm

    from ds2.batching import Prefetcher
    from ds2.evaluate import evaluate_set
    from ds2.model import DeepSpeech2, TrainNetwork, count_parameters
    from ds2.plot import plot_curves

    run_dir = Path(cfg.run_dir)
    resume_from: Optional[Path] = None
    if args.resume:
        found = checkpoint.step_checkpoints(run_dir)
        if not found:
            print(f"ds2 train: --resume: no checkpoint yet in {checkpoint.checkpoint_dir(run_dir)}; "
                  f"starting a new run")
        for candidate in reversed(found):  # newest first; a damaged one falls back to the one before
            try:
                values, meta = checkpoint.load(candidate)
            except checkpoint.CorruptCheckpoint as exc:
                print(f"ds2 train: {exc}; trying the previous checkpoint", file=sys.stderr)
                continue
            resume_from = candidate
            break
        if found and resume_from is None:
            print(f"ds2 train: no readable checkpoint in {checkpoint.checkpoint_dir(run_dir)}", file=sys.stderr)
            return 1
        if resume_from is not None:
            cfg = from_dict(meta["config"])  # the run's own config, then this command's overrides
            for override in args.overrides:
                apply_override(cfg, override)
    elif checkpoint.step_checkpoints(run_dir):
        print(f"ds2 train: {run_dir} already has checkpoints; use --resume, or another run_dir "
              f"(--set run_dir=...)", file=sys.stderr)
        return 1

    if cfg.train.fit_memory:
        problem = fit_batch_to_memory(cfg)
        if problem:
            print(f"ds2 train: {problem}", file=sys.stderr)
            return 1
    threads = configure_mindspore(cfg)
    cluster = distributed.join(cfg.train.device)
    if cluster.distributed:
        distributed.stop_on_sigterm(cluster.rank)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cluster.writes_checkpoints:
        save_config(cfg, run_dir / "config.yaml")
    train_set = load_sets(cfg, ["train"], drop_unalignable=True)["train"]
    dev_set = load_sets(cfg, ["dev"])["dev"]
    sampler = train_set.sampler(cfg.train.seed, shuffle=True, rank=cluster.rank, world_size=cluster.world_size)
    load_batch = train_set.loader(sampler)
    steps_per_epoch = len(sampler)

    model = DeepSpeech2(cfg.model, cfg.features.n_bins)
    network = TrainNetwork(model)
    optimizer = build_optimizer(model, cfg.train)
    train_step = make_train_step(network, optimizer, cfg.train.grad_clip, cluster.world_size)
    # Rank 0 keeps the single-process name, so plots, eval and tools read it unchanged.
    metrics = MetricsLog(run_dir / (METRICS_FILE if cluster.rank == 0 else f"metrics-rank{cluster.rank}.jsonl"))

    step, epoch, batch_index, skipped = 0, 0, 0, 0
    best = None  # {"dev_wer", "dev_cer"} of best.ckpt
    if resume_from is not None:
        checkpoint.restore(values, model, optimizer)
        step, skipped = meta["step"], meta["skipped"]
        position = meta["position"]
        # Checkpoints written before data parallelism existed are single-process ones.
        epoch, batch_index, moved = distributed.resume_position(
            position["epoch"], position["batch"], position.get("world_size", 1), cluster.world_size,
            steps_per_epoch)
        best = checkpoint.best_metric(run_dir)
        metrics.truncate_after(step)
        print(f"resumed from {resume_from}: step {step}, epoch {epoch}, batch {batch_index}")
        if moved:
            print(f"ds2 train: {moved}")
    elif metrics.path.exists():
        metrics.path.unlink()  # a fresh run: no stale curve from an earlier attempt

    total_steps = cfg.train.epochs * steps_per_epoch
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    print(f"model: {count_parameters(model):,} parameters; train: {len(train_set)} utterances, "
          f"{steps_per_epoch} batches/epoch{' per worker' if cluster.distributed else ''}, shapes (batch, frames) {sampler.shapes()}; "
          f"dev: {len(dev_set)}; threads {threads}; {total_steps} steps")

    def save(metrics_now: Dict[str, Any]) -> Optional[Path]:
        """Rank 0 writes the checkpoint (the parameters are the same on every worker)."""
        if not cluster.writes_checkpoints:
            return None
        path = checkpoint.step_path(run_dir, step)
        checkpoint.save(path, model, optimizer, {
            "config": to_dict(cfg), "step": step, "skipped": skipped,
            "position": {"epoch": epoch, "batch": batch_index, "world_size": cluster.world_size},
            "metrics": metrics_now, "environment": checkpoint.environment()})
        checkpoint.prune(run_dir, cfg.train.keep_last)
        return path

    progress = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True,
                    disable=not cluster.writes_checkpoints)
    model.set_train(True)
    while epoch < cfg.train.epochs and step < total_steps:
        batches = sampler.epoch(epoch)[batch_index:]
        prefetch = Prefetcher(batches, load_batch)
        last_time = time.perf_counter()
        try:
            for padded in prefetch:
                lr = learning_rate(cfg.train, step, epoch)
                try:
                    loss, grad_norm, applied = train_step(
                        ms.Tensor(padded.features), ms.Tensor(padded.frames), ms.Tensor(padded.labels),
                        ms.Tensor(padded.label_lengths), ms.Tensor(lr, ms.float32))
                    loss, grad_norm, applied = float(loss.asnumpy()), float(grad_norm.asnumpy()), bool(applied.asnumpy())
                except RuntimeError as exc:
                    if cluster.distributed:  # a collective operation failed: another process is gone
                        raise distributed.step_failure(cluster.rank, exc) from None
                    raise
                now = time.perf_counter()
                speed = padded.audio_seconds / (now - last_time)
                last_time = now
                skipped += 0 if applied else 1
                step += 1
                batch_index += 1
                record = {"kind": "train", "step": step, "epoch": epoch, "batch": batch_index,
                          "loss": loss, "lr": lr, "grad_norm": grad_norm,
                          "audio_sec_per_sec": round(speed, 2), "skipped": skipped,
                          "time": round(time.time(), 3)}
                if cluster.distributed:
                    record.update(rank=cluster.rank, world_size=cluster.world_size)
                if cfg.train.log_utterance_ids:
                    record["utterance_ids"] = [train_set.utterances[i].id for i in padded.indices]
                if cfg.train.log_param_digest:
                    record["param_sha256"] = distributed.parameter_digest(model.trainable_params())
                metrics.append(record)
                progress.set_postfix(epoch=epoch, loss=f"{loss:.3f}", lr=f"{lr:.2e}", audio_s_per_s=f"{speed:.1f}")
                progress.update(1)
                if step % cfg.train.checkpoint_every == 0 and batch_index < steps_per_epoch:
                    save({"train_loss": loss})
                if step >= total_steps:
                    break
        finally:
            prefetch.close()
        if batch_index < steps_per_epoch:  # stopped by --max-steps inside the epoch
            save({"train_loss": loss})
            if cluster.writes_checkpoints:
                plot_curves(metrics.read(), run_dir / PLOT_FILE)
            break
        epoch, batch_index = epoch + 1, 0
        record = {"train_loss": loss}
        if epoch % cfg.train.eval_every_epochs == 0 or epoch == cfg.train.epochs:
            model.set_train(False)
            summary = evaluate_set(model, dev_set, cfg)["summary"]
            model.set_train(True)
            record.update(dev_cer=summary["cer"], dev_wer=summary["wer"])
            metrics.append({"kind": "dev", "step": step, "epoch": epoch, "dev_cer": summary["cer"],
                            "dev_wer": summary["wer"], "time": round(time.time(), 3)})
            progress.write(f"epoch {epoch}: dev CER {summary['cer']:.4f} WER {summary['wer']:.4f}")
        path = save(record)
        if checkpoint.is_better(record, best):
            best = {"dev_wer": record["dev_wer"], "dev_cer": record["dev_cer"]}
            if path is not None:
                checkpoint.mark_best(run_dir, path)
        if cluster.writes_checkpoints:
            plot_curves(metrics.read(), run_dir / PLOT_FILE)
    progress.close()
    best_text = f"best dev WER {best['dev_wer']:.4f} (CER {best['dev_cer']:.4f})" if best else "no dev evaluation"
    print(f"done: step {step}, {skipped} skipped updates, {best_text}; {run_dir}")
    return 0
