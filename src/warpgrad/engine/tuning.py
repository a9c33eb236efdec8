"""Settings chosen on validation tasks, one procedure for every table: ``--tune SETTING=GRID``.

``warpgrad run EXPERIMENT --tune meta_lr=A,B,C`` trains every method that has a meta learning
rate once per grid value, with all of its meta-learning-rate options (``meta_lr``, and WarpGrad's
``warp_lr`` and ``init_lr``) set to that value, each an ordinary resumable run in
``OUT/tuning/METHOD/meta_lr=VALUE``. Any other ``--set`` key can be tuned the same way
(``--tune ewc.lam=1,10,100`` tunes that method's option; an experiment option, every method's).
The value whose run ends with the best validation metric (the mean over the profile's validation
tasks after the last meta-step; ties go to the earlier grid value) is chosen, and that run's
entry goes into ``OUT/results.json`` with a ``tuning`` record of the grid, every value's
validation metric and the choice. Test tasks play no part in the choice: every grid run also
measures its test metric, but only the chosen one is reported. Methods the grid does not tune
(the baseline, for ``meta_lr``) run once, directly into ``OUT``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from warpgrad.engine.checkpoint import checkpoint_path
from warpgrad.engine.plots import plot_learning_curves
from warpgrad.engine.resolve import resolve_experiment, resolve_methods, resolve_profile
from warpgrad.engine.results import RESULTS_FILE, ResultsRecord, load_results
from warpgrad.errors import TrainingDiverged, UsageError

META_LR = "meta_lr"
META_LR_OPTIONS = ("meta_lr", "warp_lr", "init_lr")
TUNING_DIR = "tuning"
CRITERION = "validation {metric} after the last meta-step ({direction} is better; ties: the earlier grid value)"


@dataclass(frozen=True)
class Grid:
    """A setting and the values to try: ``meta_lr`` (every method's meta learning rates) or any
    ``--set`` key (``ewc.lam``: that method's; an experiment option: every method's)."""

    setting: str
    values: list[float]

    def methods(self, names: list[str]) -> list[str]:
        """Which of ``names`` this grid tunes (the others run once, untuned)."""
        if self.setting == META_LR:
            return [m for m in names if meta_lr_options(m)]
        owner = self.setting.split(".")[0]
        return [owner] if owner in names else list(names)

    def settings(self, method: str, value: float) -> dict[str, str]:
        """``--set`` overrides for ``method`` at ``value``."""
        if self.setting == META_LR:
            return {f"{method}.{option}": repr(value) for option in meta_lr_options(method)}
        return {self.setting: f"{value:g}"}

    def sets(self, key: str) -> bool:
        """Whether ``--set key`` sets what this grid tunes."""
        return key == self.setting or (self.setting == META_LR and key.split(".")[-1] in META_LR_OPTIONS)


def parse_grid(text: str) -> Grid:
    """``SETTING=V1,V2,...`` (``meta_lr=1e-3,3e-3,1e-2``): at least two distinct numbers, positive
    for ``meta_lr``."""
    name, equals, values = text.partition("=")
    name = name.strip()
    if not equals or not name:
        raise UsageError(f"--tune {text!r}: expected SETTING=V1,V2,... (e.g. {META_LR}=1e-3,3e-3,1e-2)")
    grid: list[float] = []
    for part in values.split(","):
        try:
            value = float(part)
        except ValueError:
            raise UsageError(f"--tune {text!r}: {part.strip()!r} is not a number") from None
        if not math.isfinite(value) or (name == META_LR and value <= 0):
            kind = "positive learning rate" if name == META_LR else "finite number"
            raise UsageError(f"--tune {text!r}: {part.strip()!r} is not a {kind}")
        if value in grid:
            raise UsageError(f"--tune {text!r}: {part.strip()!r} appears twice")
        grid.append(value)
    if len(grid) < 2:
        raise UsageError(f"--tune {text!r}: a grid needs at least two values")
    return Grid(name, grid)


def meta_lr_options(method: str) -> list[str]:
    """The options of ``method``'s config that are meta learning rates (none for the baseline)."""
    from warpgrad.methods.registry import config_fields, registered

    methods = registered()
    if method not in methods:
        return []
    fields = config_fields(methods[method].config)
    return [name for name in META_LR_OPTIONS if name in fields]


def grid_dir(out_dir: Path, method: str, setting: str, value: float) -> Path:
    return Path(out_dir) / TUNING_DIR / method / f"{setting}={value:g}"


def tuned_run(
    experiment: Any,
    methods: Any,
    profile: str,
    grid: Grid,
    seed: int = 0,
    out_dir: str | Path = "runs",
    settings: dict[str, str] | None = None,
    **run_options: Any,
) -> dict[str, Any] | None:
    """:func:`warpgrad.engine.runs.run` with each method's meta learning rate chosen on
    validation tasks from ``grid`` (module docstring). ``run_options`` go to every run
    (``resume``, ``progress``, ``cluster``, ...). Returns ``OUT``'s merged results, or ``None`` if
    ``stop_after`` stopped a run before it finished."""
    from warpgrad.engine.runs import run
    from warpgrad.engine.training import PLOT_FILE

    exp = resolve_experiment(experiment)
    names = resolve_methods(exp, methods)
    settings = dict(settings or {})
    tuned = grid.methods(names)
    fixed = [m for m in names if m not in tuned]
    if not tuned:
        raise UsageError(f"--tune {grid.setting}: none of {', '.join(names)} has a meta learning rate to tune")
    for key in settings:
        if grid.sets(key):
            raise UsageError(f"--set {key} and --tune {grid.setting} set the same thing: give one of them")
    resolve_profile(exp, profile, {**settings, **grid.settings(tuned[0], grid.values[0])})  # a bad key: now
    out_dir = Path(out_dir)
    prof = resolve_profile(exp, profile, settings)
    cluster = run_options.get("cluster")
    where = {"command": run_options.get("command")}
    if cluster is not None:
        where.update(device=cluster.device.type, processes=cluster.world_size)
    record = ResultsRecord(out_dir, exp, prof, seed, **where)
    write = cluster is None or cluster.is_main
    results = None
    for method in names:  # in the order given; a long run's table fills method by method
        if method in fixed:
            results = _run_one(run, exp, method, profile, seed, out_dir, settings, run_options)
            if results is None:
                return None
            continue
        for value in grid.values:
            if not _grid_run(run, exp, method, grid, value, profile, seed, out_dir, settings, run_options):
                return None
        entry = choose(
            method, [load_results(grid_dir(out_dir, method, grid.setting, v) / RESULTS_FILE) for v in grid.values], grid
        )
        results = record.add(
            {method: entry}, write=write, metric=entry["metric"], lower_is_better=entry["lower_is_better"]
        )
        if write:
            plot_learning_curves(results, out_dir / PLOT_FILE)
    return results


def _grid_run(
    run: Any,
    exp: Any,
    method: str,
    grid: Grid,
    value: float,
    profile: str,
    seed: int,
    out_dir: Path,
    settings: dict[str, str],
    run_options: dict[str, Any],
) -> bool:
    """``method`` trained at one grid value (skipped on resume if it finished; a divergence is
    reported and leaves no entry); False if ``stop_after`` stopped it."""
    directory = grid_dir(out_dir, method, grid.setting, value)
    resume = run_options.get("resume", False)
    done = load_results(directory / RESULTS_FILE)
    if resume and done is not None and method in done["methods"]:
        return True
    overrides = {**settings, **grid.settings(method, value)}
    try:
        return _run_one(run, exp, method, profile, seed, directory, overrides, run_options) is not None
    except TrainingDiverged as error:
        print(f"warpgrad: --tune: {method} at {grid.setting}={value:g} diverged ({error}); not a candidate")
        return True


def _run_one(
    run: Any,
    exp: Any,
    method: str,
    profile: str,
    seed: int,
    out_dir: Path,
    settings: dict[str, str],
    run_options: dict[str, Any],
) -> dict[str, Any] | None:
    """One method's run into ``out_dir``; on ``resume``, continued where it has a checkpoint and
    started afresh where an earlier invocation stopped before reaching it."""
    resume = run_options.get("resume", False) and checkpoint_path(out_dir, method).exists()
    return run(exp, [method], profile, seed, out_dir, settings=settings, **{**run_options, "resume": resume})


def choose(method: str, grid_results: list[dict[str, Any] | None], grid: Grid) -> dict[str, Any]:
    """``method``'s entry from the grid run with the best final validation metric, with its
    ``tuning`` record (a diverged run, which has no entry, has validation ``None``)."""
    entries = [None if r is None else r["methods"].get(method) for r in grid_results]
    finished = [e for e in entries if e is not None]
    if not finished:
        raise TrainingDiverged(f"--tune: {method} diverged at every {grid.setting} of the grid {grid.values}")
    metric, lower = finished[0]["metric"], finished[0]["lower_is_better"]
    validation = [None if e is None else _number(e["history"][-1].get(f"val_{metric}")) for e in entries]
    sign = 1.0 if lower else -1.0
    best = min(range(len(grid.values)), key=lambda i: (math.inf if validation[i] is None else sign * validation[i], i))
    record = {
        "setting": grid.setting,
        "options": list(grid.settings(method, grid.values[best])),
        "grid": list(grid.values),
        "validation": validation,
        "chosen": grid.values[best],
        "criterion": CRITERION.format(metric=metric, direction="lower" if lower else "higher"),
        "runs": f"{TUNING_DIR}/{method}/{grid.setting}=VALUE",
    }
    return {**entries[best], "tuning": record}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def chosen_values(entries: Iterable[dict[str, Any]]) -> tuple[str, str]:
    """(the tuned setting, the value(s) chosen) of a method's entries over seeds; ("", "") if untuned.
    A value at the grid's edge says so, ``0.01 (max)`` or ``0.001 (min)``: a wider grid might do better."""
    tunings = [entry["tuning"] for entry in entries if "tuning" in entry]
    if not tunings:
        return "", ""
    return tunings[0]["setting"], ",".join(dict.fromkeys(_with_edge(t["chosen"], t["grid"]) for t in tunings))


def _with_edge(chosen: float, grid: list[float]) -> str:
    edge = " (max)" if chosen == max(grid) else " (min)" if chosen == min(grid) else ""
    return f"{chosen:g}{edge}"


def add_tuned_column(header: list[str], rows: list[list[str]], tuned: list[tuple[str, str]]) -> None:
    """A report's column of chosen values, before its last three (tasks, seeds, time), if any row
    has one: ``SETTING (tuned)`` when every tuned row tuned the same setting, else ``tuned`` with
    ``setting=value`` cells."""
    settings = list(dict.fromkeys(name for name, _ in tuned if name))
    if not settings:
        return
    header.insert(-3, f"{settings[0]} (tuned)" if len(settings) == 1 else "tuned")
    for cells, (name, value) in zip(rows, tuned):
        cells.insert(-3, "-" if not name else value if len(settings) == 1 else f"{name}={value}")
