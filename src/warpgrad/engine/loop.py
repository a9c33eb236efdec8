"""The meta-training loop: any meta-learner on any task family, resumable bit for bit.

Randomness comes only from explicit generators derived from the run's ``seed``. Every task gets
two seeds of its own: one to sample the task, one for the generator its training batches are drawn
from (:class:`~warpgrad.tasks.base.SeededTask`). A task's data therefore never depends on the
other tasks of its meta-batch, on the order a method visits them, or on which process runs it,
which is what lets a meta-batch be split across processes (:mod:`warpgrad.distributed`) and
still give the one-process result.

* training tasks: their seeds come from ``torch.Generator().manual_seed(seed)``;
* the generator passed to ``meta_step`` (for what a method draws itself, e.g. replay sampling):
  a fresh one per meta-step, seeded from ``manual_seed(seed + 1)``;
* validation tasks, drawn once: seeds from ``manual_seed(1_000_000 + seed)``;
* final test tasks: seeds from ``manual_seed(2_000_000 + seed)`` (every method of a run sees the
  same ones);
* every evaluation: batch seeds from a fresh ``manual_seed(3_000_000 + seed)``, so evaluating
  never perturbs training and repeats exactly.

A checkpoint holds the step, the learner's ``state_dict()``, both training generators' states,
the global torch RNG state, the validation history and the run's config; restoring it continues
the run exactly as if it had never stopped (on CPU, bit for bit) with any number of processes.

With several processes (``torchrun``; see :mod:`warpgrad.distributed`) every rank samples and
runs only its shard of each meta-batch and of each evaluation; gradients and metrics are
averaged over the ranks and per-task results gathered, so all ranks hold the same state; only
rank 0 writes files and shows progress.

The code lives in :mod:`~warpgrad.engine.seeding` (seeds, task sampling),
:mod:`~warpgrad.engine.interrupt` (divergence, Ctrl-C), :mod:`~warpgrad.engine.resolve` (a run's
arguments), :mod:`~warpgrad.engine.training` (:func:`train`, the run's state and checkpoints) and
:mod:`~warpgrad.engine.runs` (:func:`run`); this module re-exports their names.

Example:
    >>> entry = train("sine", "baseline", "smoke", seed=0, out_dir=Path("runs/demo"))
    >>> entry["metric"], entry["n_tasks"]
    ('mse', 8)
"""

from __future__ import annotations

from warpgrad.engine.checkpoint import CHECKPOINT_FILE, checkpoint_path
from warpgrad.engine.interrupt import (
    TrainingDiverged,
    TrainingInterrupted,
    _DeferredInterrupt,
    check_finite,
)
from warpgrad.engine.resolve import (
    _check_stop_after,
    resolve_experiment,
    resolve_methods,
    resolve_profile,
)
from warpgrad.engine.runs import (
    default_out_dir,
    run,
)
from warpgrad.engine.seeding import (
    EVAL_SEED_OFFSET,
    MAX_SEED,
    STEP_SEED_OFFSET,
    TASK_SEED_BOUND,
    TASK_SEED_OFFSET,
    TEST_SEED_OFFSET,
    VAL_SEED_OFFSET,
    _draw_seed,
    _generator,
    _sample_tasks,
    _seeded,
    _task_seeds,
    _TaskPrefetcher,
    check_seed,
    spare_core,
)
from warpgrad.engine.state import CHECKPOINT_FORMAT, TrainingState, run_config
from warpgrad.engine.training import (
    METRICS_FILE,
    PLOT_FILE,
    initialize_checkpoint,
    load_run_checkpoint,
    train,
)

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "EVAL_SEED_OFFSET",
    "MAX_SEED",
    "METRICS_FILE",
    "PLOT_FILE",
    "STEP_SEED_OFFSET",
    "TASK_SEED_BOUND",
    "TASK_SEED_OFFSET",
    "TEST_SEED_OFFSET",
    "TrainingDiverged",
    "TrainingInterrupted",
    "VAL_SEED_OFFSET",
    "_DeferredInterrupt",
    "TrainingState",
    "_TaskPrefetcher",
    "_check_stop_after",
    "run_config",
    "_draw_seed",
    "_generator",
    "_sample_tasks",
    "_seeded",
    "_task_seeds",
    "check_finite",
    "check_seed",
    "checkpoint_path",
    "default_out_dir",
    "initialize_checkpoint",
    "load_run_checkpoint",
    "resolve_experiment",
    "resolve_methods",
    "resolve_profile",
    "run",
    "spare_core",
    "train",
]
