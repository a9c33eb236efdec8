"""Run results: summary statistics, ``results.json``, ``metrics.csv`` and the comparison table.

``results.json`` describes one experiment at one profile and seed::

    {"experiment": "sine", "profile": "quick", "seed": 0, "metric": "mse",
     "lower_is_better": true,
     "methods": {"baseline": {"metric": "mse", "mean": ..., "ci95": ..., "n_tasks": 200,
                              "steps": 300, ...}, ...}}

Runs that cover some of the methods merge their entries into an existing file for the same
experiment, profile, seed and settings, under a lock on the directory, so concurrent runs of
different methods into one ``--out`` keep every entry. Every entry carries its ``provenance``
(:mod:`warpgrad.engine.provenance`). Intervals are Student's t with n - 1 degrees of freedom
(:mod:`warpgrad.engine.stats`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from warpgrad.engine.checkpoint import atomic_write_text, locked
from warpgrad.engine.interrupt import check_finite
from warpgrad.engine.stats import t_interval
from warpgrad.errors import FileFormatError, UsageError, one_line

RESULTS_FILE = "results.json"
RUN_FIELDS = ("experiment", "profile", "seed", "settings")


def mean_ci95(values: Sequence[float] | torch.Tensor) -> tuple[float, float | None]:
    """Mean and half-width of the 95% Student's t interval: ``t(0.975, n - 1) * std(ddof=1) / sqrt(n)``.

    The half-width is ``None`` for fewer than two values.

    Example:
        >>> mean_ci95([1.0, 2.0, 3.0])
        (2.0, 2.4841...)
    """
    return t_interval(values)


def mean_ci95_entry(values: Sequence[float] | torch.Tensor) -> dict[str, Any]:
    """:func:`mean_ci95` as the ``{"mean", "ci95", "per_task"}`` dict results entries hold under ``extra``."""
    mean, ci95 = mean_ci95(values)
    return {"mean": mean, "ci95": ci95, "per_task": [float(v) for v in torch.as_tensor(values).flatten()]}


# ------------------------------------------------------------------------------ results.json


def load_results(path: str | os.PathLike) -> dict[str, Any] | None:
    """The results in ``path``, or None if there is no such file (see :func:`read_results`)."""
    path = Path(path)
    return read_results(path) if path.exists() else None


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a results file.

    Raises:
        FileFormatError: one line naming the file and its first problem: unreadable, not UTF-8,
            invalid JSON, or not a complete results file (run fields, and per method a finite
            ``mean``, finite ``per_task`` values, a finite time, statistics under ``extra``).
    """
    path = Path(path)
    try:
        results = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise _bad(path, f"cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise _bad(path, f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    except ValueError as error:  # json.JSONDecodeError
        raise _bad(path, f"invalid JSON: {error}") from None
    _expect(isinstance(results, dict), path, f"not a JSON object (got {type(results).__name__})")
    for key in ("experiment", "profile"):
        _expect(isinstance(results.get(key), str), path, f"'{key}' is missing or not a string")
    seed = results.get("seed")
    _expect(isinstance(seed, int) and not isinstance(seed, bool), path, f"'seed' is not an integer (got {seed!r})")
    for key in ("settings", "measured"):
        value = results.get(key) or ""
        _expect(isinstance(value, str), path, f"'{key}' is not a string (got {value!r})")
    methods = results.get("methods")
    _expect(isinstance(methods, dict), path, "'methods' is missing or not an object: not a warpgrad results file")
    for name, entry in methods.items():
        _check_entry(path, name, entry)
    return results


def _bad(path: Path, problem: str) -> FileFormatError:
    return FileFormatError(one_line(f"{path}: {problem}"))


def _expect(condition: bool, path: Path, problem: str) -> None:
    if not condition:
        raise _bad(path, problem)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_numbers(path: Path, where: str, values: Any) -> None:
    """A non-empty list of finite numbers, or FileFormatError."""
    _expect(isinstance(values, list), path, f"{where} is not a list (got {type(values).__name__})")
    _expect(len(values) > 0, path, f"{where} is empty")
    for index, value in enumerate(values):
        _expect(_is_number(value), path, f"{where}[{index}] is not a finite number (got {value!r})")


def _check_entry(path: Path, name: str, entry: Any) -> None:
    """A method's results entry: a finite ``mean``, ``per_task`` numbers, optional time and extras."""
    where = f"methods.{name}"
    _expect(isinstance(entry, dict), path, f"{where} is not an object")
    _expect(_is_number(entry.get("mean")), path, f"{where}.mean is not a finite number (got {entry.get('mean')!r})")
    _expect("per_task" in entry, path, f"{where}.per_task is missing")
    _check_numbers(path, f"{where}.per_task", entry["per_task"])
    time = entry.get("wall_time_s")
    _expect(time is None or _is_number(time), path, f"{where}.wall_time_s is not a finite number (got {time!r})")
    extra = entry.get("extra", {})
    _expect(isinstance(extra, dict), path, f"{where}.extra is not an object")
    for key, value in extra.items():
        if not (isinstance(value, dict) and "mean" in value):
            continue  # a record (a tuning grid, meta-training details), not a statistic
        _expect(value["mean"] is None or _is_number(value["mean"]), path, f"{where}.extra.{key}.mean is not a number")
        if "per_task" in value:
            _check_numbers(path, f"{where}.extra.{key}.per_task", value["per_task"])


def check_compatible(results: dict[str, Any] | None, run: dict[str, Any], path: str | os.PathLike) -> None:
    """Raise UsageError if ``results`` belong to another experiment, profile, seed or settings than ``run``."""
    if results is None:
        return
    for name in RUN_FIELDS:
        if results.get(name) != run[name]:
            raise UsageError(
                f"{path} holds results for {name}={results.get(name)!r}, not {name}={run[name]!r}; use another --out"
            )


def merge_results(
    existing: dict[str, Any] | None, run: dict[str, Any], entries: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """``existing`` results (or a new file for ``run``) with ``entries`` added or replaced."""
    results = dict(existing) if existing is not None else {name: run[name] for name in RUN_FIELDS}
    for name in RUN_FIELDS:
        results[name] = run[name]
    for key in ("metric", "lower_is_better", "measured"):
        if key in run:
            results[key] = run[key]
    methods = dict(results.get("methods", {}))
    methods.update(entries)
    results["methods"] = methods
    return results


def check_entry_finite(method: str, entry: dict[str, Any]) -> None:
    """Raise :class:`~warpgrad.errors.TrainingDiverged` (:func:`check_finite`) if a method's result
    is not a finite number: never a finished run with ``null`` results."""
    metric = f"test {entry.get('metric', 'metric')}"
    values = {f"{metric} mean": entry.get("mean"), "test loss mean": entry.get("loss_mean")}
    values.update({f"{metric} per_task[{i}]": v for i, v in enumerate(entry.get("per_task", []))})
    check_finite(method, "the end of training (no result recorded)", {k: v for k, v in values.items() if v is not None})


class ResultsRecord:
    """A run's ``results.json``, the one path every runner records through.

    Created before any work, it checks that the file (if any) belongs to this experiment,
    profile, seed and settings; :meth:`add` re-reads it, merges finished methods' entries and
    writes it atomically, so an interrupted run keeps the methods it completed.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        experiment: Any,
        profile: Any,
        seed: int,
        command: str | None = None,
        device: str = "cpu",
        processes: int = 1,
        **info: Any,
    ):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / RESULTS_FILE
        self.experiment = experiment
        self.profile = profile
        self.where = {"command": command, "device": device, "processes": processes}
        self.info = {
            "experiment": getattr(experiment, "name", experiment),
            "profile": profile.name,
            "seed": seed,
            "settings": profile.settings,
            **info,
        }
        self.results = load_results(self.path)
        check_compatible(self.results, self.info, self.path)

    def provenance(self, method: str) -> dict[str, Any]:
        """``method``'s provenance: the resolved configuration (when the record was given the
        :class:`~warpgrad.experiments.Experiment` itself), versions, commit, command, hardware."""
        from warpgrad.engine.provenance import provenance
        from warpgrad.experiments.methods import run_configuration

        configuration = (
            run_configuration(self.experiment, self.profile, [method])
            if hasattr(self.experiment, "profiles")
            else {"experiment": self.info["experiment"], "profile": self.profile.name, "options": self.profile.options}
        )
        return provenance(configuration, **self.where)

    def add(self, entries: dict[str, dict[str, Any]], write: bool = True, **info: Any) -> dict[str, Any]:
        """Merge ``entries`` (method -> entry) into the file; ``info`` updates the run's fields
        (``metric``, ``lower_is_better``). Returns the merged results (written when ``write``;
        other ranks of a distributed run merge into their copy)."""
        self.info.update(info)
        for method, entry in entries.items():
            check_entry_finite(method, entry)
        if not write:  # other ranks of a distributed run merge into their copy
            self.results = merge_results(self.results, self.info, entries)
            return self.results
        entries = {  # an entry copied from another run (a tuning grid's) keeps that run's provenance
            method: {**entry, "provenance": entry.get("provenance") or self.provenance(method)}
            for method, entry in entries.items()
        }
        with locked(self.out_dir):  # concurrent runs into one directory: merge into what is on disk now
            existing = load_results(self.path)
            check_compatible(existing, self.info, self.path)
            self.results = merge_results(existing, self.info, entries)
            write_results(self.path, self.results)
        return self.results

    def remove(self, methods: Iterable[str]) -> None:
        """Drop ``methods``' entries from the file (a run started again with ``overwrite``)."""
        with locked(self.out_dir):
            existing = load_results(self.path)
            if existing is None or not set(methods) & set(existing["methods"]):
                return
            existing["methods"] = {k: v for k, v in existing["methods"].items() if k not in set(methods)}
            write_results(self.path, existing)
            self.results = existing


def write_results(path: str | os.PathLike, results: dict[str, Any]) -> None:
    """Write ``results`` as indented JSON, atomically. Non-finite floats become ``null``."""
    atomic_write_text(path, json.dumps(_finite(results), indent=2, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ------------------------------------------------------------------------------ metrics.csv


def history_columns(history: Iterable[dict[str, Any]]) -> list[str]:
    """Column names: the union of the rows' keys in order of first appearance."""
    columns: dict[str, None] = {}
    for row in history:
        for key in row:
            columns.setdefault(key, None)
    return list(columns)


def write_metrics_csv(path: str | os.PathLike, history: Sequence[dict[str, Any]]) -> None:
    """Write the history rows as CSV (atomically); cells a row lacks are left empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=history_columns(history), restval="", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a metrics CSV back: integers and floats parsed, empty cells dropped."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for raw in csv.DictReader(f):
            rows.append({k: _parse(v) for k, v in raw.items() if v != ""})
    return rows


def _parse(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# ------------------------------------------------------------------------------ table


def format_table(results: dict[str, Any], methods: Sequence[str] | None = None) -> str:
    """The comparison table of one run (``methods`` of it; default all) as ``warpgrad report`` prints it:
    per method the mean ± Student's t 95% interval over tasks and the paired difference to the best."""
    from warpgrad.engine.report import format_results

    return format_results(results, methods)
