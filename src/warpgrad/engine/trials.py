"""Runs trial experiments (:class:`~warpgrad.experiments.base.TrialExperiment`): each method is
one training run of minutes, built by its ``MethodSpec`` and run by ``trial.run(seed, method_dir,
progress)``, which returns its results entry.

Methods run one after another; each entry is recorded in ``results.json`` as soon as its method
finishes and the curves of every method so far are redrawn (``curves.png``). A method's directory
(``out_dir/METHOD``, for what a trial keeps, e.g. learned weights and ``metrics.csv``) is removed
if its trial fails, so a failed method leaves nothing half-written.

Most trials have no checkpoints: an interrupted method is run again. A
:class:`~warpgrad.experiments.base.TrialExperiment` with ``resumable=True`` has trials whose
``run`` also takes ``resume`` and ``stop_after`` (meta-steps of this call) and returns ``None``
when stopped; their directories (and checkpoints) are kept when they stop or are interrupted, and
``--resume`` continues every method that has no entry yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from warpgrad.engine.curves import plot_curves
from warpgrad.engine.outdir import check_out_dir, removed_on_failure, start_fresh
from warpgrad.engine.results import RESULTS_FILE, ResultsRecord, format_table, write_metrics_csv
from warpgrad.engine.threads import torch_threads

CHECKPOINTS = True  # for the experiments that say resumable=True (see warpgrad.cli.run)
UNIT = "meta-steps"
CURVES_FILE = "curves.png"
METRICS_FILE = "metrics.csv"


def run(
    experiment: Any,
    methods: list[str],
    profile: Any,
    seed: int,
    out_dir: str | Path,
    progress: bool = True,
    overwrite: bool = False,
    command: str | None = None,
    resume: bool = False,
    stop_after: int | None = None,
) -> dict[str, Any] | None:
    """Run ``methods`` of a trial experiment; write and return the merged results (``None`` when
    ``stop_after`` stopped a method before its end)."""
    from warpgrad.engine.resolve import _check_stop_after
    from warpgrad.errors import UsageError

    resumable = getattr(experiment, "resumable", False)
    if (resume or stop_after is not None) and not resumable:
        raise UsageError(
            f"{experiment.name}'s methods have no checkpoints (minutes each): --resume and --stop-after "
            "are not available; run it again instead"
        )
    _check_stop_after(stop_after)
    out_dir = check_out_dir(out_dir)
    record = ResultsRecord(out_dir, experiment, profile, seed, command=command)
    if not resume:
        start_fresh(record, methods, overwrite)
    results: dict[str, Any] = record.results or {}
    options = {"resume": resume, "stop_after": stop_after} if resumable else {}
    with torch_threads(profile.options.get("threads")):
        for method in methods:
            if resume and method in (record.results or {}).get("methods", {}):
                continue  # finished before
            method_dir = out_dir / method
            # a resumable method's directory is kept once it holds a checkpoint to resume from
            checkpointed = (lambda: (method_dir / "checkpoint.pt").exists()) if resumable else None
            with removed_on_failure(out_dir, [method], keep_if=checkpointed):
                trial = experiment.method(method).build(profile)
                method_dir.mkdir(parents=True, exist_ok=True)
                entry = trial.run(seed, method_dir, progress, **options)
                if entry is None:
                    return None
                write_metrics_csv(method_dir / METRICS_FILE, entry["history"])
                results = record.add({method: entry}, metric=entry["metric"], lower_is_better=entry["lower_is_better"])
            column, xlabel, ylabel, log_y = experiment.curve
            plot_curves([results], out_dir / CURVES_FILE, column, xlabel, ylabel, log_y)
    return results


def table(results: dict[str, Any]) -> str:
    return format_table(results)


def outputs(out_dir: str | Path) -> str:
    """What a trial run writes, for the CLI."""
    out_dir = Path(out_dir)
    return (
        f"results: {out_dir / RESULTS_FILE}\ncurves: {out_dir / CURVES_FILE}\n"
        f"per-method {METRICS_FILE} (and what each method keeps): {out_dir}/METHOD/"
    )


def after_seeds(out_dirs: list[Path]) -> str:
    """After ``--seeds``: every seed's curves in one plot, next to the seeds' directories."""
    from warpgrad.engine.results import load_results
    from warpgrad.experiments import get_experiment

    results = [r for r in (load_results(d / RESULTS_FILE) for d in out_dirs) if r is not None]
    if not results:
        return "no results to draw curves from"
    column, xlabel, ylabel, log_y = get_experiment(results[0]["experiment"]).curve
    path = out_dirs[0].parent / CURVES_FILE
    plot_curves(results, path, column, xlabel, ylabel, log_y)
    return f"curves over {len(results)} seeds: {path}"
