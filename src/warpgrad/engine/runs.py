"""Running several methods of an experiment: :func:`run` writes the combined ``results.json`` and
``learning_curves.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from warpgrad.distributed import Cluster, check_precision
from warpgrad.engine.plots import plot_learning_curves
from warpgrad.engine.resolve import _check_stop_after, resolve_experiment, resolve_methods, resolve_profile
from warpgrad.engine.results import ResultsRecord
from warpgrad.engine.seeding import check_seed
from warpgrad.engine.training import PLOT_FILE, initialize_checkpoint, load_run_checkpoint, train
from warpgrad.experiments import Experiment


def default_out_dir(experiment: str, profile: str) -> Path:
    """``runs/EXPERIMENT-PROFILE``."""
    return Path("runs") / f"{experiment}-{profile}"


def run(
    experiment: str | Experiment,
    methods: str | Iterable[str] | None = None,
    profile: str = "quick",
    seed: int = 0,
    out_dir: str | Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    settings: dict[str, str] | None = None,
    cluster: Cluster | None = None,
    precision: str = "fp32",
) -> dict[str, Any] | None:
    """Train and evaluate several methods; write ``results.json`` and ``learning_curves.png``.

    Every argument (names, seed, existing results, checkpoints to resume) is checked before
    anything is trained. Each method's entry is merged into ``out_dir/results.json`` as soon
    as it finishes, so an interrupted run keeps the methods it completed. A fresh run first
    writes a step-0 checkpoint for every method, so any stop can be resumed with ``resume=True``.

    Args:
        methods: method names (a list or a comma-separated string); ``None`` or ``"all"``: all.
        out_dir: defaults to ``runs/EXPERIMENT-PROFILE``.
        Others: as for :func:`train` (with several processes every rank calls ``run``).

    Returns:
        The merged results (what ``results.json`` now holds), or ``None`` if ``stop_after``
        stopped training before every method finished.

    Raises:
        ValueError: as for :func:`train`, or if ``out_dir/results.json`` holds results for
            another experiment, profile or seed.
        TrainingInterrupted: on Ctrl-C, after saving a checkpoint.
    """
    exp = resolve_experiment(experiment)
    prof = resolve_profile(exp, profile, settings)
    names = resolve_methods(exp, methods)
    check_seed(seed)
    check_precision(precision)
    _check_stop_after(stop_after)
    out_dir = default_out_dir(exp.name, prof.name) if out_dir is None else Path(out_dir)
    if resume:
        for name in names:
            load_run_checkpoint(exp, name, prof, seed, out_dir)
    record = ResultsRecord(out_dir, exp.name, prof, seed)
    results = None
    cluster = Cluster() if cluster is None else cluster
    if not resume:
        for name in names:
            initialize_checkpoint(exp, name, prof, seed, out_dir, cluster)

    for name in names:
        entry = train(
            exp,
            name,
            prof,
            seed,
            out_dir,
            resume=True,
            stop_after=stop_after,
            progress=progress,
            cluster=cluster,
            precision=precision,
        )
        if entry is None:
            return None
        results = record.add(
            {name: entry}, write=cluster.is_main, metric=entry["metric"], lower_is_better=entry["lower_is_better"]
        )
        if cluster.is_main:
            plot_learning_curves(results, out_dir / PLOT_FILE)
    return results
