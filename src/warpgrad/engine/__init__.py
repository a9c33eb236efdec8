"""The engine: meta-training loop, evaluation, checkpoints, results and plots.

:func:`train` runs one method of an experiment; :func:`run` runs several and writes the
combined ``results.json`` and ``learning_curves.png``. See :mod:`warpgrad.engine.loop` for the
seeding scheme and what a checkpoint holds.
"""

from warpgrad.engine.checkpoint import (
    CHECKPOINT_FILE,
    atomic_write,
    atomic_write_text,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from warpgrad.engine.interrupt import TrainingInterrupted
from warpgrad.engine.plots import plot_learning_curves
from warpgrad.engine.resolve import resolve_methods
from warpgrad.engine.results import (
    RESULTS_FILE,
    format_table,
    load_results,
    mean_ci95,
    read_metrics_csv,
    write_metrics_csv,
    write_results,
)
from warpgrad.engine.runs import default_out_dir, run
from warpgrad.engine.training import (
    METRICS_FILE,
    PLOT_FILE,
    initialize_checkpoint,
    train,
)

__all__ = [
    "CHECKPOINT_FILE",
    "METRICS_FILE",
    "PLOT_FILE",
    "RESULTS_FILE",
    "TrainingInterrupted",
    "atomic_write",
    "atomic_write_text",
    "checkpoint_path",
    "default_out_dir",
    "format_table",
    "initialize_checkpoint",
    "load_checkpoint",
    "load_results",
    "mean_ci95",
    "plot_learning_curves",
    "read_metrics_csv",
    "resolve_methods",
    "run",
    "save_checkpoint",
    "train",
    "write_metrics_csv",
    "write_results",
]
