"""Running several methods of an experiment: :func:`run` writes the combined ``results.json`` and
``learning_curves.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from warpgrad.distributed import Cluster, check_precision
from warpgrad.engine.checkpoint import remove_stale_temp_files
from warpgrad.engine.logs import check_logger
from warpgrad.engine.outdir import check_not_existing, check_out_dir, removed_on_failure
from warpgrad.engine.plots import plot_learning_curves
from warpgrad.engine.resolve import _check_stop_after, resolve_experiment, resolve_methods, resolve_profile
from warpgrad.engine.results import ResultsRecord
from warpgrad.engine.seeding import check_seed
from warpgrad.engine.training import PLOT_FILE, initialize_checkpoint, load_run_checkpoint, train
from warpgrad.errors import UsageError
from warpgrad.experiments import Experiment


def default_out_dir(experiment: str, profile: str, seed: int = 0) -> Path:
    """``runs/EXPERIMENT-PROFILE/seed-SEED``: seeds of one experiment side by side, reported
    together by ``warpgrad report runs/EXPERIMENT-PROFILE``."""
    return Path("runs") / f"{experiment}-{profile}" / f"seed-{seed}"


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
    overwrite: bool = False,
    log: str = "none",
    command: str | None = None,
) -> dict[str, Any] | None:
    """Train and evaluate several methods; write ``results.json`` and ``learning_curves.png``.

    Every argument (names, seed, existing results, checkpoints to resume) is checked before
    anything is trained. Each method's entry is merged into ``out_dir/results.json`` as soon
    as it finishes, so an interrupted run keeps the methods it completed. A fresh run first
    writes a step-0 checkpoint for every method, so any stop can be resumed with ``resume=True``.

    Args:
        methods: method names (a list or a comma-separated string); ``None`` or ``"all"``: all.
        out_dir: defaults to ``runs/EXPERIMENT-PROFILE/seed-SEED``.
        overwrite: start afresh methods that already ran in ``out_dir`` (else that is refused:
            continue them with ``resume``).
        command: the command line recorded in each entry's provenance (default: ``sys.argv``).
        Others: as for :func:`train` (with several processes every rank calls ``run``).

    Returns:
        The merged results (what ``results.json`` now holds), or ``None`` if ``stop_after``
        stopped training before every method finished.

    Raises:
        UsageError: as for :func:`train`, if ``out_dir`` cannot be an output directory, if
            ``out_dir/results.json`` holds results for another experiment, profile, seed or
            settings, or if a method already ran there (without ``resume``/``overwrite``).
        FileFormatError: a corrupted, truncated or mismatched checkpoint or results file.
        TrainingDiverged: a non-finite value in training or evaluation.
        TrainingInterrupted: on Ctrl-C, after saving a checkpoint.
    """
    exp = resolve_experiment(experiment)
    prof = resolve_profile(exp, profile, settings)
    names = resolve_methods(exp, methods)
    check_seed(seed)
    check_precision(precision)
    check_logger(log)
    _check_stop_after(stop_after)
    if resume and overwrite:
        raise UsageError("--resume continues a run and --overwrite replaces it: give one of them")
    out_dir = check_out_dir(default_out_dir(exp.name, prof.name, seed) if out_dir is None else out_dir)
    cluster = Cluster() if cluster is None else cluster
    if resume:
        for name in names:
            load_run_checkpoint(exp, name, prof, seed, out_dir)
    where = {"command": command, "device": cluster.device.type, "processes": cluster.world_size}
    record = ResultsRecord(out_dir, exp, prof, seed, **where)
    if not resume and not overwrite:
        check_not_existing(out_dir, names, record.results)
    with removed_on_failure(out_dir, names, enabled=cluster.is_main and not resume):
        if cluster.is_main:
            remove_stale_temp_files(out_dir)
        if not resume:
            if overwrite and cluster.is_main:
                record.remove(names)
            for name in names:
                initialize_checkpoint(exp, name, prof, seed, out_dir, cluster)

    results = None
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
            log=log,
        )
        if entry is None:
            return None
        results = record.add(
            {name: entry}, write=cluster.is_main, metric=entry["metric"], lower_is_better=entry["lower_is_better"]
        )
        if cluster.is_main:
            plot_learning_curves(results, out_dir / PLOT_FILE)
    return results
