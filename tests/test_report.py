"""Reports across runs (warpgrad.engine.report) and the docs' generated tables (warpgrad.engine.docs_tables)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import pytest
from scipy import stats

from warpgrad.engine import docs_tables
from warpgrad.engine.report import (
    FORMATS,
    format_report,
    group_runs,
    load_runs,
    read_run,
    report_text,
    summarize,
)
from warpgrad.errors import FileFormatError, UsageError

# per_task values of three methods at three seeds; "warpgrad" tracks "maml" task by task (paired)
PER_TASK = {
    0: {
        "maml": [0.50, 0.90, 0.30, 0.70, 0.60],
        "warpgrad": [0.45, 0.86, 0.24, 0.66, 0.57],
        "leap": [0.62, 0.81, 0.55, 0.73, 0.64],
    },
    1: {
        "maml": [0.55, 0.80, 0.35, 0.75, 0.65],
        "warpgrad": [0.52, 0.74, 0.33, 0.70, 0.60],
        "leap": [0.60, 0.85, 0.50, 0.70, 0.66],
    },
    2: {
        "maml": [0.48, 0.95, 0.28, 0.72, 0.58],
        "warpgrad": [0.47, 0.90, 0.21, 0.69, 0.55],
        "leap": [0.66, 0.79, 0.52, 0.75, 0.61],
    },
}
FORGETTING = {"maml": [0.2, 0.3, 0.1, 0.2, 0.25], "warpgrad": [0.1, 0.15, 0.05, 0.12, 0.1]}


def mean(values):
    return sum(values) / len(values)


def t_half_width(values):
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean(values), scale=stats.sem(values))
    return (high - low) / 2


def entry(per_task, wall_time=10.0, forgetting=None):
    extra = (
        {} if forgetting is None else {"forgetting": {"mean": mean(forgetting), "ci95": 0.1, "per_task": forgetting}}
    )
    return {
        "metric": "mse",
        "mean": mean(per_task),
        "ci95": 0.1,
        "n_tasks": len(per_task),
        "steps": 100,
        "wall_time_s": wall_time,
        "per_task": per_task,
        "extra": extra,
    }


def write_run(directory: Path, seed: int, methods=None, lower_is_better=True, **fields) -> Path:
    """A results.json in ``directory`` for ``seed`` (methods: name -> per_task, default PER_TASK[seed])."""
    methods = PER_TASK[seed] if methods is None else methods
    results = {
        "experiment": "sine",
        "profile": "quick",
        "seed": seed,
        "settings": "",
        "metric": "mse",
        "lower_is_better": lower_is_better,
        "methods": {
            name: entry(values, 10.0 + seed, FORGETTING.get(name) if seed == 0 else None)
            for name, values in methods.items()
        },
        **fields,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "results.json"
    path.write_text(json.dumps(results), encoding="utf-8")
    return path


@pytest.fixture
def three_seeds(tmp_path):
    for seed in PER_TASK:
        write_run(tmp_path / "runs" / f"seed{seed}", seed)
    return tmp_path / "runs"


def rows_of(table):
    return {row.method: row for row in table.rows}


# ------------------------------------------------------------------------------ statistics


def test_one_seed_interval_is_over_tasks(tmp_path):
    (group,) = group_runs(load_runs([write_run(tmp_path, 0)]))
    table = summarize(group)
    assert table.over == "tasks" and table.seeds == [0]
    for name, values in PER_TASK[0].items():
        row = rows_of(table)[name]
        assert row.mean == pytest.approx(mean(values), rel=1e-12)
        assert row.ci95 == pytest.approx(t_half_width(values), rel=1e-10)
        assert (row.n_seeds, row.n_tasks) == (1, [5])
    forgetting = rows_of(table)["maml"].extras["forgetting"]
    assert forgetting == pytest.approx((mean(FORGETTING["maml"]), t_half_width(FORGETTING["maml"])), rel=1e-10)
    assert rows_of(table)["leap"].extras["forgetting"] is None


def test_several_seeds_interval_is_over_seed_means(three_seeds):
    (group,) = group_runs(load_runs([three_seeds]))
    table = summarize(group)
    assert table.over == "seeds" and table.seeds == [0, 1, 2]
    for name in ["maml", "warpgrad", "leap"]:
        seed_means = [mean(PER_TASK[seed][name]) for seed in PER_TASK]
        row = rows_of(table)[name]
        assert row.mean == pytest.approx(mean(seed_means), rel=1e-12)
        assert row.ci95 == pytest.approx(t_half_width(seed_means), rel=1e-10)
        assert (row.n_seeds, row.n_tasks, row.wall_time_s) == (3, [5, 5, 5], pytest.approx(11.0))
    assert "over seeds" in table.title and "seeds 0,1,2" in table.title


def test_seeds_without_a_method_are_not_counted(tmp_path):
    write_run(tmp_path / "a", 0)
    write_run(tmp_path / "b", 1, {"maml": PER_TASK[1]["maml"]})
    write_run(tmp_path / "c", 2)
    (group,) = group_runs(load_runs([tmp_path]))
    leap = rows_of(summarize(group, against="maml"))["leap"]
    leap_means = [mean(PER_TASK[seed]["leap"]) for seed in (0, 2)]
    assert leap.n_seeds == 2 and leap.mean == pytest.approx(mean(leap_means))
    maml_means = [mean(PER_TASK[seed]["maml"]) for seed in (0, 2)]
    difference = stats.ttest_rel(leap_means, maml_means).confidence_interval(0.95)
    assert leap.diff_ci95 == pytest.approx((difference.high - difference.low) / 2, rel=1e-10)


def test_paired_difference_over_tasks_is_scipys_paired_interval(tmp_path):
    (group,) = group_runs(load_runs([write_run(tmp_path, 0)]))
    table = summarize(group)
    assert table.reference == "warpgrad"  # the lowest mse
    maml, warpgrad = PER_TASK[0]["maml"], PER_TASK[0]["warpgrad"]
    row = rows_of(table)["maml"]
    paired = stats.ttest_rel(maml, warpgrad).confidence_interval(0.95)
    assert row.diff == pytest.approx(mean(maml) - mean(warpgrad), rel=1e-12)
    assert row.diff_ci95 == pytest.approx((paired.high - paired.low) / 2, rel=1e-10)
    unpaired = stats.ttest_ind(maml, warpgrad).confidence_interval(0.95)
    assert row.diff_ci95 < (unpaired.high - unpaired.low) / 2 / 5  # pairing removes the task-to-task spread
    assert rows_of(table)["warpgrad"].is_reference and rows_of(table)["warpgrad"].diff is None


def test_paired_difference_over_seeds(three_seeds):
    (group,) = group_runs(load_runs([three_seeds]))
    row = rows_of(summarize(group, against="maml"))["leap"]
    leap = [mean(PER_TASK[seed]["leap"]) for seed in PER_TASK]
    maml = [mean(PER_TASK[seed]["maml"]) for seed in PER_TASK]
    paired = stats.ttest_rel(leap, maml).confidence_interval(0.95)
    assert row.diff == pytest.approx(mean(leap) - mean(maml), rel=1e-12)
    assert row.diff_ci95 == pytest.approx((paired.high - paired.low) / 2, rel=1e-10)


def test_no_paired_difference_between_unequal_task_lists(tmp_path):
    write_run(tmp_path, 0, {"maml": [0.5, 0.6, 0.7], "leap": [0.4, 0.5]})
    row = rows_of(summarize(load_runs([tmp_path])))["maml"]
    assert (row.diff, row.diff_ci95) == (None, None)


def test_reference_obeys_lower_is_better(tmp_path):
    write_run(tmp_path / "lower", 0)
    write_run(tmp_path / "higher", 0, lower_is_better=False, experiment="accuracy-task")
    lower, higher = (summarize(group) for group in group_runs(load_runs([tmp_path / "lower", tmp_path / "higher"])))
    assert lower.reference == "warpgrad" and "(lower is better)" in lower.title
    assert higher.reference == "leap" and "(higher is better)" in higher.title


def test_groups_by_experiment_profile_and_settings(tmp_path):
    write_run(tmp_path / "a", 0)
    write_run(tmp_path / "b", 0, settings="inner_steps=3")
    write_run(tmp_path / "c", 1)
    groups = group_runs(load_runs([tmp_path]))
    assert [[run.seed for run in group] for group in groups] == [[0, 1], [0]]
    assert ", inner_steps=3, seed 0)" in summarize(groups[1]).title


# ------------------------------------------------------------------------------ usage errors


def test_method_filter_and_its_errors(three_seeds):
    (group,) = group_runs(load_runs([three_seeds]))
    table = summarize(group, methods=["leap", "maml"])
    assert [row.method for row in table.rows] == ["maml", "leap"]  # order of first appearance
    assert table.reference == "maml"
    with pytest.raises(UsageError, match=r"--method reptile: .*maml, warpgrad, leap"):
        summarize(group, methods=["maml", "reptile"])
    with pytest.raises(UsageError, match=r"--method reptile: .*maml, warpgrad, leap"):
        report_text([three_seeds], methods="maml,reptile")


def test_against_and_its_errors(three_seeds):
    (group,) = group_runs(load_runs([three_seeds]))
    assert summarize(group, against="leap").reference == "leap"
    with pytest.raises(UsageError, match=r"--against reptile: .*maml, warpgrad, leap"):
        summarize(group, against="reptile")
    with pytest.raises(UsageError, match=r"--against warpgrad: .*\(maml, leap\)"):
        report_text([three_seeds], methods="maml,leap", against="warpgrad")


def test_unknown_format(three_seeds):
    with pytest.raises(UsageError, match="--format html: unknown; use one of text, md, latex, csv"):
        report_text([three_seeds], "html")


def test_duplicate_seed_names_both_files(tmp_path):
    first = write_run(tmp_path / "a", 1)
    second = write_run(tmp_path / "b", 1)
    with pytest.raises(UsageError) as error:
        group_runs(load_runs([tmp_path]))
    assert str(first) in str(error.value) and str(second) in str(error.value)


def test_the_same_file_twice_is_read_once(tmp_path):
    path = write_run(tmp_path, 0)
    assert len(load_runs([path, tmp_path, tmp_path / "."])) == 1


def test_a_path_without_results(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UsageError, match="no results.json") as error:
        load_runs([tmp_path / "empty"])
    assert str(tmp_path / "empty") in str(error.value) and not isinstance(error.value, FileFormatError)
    with pytest.raises(UsageError, match="no such file or directory"):
        load_runs([tmp_path / "missing"])


# ------------------------------------------------------------------------------ malformed files


MALFORMED = {
    "invalid JSON": (b"{'experiment': 'sine'}", "invalid JSON"),
    "truncated JSON": (b'{"experiment": "sine", "profile": "quick", "methods": {"maml": {"mean": 0.', "invalid JSON"),
    "not UTF-8": (b'{"experiment": "\xff\xfe"}', "not UTF-8"),
    "not an object": (b"[1, 2]", "not a JSON object"),
    "missing methods": (json.dumps({"experiment": "sine", "profile": "quick", "seed": 0}).encode(), "'methods'"),
}


def results_with(**changes) -> bytes:
    results = {
        "experiment": "sine",
        "profile": "quick",
        "seed": 0,
        "settings": "",
        "metric": "mse",
        "lower_is_better": True,
        "methods": {"maml": entry([0.5, 0.6])},
    }
    for key, value in changes.items():
        target = results["methods"]["maml"] if key in ("mean", "per_task", "wall_time_s", "extra") else results
        target[key] = value
    return json.dumps(results).encode()


MALFORMED |= {
    "non-finite mean": (results_with(mean=float("nan")), "methods.maml.mean is not a finite number"),
    "infinite mean": (results_with(mean=float("inf")), "methods.maml.mean is not a finite number"),
    "null mean": (results_with(mean=None), "methods.maml.mean is not a finite number"),
    "per_task not a list": (results_with(per_task={"0": 0.5}), "methods.maml.per_task is not a list"),
    "per_task with a string": (results_with(per_task=[0.5, "x"]), r"methods.maml.per_task\[1\] is not a finite"),
    "seed not an int": (results_with(seed="0"), "'seed' is not an integer"),
    "experiment missing": (results_with(experiment=None), "'experiment' is missing"),
    "methods not an object": (results_with(methods=[1]), "'methods' is missing or not an object"),
    "no lower_is_better": (results_with(lower_is_better="yes"), "'lower_is_better'"),
    "bad extra": (results_with(extra={"forgetting": {"mean": "high"}}), "methods.maml.extra.forgetting"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_file_names_the_file_in_one_line(tmp_path, case):
    content, message = MALFORMED[case]
    path = tmp_path / "run" / "results.json"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(FileFormatError, match=message) as error:
        load_runs([tmp_path])
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


def test_a_directory_named_results_json(tmp_path):
    (tmp_path / "results.json").mkdir()
    with pytest.raises(FileFormatError, match="cannot read") as error:
        load_runs([tmp_path])
    assert str(tmp_path / "results.json") in str(error.value) and "\n" not in str(error.value)


def test_odd_file_names_stay_on_one_line(tmp_path):
    directory = tmp_path / "odd\nname\x1b[31m"
    directory.mkdir()
    (directory / "results.json").write_text("{", encoding="utf-8")
    with pytest.raises(FileFormatError) as error:
        load_runs([directory])
    assert "\n" not in str(error.value) and "\x1b" not in str(error.value) and "odd name" in str(error.value)


# ------------------------------------------------------------------------------ formats


def test_text_format(three_seeds):
    text = report_text([three_seeds], "text")
    title, header, rule, *rows = text.split("\n")
    assert title == (
        "sine (quick profile, seeds 0,1,2): test mse (lower is better), mean ± 95% CI (Student's t, over seeds)"
    )
    assert header.split() == ["method", "mse", "diff", "vs", "warpgrad", "forgetting", "tasks", "seeds", "time"]
    assert set(rule) == {"-"} and len({len(line) for line in [header, rule, *rows]}) == 1
    assert [row.split()[0] for row in rows] == ["maml", "warpgrad", "leap"]
    assert " — " in rows[1] and "11.0s" in rows[0]
    assert report_text([three_seeds]) == text  # text is the default, and the output is deterministic


def test_markdown_is_a_pipe_table(three_seeds):
    text = report_text([three_seeds], "md")
    title, blank, *table = text.split("\n")
    assert title.startswith("**sine (quick profile") and title.endswith("over seeds)**") and blank == ""
    columns = {line.count("|") for line in table}
    assert len(columns) == 1 and columns.pop() == 8  # 7 columns
    assert all(line.startswith("|") and line.endswith("|") for line in table)
    assert re.fullmatch(r"\|:---(\|---:)+\|", table[1])
    assert "| warpgrad |" in table[3] and "| — |" in table[3]


def test_csv_parses_to_the_numbers(three_seeds):
    text = report_text([three_seeds], "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["method"] for row in rows] == ["maml", "warpgrad", "leap"]
    seed_means = {name: [mean(PER_TASK[seed][name]) for seed in PER_TASK] for name in ["maml", "warpgrad", "leap"]}
    for row in rows:
        assert float(row["mean"]) == pytest.approx(mean(seed_means[row["method"]]), rel=1e-12)
        assert float(row["ci95"]) == pytest.approx(t_half_width(seed_means[row["method"]]), rel=1e-10)
        assert (row["n_tasks"], row["n_seeds"], float(row["wall_time_s"])) == ("5", "3", 11.0)
    assert rows[1]["diff"] == "" and rows[1]["diff_ci95"] == ""  # the reference
    differences = [a - b for a, b in zip(seed_means["leap"], seed_means["warpgrad"])]
    assert float(rows[2]["diff"]) == pytest.approx(mean(differences), rel=1e-12)
    assert float(rows[2]["diff_ci95"]) == pytest.approx(t_half_width(differences), rel=1e-10)
    assert "forgetting" in rows[0] and "forgetting_ci95" in rows[0]


def test_csv_of_several_groups_is_separated_by_a_blank_line(three_seeds, tmp_path):
    write_run(tmp_path / "other", 0, experiment="other")
    parts = report_text([three_seeds, tmp_path / "other"], "csv").split("\n\n")
    head = "experiment,profile,settings,metric,over,reference,method,mean,ci95,diff,diff_ci95,"
    assert len(parts) == 2 and all(part.startswith(head) for part in parts)
    assert [part.splitlines()[1].split(",")[0] for part in parts] == ["sine", "other"]  # each row names its run


def test_latex_is_a_booktabs_tabular(tmp_path):
    write_run(tmp_path, 0, {"first_order": PER_TASK[0]["maml"], "warp_grad": PER_TASK[0]["warpgrad"]})
    text = report_text([tmp_path], "latex")
    assert text.count(r"\begin{tabular}") == text.count(r"\end{tabular}") == 1
    assert text.index(r"\begin{tabular}") < text.index(r"\toprule") < text.index(r"\midrule")
    assert text.index(r"\midrule") < text.index(r"\bottomrule") < text.index(r"\end{tabular}")
    assert r"\pm" in text and r"first\_order" in text and r"warp\_grad" in text and "first_order" not in text
    body = [line for line in text.split("\n") if line.endswith(r" \\")]
    assert len(body) == 3 and len({line.count(" & ") for line in body}) == 1
    assert text.startswith("% sine (quick profile, seed 0)")
    assert "{lrrrrr}" in text  # method, mse, diff, tasks, seeds, time


def test_numbers_are_formatted_like_the_run_table(tmp_path):
    write_run(tmp_path, 0, {"maml": [0.123456, 0.123457], "leap": [1234.5678, 1234.5679]})
    table = summarize(group_runs(load_runs([tmp_path]))[0])
    row = rows_of(table)["maml"]
    text = format_report([table], "text")
    assert f"{row.mean:.4g} ± {row.ci95:.2g}" in text and "0.1235 ± " in text and "10.0s" in text
    diff = rows_of(table)["leap"]
    assert f"{diff.diff:+.4g} ± {diff.diff_ci95:.2g}" in text


def test_every_format_formats_no_tables_as_nothing():
    assert all(format_report([], fmt) == "" for fmt in FORMATS)


def test_read_run_fields(tmp_path):
    run = read_run(write_run(tmp_path, 2, settings="steps=3"))
    assert (run.experiment, run.profile, run.settings, run.seed, run.metric, run.lower_is_better) == (
        "sine",
        "quick",
        "steps=3",
        2,
        "mse",
        True,
    )
    assert list(run.methods) == ["maml", "warpgrad", "leap"]


# ------------------------------------------------------------------------------ docs tables


def docs_page(first: str, second: str) -> str:
    """A Markdown page with two report blocks holding ``first`` and ``second``."""
    return (
        "# Results\n\nSome words.\n\n"
        "<!-- warpgrad report --format md runs --method maml,leap -->\n"
        f"{first}<!-- end report -->\n"
        "\nMore words.\n\n"
        "<!-- warpgrad report 'runs/seed0' --against=maml -->\n"
        f"{second}<!-- end report -->\n"
        "tail\n"
    )


def test_docs_tables_render_and_check_round_trip(three_seeds, tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text(docs_page("| stale | table |\n", "```text\nold\n```\n"))
    assert docs_tables.check([doc], tmp_path) == [
        f"{doc}: block 1 (warpgrad report --format md runs --method maml,leap)",
        f"{doc}: block 2 (warpgrad report 'runs/seed0' --against=maml)",
    ]
    rendered = docs_tables.render(doc.read_text(), tmp_path)
    first = report_text([three_seeds], "md", "maml,leap")
    second = report_text([three_seeds / "seed0"], "text", None, "maml")
    assert rendered == docs_page(f"{first}\n", f"```text\n{second}\n```\n")
    assert "| maml |" in first and "warpgrad" not in first.split("\n", 1)[1]
    doc.write_text(rendered)
    assert docs_tables.check([doc], tmp_path) == []
    assert docs_tables.render(rendered, tmp_path) == rendered


def test_docs_tables_main_checks_and_rewrites(three_seeds, tmp_path, capsys):
    doc = tmp_path / "doc.md"
    text = "intro\n<!-- warpgrad report --format csv runs -->\n<!-- end report -->\noutro\n"
    doc.write_text(text)
    root = ["--root", str(tmp_path)]
    assert docs_tables.main(["--check", *root, str(doc)]) == 1
    assert "stale:" in capsys.readouterr().out
    assert docs_tables.main([*root, str(doc)]) == 0
    assert f"updated {doc}" in capsys.readouterr().out
    assert docs_tables.main(["--check", *root, str(doc)]) == 0
    new = doc.read_text()
    assert new.startswith("intro\n<!-- warpgrad report --format csv runs -->\n```csv\nexperiment,profile,")
    assert new.endswith("```\n<!-- end report -->\noutro\n")


def test_docs_tables_errors(three_seeds, tmp_path, capsys):
    with pytest.raises(UsageError, match="has no '<!-- end report -->'"):
        docs_tables.render("a\n<!-- warpgrad report runs -->\nb\n", tmp_path)
    with pytest.raises(UsageError, match="unknown option --colour"):
        docs_tables.render("<!-- warpgrad report --colour runs -->\n<!-- end report -->\n", tmp_path)
    with pytest.raises(UsageError, match="no results directory"):
        docs_tables.render("<!-- warpgrad report --format md -->\n<!-- end report -->\n", tmp_path)
    doc = tmp_path / "bad.md"
    doc.write_text("<!-- warpgrad report --against nobody runs -->\n<!-- end report -->\n")
    assert docs_tables.main(["--root", str(tmp_path), str(doc)]) == 2
    assert "--against nobody" in capsys.readouterr().err
    assert docs_tables.render("no blocks here\n", tmp_path) == "no blocks here\n"


def test_docs_tables_keep_windows_line_endings(three_seeds, tmp_path):
    text = "a\r\n<!-- warpgrad report --format md runs/seed1 -->\r\nold\r\n<!-- end report -->\r\nb\r\n"
    rendered = docs_tables.render(text, tmp_path)
    assert rendered.startswith("a\r\n<!-- warpgrad report --format md runs/seed1 -->\r\n**sine")
    assert rendered.endswith("\r\n<!-- end report -->\r\nb\r\n") and "\n" not in rendered.replace("\r\n", "")


def test_t_interval_is_wider_than_the_normal_one_for_few_seeds(three_seeds):
    row = rows_of(summarize(group_runs(load_runs([three_seeds]))[0]))["maml"]
    seed_means = [mean(PER_TASK[seed]["maml"]) for seed in PER_TASK]
    normal = 1.96 * stats.tstd(seed_means) / math.sqrt(3)
    assert row.ci95 / normal == pytest.approx(stats.t.ppf(0.975, 2) / 1.96)
