"""`ds2 train`: train (or resume) DeepSpeech2 with CTC in MindSpore GRAPH_MODE.

The loop: batches from ds2.batching (length buckets, prefetched by a thread), the compiled step from
ds2.step, a checkpoint (ds2.checkpoint) and then a dev evaluation (ds2.inference) at every epoch end, a
checkpoint every train.checkpoint_every steps, and one metrics record per step. The run folder is held
(ds2.files.hold) for the whole run: a second command writing into it is refused.

Outputs under cfg.run_dir: config.yaml, checkpoints/ (see ds2.checkpoint), metrics.jsonl (one
JSON object per step, kind "train", and per dev evaluation, kind "dev"), curves.png.

`--resume` continues from the newest readable checkpoint: model, optimizer, schedule step and data
position are restored, metrics.jsonl is cut back to the checkpoint's step, and the next batch is
the one that would have followed the checkpoint, so the curves join up even after a SIGKILL.

Bad data never ends a run: a batch with an utterance whose audio cannot be read, or is longer than
its manifest says, is skipped (the shapes stay fixed), counted and named in the log.

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
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from ds2 import distributed, files, memory
from ds2.checkpoint import storage
from ds2.config import Config, count, save_config, to_dict, with_overrides
from ds2.errors import UserError, first_line
from ds2.metrics import describe_skipped, read_metrics_log

METRICS_FILE = "metrics.jsonl"  # rank r > 0 of a data-parallel job: metrics-rank<r>.jsonl
PLOT_FILE = "curves.png"


def add_arguments(parser) -> None:
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in run_dir from its newest readable checkpoint (its stored "
                             "config, plus any --set overrides); start a new run if there is none")
    parser.add_argument("--max-steps", type=count, default=0, metavar="N",
                        help="stop (with a checkpoint) once N steps are done in total; 0 = all epochs")


def fit_batch_to_memory(cfg: Config) -> None:
    """Fewer buckets, then shorter batches, when the configured pair does not fit in memory.

    Memory grows with train.max_batch_seconds and, with train.shapes=static (one compiled graph per
    batch shape, each with its own activation memory), with train.num_buckets; ds2.memory holds the estimate and
    the choice (envcheck's memory probe reports the same). In a data-parallel job every worker must
    batch alike, so there the settings are only checked, never changed.
    """
    usable = memory.usable_bytes()
    if usable is None:
        return
    fitted = memory.fit(cfg, usable)
    if fitted is None:
        raise UserError(f"the model and batch do not fit in {usable / memory.GIB:.1f} GiB even with few buckets and "
                        f"short batches (python -m envcheck --stage train --only memory shows the estimate); give "
                        f"the container more memory or choose a smaller model")
    configured = (cfg.train.num_buckets, cfg.train.max_batch_seconds)
    if (fitted.num_buckets, fitted.batch_seconds) == configured:
        return
    chosen = f"train.num_buckets={fitted.num_buckets} train.max_batch_seconds={fitted.batch_seconds:g}"
    if distributed.role():
        print(f"ds2 train: warning: train.num_buckets={configured[0]} and train.max_batch_seconds="
              f"{configured[1]:g} need more than the {usable / memory.GIB:.1f} GiB here; every worker must batch "
              f"alike, so set them on all workers, e.g. --set {chosen.replace(' ', ' --set ')}", file=sys.stderr)
        return
    print(f"ds2 train: train.num_buckets={configured[0]} and train.max_batch_seconds={configured[1]:g} need "
          f"more than the {usable / memory.GIB:.1f} GiB this process may use; using {chosen} (about "
          f"{fitted.total_bytes / memory.GIB:.1f} GiB; --set train.fit_memory=false keeps them)", file=sys.stderr)
    cfg.train.num_buckets = fitted.num_buckets
    cfg.train.max_batch_seconds = fitted.batch_seconds


# ---------------------------------------------------------------------------------------------
# Metrics log


class MetricsLog:
    """Append-only JSON lines, one object per line, flushed after every write."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: Dict[str, Any]) -> None:
        files.append_line(self.path, record)

    def read(self) -> List[Dict[str, Any]]:
        """The records; lines that are not records (cut off by a kill, damaged) are skipped and named on stderr."""
        if not self.path.exists():
            return []
        records, skipped = read_metrics_log(self.path)
        if skipped:
            print(f"ds2: {describe_skipped(self.path, skipped)}", file=sys.stderr)
        return records

    def truncate_after(self, step: int) -> None:
        """Keep only records up to `step` (resume rewinds to the checkpoint)."""
        kept = [r for r in self.read() if r["step"] <= step]
        files.write_json_lines(self.path, kept)


# ---------------------------------------------------------------------------------------------
# The run


def claim_run_folder(run_dir: Path) -> None:
    """This process becomes the run folder's one writer (ds2.files.hold), and what a killed writer left
    in it and in its checkpoints/ is swept."""
    # Workers of a data-parallel job other than rank 0 write their metrics-rank<r>.jsonl without the lock,
    # but only once their model is built, seconds after rank 0 swept the run folder here (on joining).
    files.hold(run_dir, "train")
    files.sweep(storage.checkpoint_dir(run_dir), held=True)


def dev_summary(model, dev_set, cfg: Config, epoch: int) -> Optional[Dict[str, Any]]:
    """The dev evaluation's summary, or None, said in one warning line, when no dev utterance could be
    scored (all left out for bad data): training goes on, and this epoch does not compete for best.ckpt."""
    from ds2.inference import evaluate_set

    try:
        return evaluate_set(model, dev_set, cfg)["summary"]
    except ValueError as exc:  # ds2.metrics.error_rates: no reference left to score against
        print(f"ds2 train: warning: epoch {epoch}: no dev score ({first_line(exc)}; see the utterances left out "
              f"above); training goes on and best.ckpt stays the best scored epoch", file=sys.stderr)
        return None


def run(cfg: Config, args) -> int:
    if distributed.role() == distributed.SCHEDULER:
        return distributed.run_scheduler()
    return train(cfg, args)


def train(cfg: Config, args) -> int:
    import mindspore as ms

    from ds2.batching import Prefetcher
    from ds2.data.sets import load_sets, sweep_feature_cache
    from ds2.model import count_parameters
    from ds2.plot import plot_curves
    from ds2.progress import progress
    from ds2.runtime import configure_mindspore
    from ds2.step import build_training_state, learning_rate

    run_dir = Path(cfg.run_dir)
    if not distributed.role():  # a worker of a data-parallel job learns whether it writes once it joined
        claim_run_folder(run_dir)
    resume_from: Optional[Path] = None
    if args.resume:
        found = storage.step_checkpoints(run_dir)
        if not found:
            print(f"ds2 train: --resume: no checkpoint yet in {storage.checkpoint_dir(run_dir)}; "
                  f"starting a new run")
        damaged = []
        for candidate in reversed(found):  # newest first; a damaged one falls back to the one before
            try:
                values, meta = storage.load(candidate)
            except storage.CorruptCheckpoint as exc:
                damaged.append(str(exc))
                continue
            resume_from = candidate
            break
        if found and resume_from is None:
            raise UserError(f"no readable checkpoint in {storage.checkpoint_dir(run_dir)}: all {len(found)} are "
                            f"damaged ({damaged[0]}); move the folder away to start afresh")
        for problem in damaged:
            print(f"ds2 train: skipped a damaged checkpoint: {problem}", file=sys.stderr)
        if resume_from is not None:
            cfg = with_overrides(meta["config"], args.overrides)  # the run's own config + this command's --set
    elif storage.step_checkpoints(run_dir):
        raise UserError(f"{run_dir} already has checkpoints; use --resume, or another run_dir (--set run_dir=...)")

    # The data first: a missing manifest is the one thing to say, not after a memory adjustment. The
    # sets read the batch settings from cfg when they cut batches, so fitting afterwards still applies.
    sets = load_sets(cfg, ["train", "dev"], drop_unalignable=True)
    train_set, dev_set = sets["train"], sets["dev"]
    if cfg.train.fit_memory:
        fit_batch_to_memory(cfg)
    threads = configure_mindspore(cfg)
    cluster = distributed.join(cfg.train.device)
    if cluster.distributed:
        distributed.stop_on_sigterm(cluster.rank)
        if cluster.writes_checkpoints:
            claim_run_folder(run_dir)
    sweep_feature_cache(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cluster.writes_checkpoints:
        save_config(cfg, run_dir / "config.yaml")
    sampler = train_set.sampler(cfg.train.seed, shuffle=True, rank=cluster.rank, world_size=cluster.world_size)
    load_batch = train_set.loader(sampler)
    steps_per_epoch = len(sampler)

    model, _, optimizer, train_step = build_training_state(cfg, cluster.world_size)
    # Rank 0 keeps the single-process name, so plots, eval and tools read it unchanged.
    metrics = MetricsLog(run_dir / (METRICS_FILE if cluster.rank == 0 else f"metrics-rank{cluster.rank}.jsonl"))

    step, epoch, batch_index, skipped = 0, 0, 0, 0
    bad_batches, bad_utterances = 0, set()
    best = None  # {"dev_wer", "dev_cer"} of best.ckpt
    if resume_from is not None:
        storage.restore(values, model, optimizer)
        step, skipped = meta["step"], meta["skipped"]
        position = meta["position"]
        # Checkpoints written before data parallelism existed are single-process ones.
        epoch, batch_index, moved = distributed.resume_position(
            position["epoch"], position["batch"], position.get("world_size", 1), cluster.world_size,
            steps_per_epoch)
        best = storage.best_metric(run_dir)
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
          f"{steps_per_epoch} batches/epoch{' per worker' if cluster.distributed else ''}, shapes (batch, frames) {sampler.shapes()} "
          f"({'one compiled graph for all' if cfg.train.shapes == 'dynamic' else 'a compiled graph each'}); "
          f"dev: {len(dev_set)}; threads {threads}; {total_steps} steps")

    def save(metrics_now: Dict[str, Any]) -> Optional[Path]:
        """Rank 0 writes the checkpoint (the parameters are the same on every worker)."""
        if not cluster.writes_checkpoints:
            return None
        path = storage.step_path(run_dir, step)
        storage.save(path, model, optimizer, {
            "config": to_dict(cfg), "step": step, "skipped": skipped,
            "position": {"epoch": epoch, "batch": batch_index, "world_size": cluster.world_size},
            "metrics": metrics_now, "environment": storage.environment()})
        storage.prune(run_dir, cfg.train.keep_last)
        return path

    bar = progress(total=total_steps, initial=step, unit="step", disable=not cluster.writes_checkpoints)
    model.set_train(True)
    loss = float("nan")
    while epoch < cfg.train.epochs and step < total_steps:
        batches = sampler.epoch(epoch)[batch_index:]
        prefetch = Prefetcher(batches, load_batch)
        last_time = time.perf_counter()
        try:
            for padded in prefetch:
                if padded.left_out:
                    # A worker that skipped a step alone would leave the others waiting in the AllReduce
                    # until MS_NODE_TIMEOUT, so a data-parallel job stops at once and says why.
                    if cluster.distributed:
                        raise UserError(f"bad data in epoch {epoch}, batch {batch_index}: "
                                        f"{'; '.join(why for _, why in padded.left_out)}; run ds2 preprocess again")
                    batch_index += 1
                    bad_batches += 1
                    bad_utterances.update(index for index, _ in padded.left_out)
                    bar.write(f"ds2 train: skipped a batch of epoch {epoch} for bad data: "
                              f"{'; '.join(why for _, why in padded.left_out)}")
                    last_time = time.perf_counter()
                    continue
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
                bar.set_postfix(epoch=epoch, loss=f"{loss:.3f}", lr=f"{lr:.2e}", audio_s_per_s=f"{speed:.1f}")
                bar.update(1)
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
        # The epoch's checkpoint comes first: an evaluation that fails or is killed loses no training.
        path = save(record)
        if epoch % cfg.train.eval_every_epochs == 0 or epoch == cfg.train.epochs:
            model.set_train(False)
            summary = dev_summary(model, dev_set, cfg, epoch)
            model.set_train(True)
            if summary is not None:
                record.update(dev_cer=summary["cer"], dev_wer=summary["wer"])
                metrics.append({"kind": "dev", "step": step, "epoch": epoch, "dev_cer": summary["cer"],
                                "dev_wer": summary["wer"], "time": round(time.time(), 3)})
                bar.write(f"epoch {epoch}: dev CER {summary['cer']:.4f} WER {summary['wer']:.4f}")
        if storage.is_better(record, best):
            best = {"dev_wer": record["dev_wer"], "dev_cer": record["dev_cer"]}
            path = save(record)  # again, with the dev scores a resumed run compares the next epochs with
            if path is not None:
                storage.mark_best(run_dir, path)
        if cluster.writes_checkpoints:
            plot_curves(metrics.read(), run_dir / PLOT_FILE)
    bar.close()
    best_text = f"best dev WER {best['dev_wer']:.4f} (CER {best['dev_cer']:.4f})" if best else "no dev evaluation"
    bad_text = (f"; {bad_batches} batches skipped for bad data ({len(bad_utterances)} utterances, named above)"
                if bad_batches else "")
    print(f"done: step {step}, {skipped} skipped updates{bad_text}, {best_text}; {run_dir}")
    return 0
