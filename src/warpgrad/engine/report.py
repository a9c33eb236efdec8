"""Reports across runs: ``results.json`` files of one or more seeds, with Student's t intervals.

:func:`load_runs` reads and checks results files, :func:`group_runs` groups them by experiment, profile
and settings, :func:`summarize` makes a :class:`Table` of a group (intervals over the test tasks of one
seed, or over the per-seed means of several; differences paired task by task or seed by seed) and
:func:`format_report` writes tables as text, Markdown, LaTeX or CSV. :func:`report_text` does it all,
for ``warpgrad report`` and the docs' generated tables (:mod:`warpgrad.engine.docs_tables`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from warpgrad.engine.results import RESULTS_FILE, read_results
from warpgrad.engine.stats import paired_t_interval, t_interval
from warpgrad.engine.tuning import add_tuned_column, chosen_values
from warpgrad.errors import FileFormatError, UsageError, one_line

FORMATS = ("text", "md", "latex", "csv")
REFERENCE_MARK = "—"
MethodNames = Sequence[str] | str | None  # a list, or names separated by commas


@dataclass(frozen=True)
class Run:
    """One checked ``results.json``: one experiment at one profile, settings and seed."""

    path: Path
    experiment: str
    profile: str
    settings: str
    seed: int
    metric: str
    lower_is_better: bool
    methods: dict[str, dict[str, Any]]
    measured: str = "test"  # what the metric is measured on (results' "measured"; RL: training episodes)


@dataclass
class Row:
    """One method's line of a :class:`Table`; ``None`` where there is no value (or no interval)."""

    method: str
    n_seeds: int
    n_tasks: list[int]  # per seed
    mean: float
    ci95: float | None
    diff: float | None = None  # method minus reference, paired
    diff_ci95: float | None = None
    is_reference: bool = False
    extras: dict[str, tuple[float, float | None] | None] = field(default_factory=dict)
    wall_time_s: float | None = None
    tuned: tuple[str, str] = ("", "")  # the setting --tune chose and its value(s), per seed

    @property
    def tasks_label(self) -> str:
        """The number of tasks per seed, or ``"MIN–MAX"`` where seeds differ."""
        low, high = min(self.n_tasks), max(self.n_tasks)
        return str(low) if low == high else f"{low}–{high}"


@dataclass
class Table:
    """The summary of one group of runs (same experiment, profile and settings)."""

    experiment: str
    profile: str
    settings: str
    seeds: list[int]
    metric: str
    lower_is_better: bool
    over: str  # "tasks" or "seeds": what the intervals are over
    reference: str
    extra_keys: list[str]
    rows: list[Row]
    measured: str = "test"

    @property
    def title(self) -> str:
        settings = f", {self.settings}" if self.settings else ""
        seeds = f"seed {self.seeds[0]}" if len(self.seeds) == 1 else "seeds " + ",".join(map(str, self.seeds))
        direction = "lower" if self.lower_is_better else "higher"
        run = f"{self.experiment} ({self.profile} profile{settings}, {seeds})"
        over = f"mean ± 95% CI (Student's t, over {self.over})"
        return one_line(f"{run}: {self.measured} {self.metric} ({direction} is better), {over}")


# ------------------------------------------------------------------------------ loading


def _results_files(path: Path) -> list[Path]:
    if not path.exists():
        raise UsageError(one_line(f"{path}: no such file or directory (expected a {RESULTS_FILE} or a directory)"))
    if not path.is_dir() or (path / RESULTS_FILE).exists():
        return [path if not path.is_dir() else path / RESULTS_FILE]
    found = sorted(path.rglob(RESULTS_FILE))
    if not found:
        raise UsageError(one_line(f"{path}: no {RESULTS_FILE} in this directory or below it"))
    return found


def read_run(path: str | Path) -> Run:
    """Read and check one results file; FileFormatError (one line, naming the file) for the first problem."""
    return run_from_results(read_results(path), Path(path))


def run_from_results(results: dict[str, Any], path: Path) -> Run:
    """A run from results already read and checked (:func:`~warpgrad.engine.results.read_results`)."""
    methods = results["methods"]
    if not methods:
        raise FileFormatError(f"{path}: 'methods' is empty")
    entries = list(methods.values())
    metric = results.get("metric") or next((e["metric"] for e in entries if isinstance(e.get("metric"), str)), None)
    lower = results.get("lower_is_better")
    lower = lower if lower is not None else next((e.get("lower_is_better") for e in entries), None)
    if not isinstance(metric, str):
        raise FileFormatError(f"{path}: 'metric' is missing or not a string")
    if not isinstance(lower, bool):
        raise FileFormatError(one_line(f"{path}: 'lower_is_better' is missing or not true/false (got {lower!r})"))
    return Run(
        path,
        results["experiment"],
        results["profile"],
        results.get("settings") or "",
        results["seed"],
        metric,
        lower,
        methods,
        results.get("measured") or "test",
    )


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """The runs in ``paths``: ``results.json`` files, or directories holding one or holding some below.

    Raises UsageError for a path without results files, FileFormatError for a malformed one.
    """
    files: dict[Path, Path] = {}  # each file once, though several paths hold it
    for path in paths:
        if not str(path).strip():
            raise UsageError("an empty path; give run directories or results.json files")
        for file in _results_files(Path(path)):
            files.setdefault(file.resolve(), file)
    return [read_run(file) for file in files.values()]


def group_runs(runs: Sequence[Run]) -> list[list[Run]]:
    """Runs grouped by (experiment, profile, settings), in order of first appearance, each sorted by seed.

    Raises UsageError for two runs of a group with the same seed or with different metrics.
    """
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        group = groups.setdefault((run.experiment, run.profile, run.settings), [])
        for other in group:
            if other.seed == run.seed:
                raise UsageError(one_line(f"{other.path} and {run.path} are both seed {run.seed} of the same run"))
            if (other.metric, other.lower_is_better) != (run.metric, run.lower_is_better):
                raise UsageError(one_line(f"{other.path} and {run.path} record different metrics for the same run"))
        group.append(run)
    return [sorted(group, key=lambda run: run.seed) for group in groups.values()]


# ------------------------------------------------------------------------------ summaries


def _paired(values: list[float], reference: list[float]) -> tuple[float | None, float | None]:
    """The paired difference ``values - reference``; None where the two do not pair."""
    if not values or len(values) != len(reference):
        return None, None
    return paired_t_interval(values, reference)


def _extra(entries: list[dict[str, Any]], key: str, over_seeds: bool) -> tuple[float, float | None] | None:
    """The extra metric ``key`` of a method's entries (one per seed) as mean and half-width; None if absent."""
    values = [e["extra"][key] for e in entries if e.get("extra", {}).get(key, {}).get("mean") is not None]
    if not values:
        return None
    if over_seeds:
        return t_interval([value["mean"] for value in values])
    return t_interval(values[0]["per_task"]) if "per_task" in values[0] else (float(values[0]["mean"]), None)


def _row(name: str, entries: dict[int, dict[str, Any]], over_seeds: bool) -> Row:
    """A method's row without the difference and extra columns; ``entries`` maps seed to results entry."""
    if over_seeds:
        mean, ci95 = t_interval([float(entry["mean"]) for entry in entries.values()])
    else:
        mean, ci95 = t_interval(next(iter(entries.values()))["per_task"])
    times = [float(entry["wall_time_s"]) for entry in entries.values() if entry.get("wall_time_s") is not None]
    n_tasks = [len(entry["per_task"]) for entry in entries.values()]
    tuned = chosen_values(entries.values())
    time = sum(times) / len(times) if times else None
    return Row(name, len(entries), n_tasks, mean, ci95, wall_time_s=time, tuned=tuned)


def _selected(group: Sequence[Run], methods: Sequence[str] | None, against: str | None) -> list[str]:
    """The methods to show, in order of first appearance; UsageError for an unknown method or reference."""
    present = list(dict.fromkeys(name for run in group for name in run.methods))
    if methods is not None:
        unknown = [name for name in methods if name not in present]
        if unknown:
            raise UsageError(f"--method {','.join(unknown)}: not in these results; they hold {', '.join(present)}")
        present = [name for name in present if name in methods]
        if not present:
            raise UsageError("--method: no methods selected")
    if against is not None and against not in present:
        raise UsageError(f"--against {against}: not among the methods shown ({', '.join(present)})")
    return present


def summarize(group: Sequence[Run], methods: Sequence[str] | None = None, against: str | None = None) -> Table:
    """A table of ``group``, runs of one experiment, profile and settings, one per seed (see :func:`group_runs`).

    ``methods`` selects the methods shown (default: all; in order of first appearance); ``against`` is the
    reference of the difference column (default: the best method by mean).

    Raises:
        UsageError: for a method or reference that is not in the runs.
    """
    if not group:
        raise UsageError("summarize needs at least one run")
    names = _selected(group, methods, against)
    first, over_seeds = group[0], len(group) > 1
    per_method = {name: {run.seed: run.methods[name] for run in group if name in run.methods} for name in names}
    rows = [_row(name, per_method[name], over_seeds) for name in names]
    best = (min if first.lower_is_better else max)(rows, key=lambda row: row.mean)
    reference = against if against is not None else best.method
    extra_keys = list(
        dict.fromkeys(
            key
            for name in names
            for entry in per_method[name].values()
            for key, value in entry.get("extra", {}).items()
            if isinstance(value, dict) and "mean" in value
        )
    )
    for row in rows:
        entries, reference_entries = per_method[row.method], per_method[reference]
        row.extras = {key: _extra(list(entries.values()), key, over_seeds) for key in extra_keys}
        row.is_reference = row.method == reference
        if row.is_reference:
            continue
        common = [seed for seed in entries if seed in reference_entries]
        if over_seeds:
            values = [float(entries[seed]["mean"]) for seed in common]
            row.diff, row.diff_ci95 = _paired(values, [float(reference_entries[seed]["mean"]) for seed in common])
        elif common:
            row.diff, row.diff_ci95 = _paired(entries[common[0]]["per_task"], reference_entries[common[0]]["per_task"])
    run_fields = (first.experiment, first.profile, first.settings, [run.seed for run in group], first.metric)
    over = "seeds" if over_seeds else "tasks"
    return Table(*run_fields, first.lower_is_better, over, reference, extra_keys, rows, first.measured)


# ------------------------------------------------------------------------------ formats


def format_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_value(mean: float | None, ci95: float | None) -> str:
    if mean is None:
        return "-"
    if ci95 is None:
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {ci95:.2g}"


def _format_diff(row: Row) -> str:
    if row.is_reference or row.diff is None:
        return REFERENCE_MARK if row.is_reference else "-"
    return f"{row.diff:+.4g}" if row.diff_ci95 is None else f"{row.diff:+.4g} ± {row.diff_ci95:.2g}"


def _cells(table: Table) -> tuple[list[str], list[list[str]]]:
    """Header and rows as display strings (text, Markdown and LaTeX)."""
    header = ["method", f"{table.metric}", f"diff vs {table.reference}", *table.extra_keys, "tasks", "seeds", "time"]
    rows = []
    for row in table.rows:
        extras = [format_value(*(row.extras[key] or (None, None))) for key in table.extra_keys]
        mean, diff, time = format_value(row.mean, row.ci95), _format_diff(row), format_time(row.wall_time_s)
        rows.append([row.method, mean, diff, *extras, row.tasks_label, str(row.n_seeds), time])
    add_tuned_column(header, rows, [row.tuned for row in table.rows])
    return header, rows


def _text(table: Table) -> str:
    header, rows = _cells(table)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    aligned = [[cells[0].ljust(widths[0]), *map(str.rjust, cells[1:], widths[1:])] for cells in [header, *rows]]
    head, *body = ["  ".join(cells) for cells in aligned]  # first column left-aligned, the others right-aligned
    return "\n".join([table.title, head, "-" * len(head), *body])


def _markdown(table: Table) -> str:
    header, rows = _cells(table)
    head, *body = ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in [header, *rows]]
    rule = "|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|"
    return "\n".join([f"**{table.title}**", "", head, rule, *body])


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SPECIAL |= {"\\": r"\textbackslash{}", "±": r"$\pm$", "—": "---", "–": "--"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def _latex(table: Table) -> str:
    header, rows = _cells(table)
    head, *body = [" & ".join(_latex_escape(cell) for cell in cells) + r" \\" for cells in [header, *rows]]
    begin = r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}"
    lines = [f"% {table.title}", begin, r"\toprule", head, r"\midrule", *body, r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    extras = [column for key in table.extra_keys for column in (key, f"{key}_ci95")]
    run = ["experiment", "profile", "settings", "metric", "over", "reference"]
    header = ["method", "mean", "ci95", "diff", "diff_ci95", *extras, "n_tasks", "n_seeds", "wall_time_s"]
    writer.writerow([*run, *header])
    group = [table.experiment, table.profile, table.settings, table.metric, table.over, table.reference]
    for row in table.rows:
        extras = [_number(v) for key in table.extra_keys for v in (row.extras[key] or (None, None))]
        diff = ("", "") if row.is_reference else (_number(row.diff), _number(row.diff_ci95))
        numbers = [_number(row.mean), _number(row.ci95), *diff, *extras]
        writer.writerow([*group, row.method, *numbers, row.tasks_label, row.n_seeds, _number(row.wall_time_s)])
    return buffer.getvalue().rstrip("\n")


_WRITERS = {"text": _text, "md": _markdown, "latex": _latex, "csv": _csv}


def _check_format(fmt: str) -> None:
    if fmt not in _WRITERS:
        raise UsageError(f"--format {fmt}: unknown; use one of {', '.join(FORMATS)}")


def format_report(tables: Sequence[Table], fmt: str = "text") -> str:
    """The tables in ``fmt`` (one of :data:`FORMATS`, else UsageError), separated by blank lines, no final newline."""
    _check_format(fmt)
    return "\n\n".join(_WRITERS[fmt](table) for table in tables)


def report_text(
    paths: Sequence[str | Path], fmt: str = "text", methods: MethodNames = None, against: str | None = None
) -> str:
    """The report on the runs in ``paths`` (see :func:`load_runs`): a table per group of runs, in format ``fmt``.

    ``methods`` (a list, or names separated by commas) selects methods, leaving out groups with none
    of them; ``against`` names the reference method of the difference column.

    Raises:
        UsageError: for a bad format, path, method or reference; FileFormatError for a bad file.
    """
    _check_format(fmt)
    if isinstance(methods, str):
        methods = [name.strip() for name in methods.split(",") if name.strip()]
        if not methods:
            raise UsageError("--method: give method names separated by commas")
    runs = load_runs(paths)
    if methods is not None:
        _selected(runs, methods, None)  # every name is in some run
    tables = []
    for group in group_runs(runs):
        names = None if methods is None else [name for name in methods if any(name in run.methods for run in group)]
        if names != []:  # a group without any of the methods asked for is left out
            tables.append(summarize(group, names, against))
    return format_report(tables, fmt)


def format_results(results: dict[str, Any], methods: Sequence[str] | None = None, fmt: str = "text") -> str:
    """The report of one run's results (what ``results.json`` holds), e.g. as a run prints it."""
    _check_format(fmt)
    run = run_from_results(results, Path(RESULTS_FILE))
    names = None if methods is None else [name for name in methods if name in run.methods]
    return format_report([summarize([run], names)], fmt)
