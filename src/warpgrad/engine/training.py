"""Meta-training one method: its checkpoints and :func:`train` (state: :class:`~.state.TrainingState`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from warpgrad.distributed import Cluster, check_precision
from warpgrad.engine.checkpoint import check_config, checkpoint_path, load_checkpoint, save_checkpoint
from warpgrad.engine.interrupt import TrainingInterrupted, _DeferredInterrupt, check_finite
from warpgrad.engine.logs import check_logger, open_logger
from warpgrad.engine.resolve import _check_stop_after, resolve_experiment, resolve_profile
from warpgrad.engine.results import mean_ci95, mean_ci95_entry, write_metrics_csv
from warpgrad.engine.seeding import (
    TEST_SEED_OFFSET,
    _generator,
    _sample_tasks,
    _task_seeds,
    _TaskPrefetcher,
    check_seed,
    spare_core,
)
from warpgrad.engine.snapshots import clear_snapshots, save_snapshot, snapshot_due
from warpgrad.engine.state import CHECKPOINT_KEYS, TrainingState, run_config
from warpgrad.errors import FileFormatError
from warpgrad.experiments import Experiment, Profile
from warpgrad.tasks.base import family_split

METRICS_FILE = "metrics.csv"
PLOT_FILE = "learning_curves.png"


def load_run_checkpoint(
    experiment: Experiment, method: str, profile: Profile, seed: int, out_dir: str | Path
) -> dict[str, Any]:
    """Load ``method``'s checkpoint and check that it belongs to this run.

    Raises:
        ValueError: naming the file if it is missing or unreadable, or the mismatching field.
    """
    path = checkpoint_path(out_dir, method)
    checkpoint = load_checkpoint(path, keys=CHECKPOINT_KEYS)
    check_config(checkpoint, run_config(experiment, method, profile, seed), path)
    step = checkpoint["step"]
    if not isinstance(step, int) or not 0 <= step <= profile.meta_steps:
        raise FileFormatError(f"checkpoint {path} is at step {step!r}, outside 0..{profile.meta_steps}")
    return checkpoint


def initialize_checkpoint(
    experiment: str | Experiment,
    method: str,
    profile: str | Profile,
    seed: int,
    out_dir: str | Path,
    cluster: Cluster | None = None,
) -> Path:
    """Write ``method``'s step-0 checkpoint (a freshly built learner) and return its path.

    Resuming from it is identical to starting afresh, so a run can always be resumed. With
    several processes rank 0 writes it and every rank waits until it is there. Snapshots of an
    earlier run of ``method`` in ``out_dir`` are removed.
    """
    cluster = Cluster() if cluster is None else cluster
    exp = resolve_experiment(experiment)
    path = checkpoint_path(out_dir, method)
    if cluster.is_main:
        clear_snapshots(out_dir, method)
        state = TrainingState.start(exp, method, resolve_profile(exp, profile), seed)
        save_checkpoint(path, state.checkpoint())
    cluster.barrier()
    return path


# ------------------------------------------------------------------------------ train


def train(
    experiment: str | Experiment,
    method: str,
    profile: str = "quick",
    seed: int = 0,
    out_dir: str | Path = "runs",
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    settings: dict[str, str] | None = None,
    cluster: Cluster | None = None,
    prefetch: bool | None = None,
    precision: str = "fp32",
    log: str = "none",
) -> dict[str, Any] | None:
    """Meta-train one method, evaluate it on held-out tasks, and return its results entry.

    Writes ``out_dir/METHOD/metrics.csv`` (one row per validation) and
    ``out_dir/METHOD/checkpoint.pt`` (every ``profile.checkpoint_every`` steps and at the end);
    with ``profile.snapshot_every`` = N > 0 also ``out_dir/METHOD/snapshots/step-SSSSSS.pt``, the
    learner at step 0 and every N-th step (:mod:`warpgrad.engine.snapshots`).

    Args:
        experiment: an experiment name (see ``warpgrad list``) or an :class:`Experiment`.
        method: one of the experiment's methods.
        profile: ``smoke``, ``quick`` or ``paper``.
        seed: the run's seed; every generator is derived from it.
        out_dir: the run's output directory.
        resume: continue from ``out_dir/METHOD/checkpoint.pt``.
        stop_after: stop after this many meta-steps in this call, having saved a checkpoint.
        progress: show a progress bar on stderr.
        cluster: this process's rank and device (default: one CPU process); with several
            ranks every rank calls ``train`` and gets the same entry, rank 0 writes the files.
        prefetch: sample the next meta-batch's tasks in a background thread during each
            meta-step (the same tasks either way); ``None``: only when a core is spare
            (:func:`spare_core`), since on a fully used CPU the thread slows the meta-step more
            than it saves (measured in docs/distributed.md).
        log: ``none``, or ``tensorboard`` to write every metrics row to ``out_dir/tensorboard/METHOD``
            as well (:mod:`warpgrad.engine.logs`).
        precision: ``fp32``, or ``bf16`` to run meta-steps and evaluation under bf16 autocast
            (matrix products in bf16; see docs/distributed.md for what it does to meta-gradients).

    Returns:
        ``{"metric", "lower_is_better", "mean", "ci95", "n_tasks", "steps", "loss_mean",
        "loss_ci95", "wall_time_s", "test_time_s", "per_task", "history"}``, or ``None`` if
        ``stop_after`` stopped training before its last step.

    Raises:
        ValueError: unknown names, a bad seed, or (on resume) a missing checkpoint or one
            written with another experiment, method, profile or seed.
        TrainingInterrupted: on Ctrl-C, after saving a checkpoint of the last completed step.
    """
    exp = resolve_experiment(experiment)
    prof = resolve_profile(exp, profile, settings)
    exp.method(method)
    check_seed(seed)
    check_precision(precision)
    check_logger(log)
    _check_stop_after(stop_after)
    out_dir = Path(out_dir)
    directory = out_dir / method
    ckpt_path = checkpoint_path(out_dir, method)
    csv_path = directory / METRICS_FILE
    cluster = Cluster() if cluster is None else cluster
    main = cluster.is_main
    checkpoint = load_run_checkpoint(exp, method, prof, seed, out_dir) if resume else None

    state = TrainingState.start(exp, method, prof, seed, cluster)
    if checkpoint is not None:
        state.restore(checkpoint, ckpt_path)
        del checkpoint
    elif main:
        clear_snapshots(out_dir, method)
        save_checkpoint(ckpt_path, state.checkpoint())
    metric_key = f"val_{state.metric}"
    cluster.barrier()  # ranks finish loading data at different times; the training clock starts together
    cluster.clock["collective_s"] = 0.0
    clock = time.perf_counter()
    resumed_elapsed = state.elapsed_s

    def elapsed() -> float:
        return resumed_elapsed + time.perf_counter() - clock

    def save() -> None:
        started = time.perf_counter()
        state.elapsed_s = elapsed()
        if main:
            save_checkpoint(ckpt_path, state.checkpoint())
        state.clock["checkpoint_s"] += time.perf_counter() - started

    def snapshot() -> None:  # before the checkpoint of the same step: a resumed run rewrites later ones only
        if main and snapshot_due(state.step, prof.snapshot_every):
            started = time.perf_counter()
            config = run_config(exp, method, prof, seed)
            save_snapshot(out_dir, method, state.step, state.learner.state_dict(), config)
            state.clock["checkpoint_s"] += time.perf_counter() - started

    logger = open_logger(log, out_dir, method) if main else open_logger("none", out_dir, method)

    def write_history() -> None:
        if main:
            write_metrics_csv(csv_path, state.history)
            logger.log_history(state.history)

    bar = tqdm(
        total=prof.meta_steps,
        initial=state.step,
        desc=f"{exp.name}/{method}",
        unit="step",
        disable=not (progress and main),
        file=sys.stderr,
        mininterval=0.1 if sys.stderr.isatty() else 10.0,  # a log file gets a line every 10 s
        dynamic_ncols=True,
    )
    state.prefetcher = _TaskPrefetcher() if (spare_core() if prefetch is None else prefetch) else None
    state.precision = precision
    try:
        with _DeferredInterrupt(bar, announce=main) as interrupt:
            if state.step == 0 and not state.history:
                state.history.append(state.validation_row(0, elapsed(), {}))
            if state.step == 0:
                snapshot()
            write_history()  # on resume: rewritten from the checkpoint
            if state.history:
                bar.set_postfix({metric_key: f"{state.history[-1][metric_key]:.4g}"})
            if cluster.any(interrupt.requested):
                save()
                raise TrainingInterrupted(method, state.step, prof.meta_steps, ckpt_path)
            start = state.step
            while state.step < prof.meta_steps:
                train_metrics = state.meta_step()
                check_finite(method, state.step + 1, train_metrics)
                state.step += 1
                bar.update(1)
                last = state.step == prof.meta_steps
                if state.step % prof.eval_every == 0 or last:
                    state.history.append(state.validation_row(state.step, elapsed(), train_metrics))
                    write_history()
                    bar.set_postfix({metric_key: f"{state.history[-1][metric_key]:.4g}"})
                stop = stop_after is not None and state.step - start >= stop_after
                interrupted = cluster.any(interrupt.requested)
                snapshot()
                if state.step % prof.checkpoint_every == 0 or last or stop or interrupted:
                    save()
                if interrupted:
                    raise TrainingInterrupted(method, state.step, prof.meta_steps, ckpt_path)
                if stop and not last:
                    return None
    finally:
        bar.close()
        logger.close()
        if state.prefetcher is not None:
            state.prefetcher.close()

    seeds = _task_seeds(_generator(TEST_SEED_OFFSET + seed), prof.test_tasks)
    test_start = time.perf_counter()
    test_tasks = _sample_tasks(family_split(state.family, "test"), seeds, cluster.shard(prof.test_tasks))
    out = state.evaluate(test_tasks, prof.test_tasks)
    check_finite(method, state.step, {f"test {k}": float(v.mean()) for k, v in out.items()})
    test_time = time.perf_counter() - test_start
    timing = cluster.gather([state.timing()])  # every rank's, in rank order
    values = out[state.metric]
    mean, ci95 = mean_ci95(values)
    loss_mean, loss_ci95 = mean_ci95(out["loss"])
    return {
        "metric": state.metric,
        "lower_is_better": bool(state.family.lower_is_better),
        "mean": mean,
        "ci95": ci95,
        "n_tasks": int(values.numel()),
        "steps": state.step,
        "loss_mean": loss_mean,
        "loss_ci95": loss_ci95,
        "wall_time_s": round(state.elapsed_s, 3),
        "test_time_s": round(test_time, 3),
        "time_per_rank": timing,
        "precision": precision,
        "per_task": values.tolist(),
        "extra": {  # further per-task metrics the learner reports (e.g. continual forgetting)
            key: mean_ci95_entry(value) for key, value in out.items() if key not in (state.metric, "loss")
        },
        "history": state.history,
    }
