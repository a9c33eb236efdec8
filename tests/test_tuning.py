"""--tune: each method's meta learning rate chosen on validation tasks, recorded in the results."""

from __future__ import annotations

import json

import pytest

from warpgrad.cli import main
from warpgrad.engine.tuning import Grid, choose, grid_dir, meta_lr_options, parse_grid
from warpgrad.errors import TrainingDiverged, UsageError


def test_grid_parses_and_names_what_is_wrong():
    assert parse_grid("meta_lr=1e-3,3e-3, 0.01") == Grid("meta_lr", [1e-3, 3e-3, 0.01])
    assert parse_grid("ewc.lam=0,10") == Grid("ewc.lam", [0.0, 10.0])  # any setting; zero allowed there
    for text, problem in [
        ("1e-3,1e-2", "expected SETTING=V1,V2"),
        ("meta_lr=1e-3,fast", "'fast' is not a number"),
        ("meta_lr=1e-3,-1", "'-1' is not a positive"),
        ("meta_lr=1e-3,nan", "'nan' is not a positive"),
        ("meta_lr=1e-3,1e-3", "appears twice"),
        ("meta_lr=1e-3", "at least two values"),
    ]:
        with pytest.raises(UsageError, match=problem):
            parse_grid(text)


def test_cli_refuses_a_bad_grid_with_exit_2(capsys):
    assert main(["run", "sine", "--profile", "smoke", "--method", "maml", "--tune", "meta_lr=0.1"]) == 2
    assert "at least two values" in capsys.readouterr().err


def test_meta_learning_rates_per_method():
    assert meta_lr_options("maml") == ["meta_lr"]
    assert meta_lr_options("warpgrad") == ["warp_lr", "init_lr"]
    assert meta_lr_options("baseline") == []
    grid = Grid("meta_lr", [1e-3, 1e-2])
    assert grid.methods(["maml", "baseline", "warpgrad"]) == ["maml", "warpgrad"]
    assert grid.settings("warpgrad", 1e-3) == {"warpgrad.warp_lr": "0.001", "warpgrad.init_lr": "0.001"}
    assert grid.sets("maml.meta_lr") and not grid.sets("inner_lr")
    option = Grid("ewc.lam", [1.0, 10.0])
    assert option.methods(["baseline", "ewc"]) == ["ewc"]  # a method's option tunes that method only
    assert Grid("inner_lr", [0.1, 0.4]).methods(["maml", "baseline"]) == ["maml", "baseline"]
    assert option.settings("ewc", 10.0) == {"ewc.lam": "10"}


def _grid_results(validations, metric="accuracy", lower=False):
    out = []
    for i, value in enumerate(validations):
        if value is None:
            out.append(None)  # diverged: no results file
            continue
        entry = {"metric": metric, "lower_is_better": lower, "mean": 10.0 + i, "per_task": [10.0 + i]}
        entry["history"] = [{"step": 0, f"val_{metric}": 0.0}, {"step": 5, f"val_{metric}": value}]
        out.append({"methods": {"maml": entry}})
    return out


def test_choice_uses_the_final_validation_metric_only():
    grid = Grid("meta_lr", [1e-3, 3e-3, 1e-2])
    best = choose("maml", _grid_results([0.5, 0.7, 0.6]), grid)  # higher is better
    assert best["tuning"]["chosen"] == 3e-3 and best["mean"] == 11.0
    assert best["tuning"]["validation"] == [0.5, 0.7, 0.6] and best["tuning"]["grid"] == grid.values
    lowest = choose("maml", _grid_results([0.5, 0.7, 0.6], "mse", lower=True), grid)
    assert lowest["tuning"]["chosen"] == 1e-3
    tie = choose("maml", _grid_results([0.6, 0.7, 0.7]), grid)
    assert tie["tuning"]["chosen"] == 3e-3  # the earlier of equal values
    diverged = choose("maml", _grid_results([0.5, None, 0.6]), grid)
    assert diverged["tuning"]["chosen"] == 1e-2 and diverged["tuning"]["validation"][1] is None
    with pytest.raises(TrainingDiverged, match="every meta_lr"):
        choose("maml", _grid_results([None, None, None]), grid)


def test_tuned_run_reports_the_chosen_grid_run(tmp_path, capsys):
    out = tmp_path / "tuned"
    code = main(
        ["run", "sine", "--profile", "smoke", "--method", "maml,baseline", "--set", "meta_steps=3"]
        + ["--tune", "meta_lr=1e-4,0.3", "--out", str(out), "--no-progress"]
    )
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    entry, record = results["methods"]["maml"], results["methods"]["maml"]["tuning"]
    grid_runs = {v: json.loads((grid_dir(out, "maml", "meta_lr", v) / "results.json").read_text()) for v in (1e-4, 0.3)}
    finals = [grid_runs[v]["methods"]["maml"]["history"][-1]["val_mse"] for v in (1e-4, 0.3)]
    assert record["validation"] == finals
    chosen = record["chosen"]
    assert chosen == (1e-4, 0.3)[finals.index(min(finals))]
    assert finals[0] != finals[1]  # the grid values train differently
    assert entry["per_task"] == grid_runs[chosen]["methods"]["maml"]["per_task"]
    assert entry["provenance"]["configuration"]["methods"]["maml"]["meta_lr"] == chosen
    assert "tuning" not in results["methods"]["baseline"]
    assert results["settings"] == "meta_steps=3"
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    header, *rows = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith(("method", "maml", "base"))
    ]
    assert "meta_lr (tuned)" in header
    assert f"{chosen:g}" in rows[0].split() and rows[1].split()[-4] == "-"  # the baseline has none


def test_a_stopped_tuning_run_resumes_to_the_same_choice(tmp_path, capsys):
    common = ["run", "sine", "--profile", "smoke", "--method", "maml,baseline", "--set", "meta_steps=3"]
    common += ["--tune", "meta_lr=1e-4,0.3", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    assert main([*common, "--out", str(tmp_path / "parts"), "--stop-after", "1"]) == 0
    assert "stopped after 1" in capsys.readouterr().out
    while main([*common, "--out", str(tmp_path / "parts"), "--resume", "--stop-after", "1"]) == 0:
        if "stopped after" not in capsys.readouterr().out:
            break
    whole, parts = (json.loads((tmp_path / d / "results.json").read_text())["methods"] for d in ("whole", "parts"))
    assert list(parts) == ["maml", "baseline"]
    assert parts["maml"]["tuning"] == whole["maml"]["tuning"]
    assert parts["maml"]["per_task"] == whole["maml"]["per_task"]
    assert parts["baseline"]["per_task"] == whole["baseline"]["per_task"]


def test_a_table_of_differently_tuned_methods_names_each_setting():
    from warpgrad.engine.tuning import add_tuned_column

    header, rows = ["method", "mse", "tasks", "seeds", "time"], [["a", "1", "8", "1", "1s"], ["b", "2", "8", "1", "1s"]]
    add_tuned_column(header, rows, [("ewc.lam", "10"), ("warpgrad.warp_lr", "0.001")])
    assert header[2] == "tuned" and [r[2] for r in rows] == ["ewc.lam=10", "warpgrad.warp_lr=0.001"]
    header, rows = ["method", "mse", "tasks", "seeds", "time"], [["a", "1", "8", "1", "1s"], ["b", "2", "8", "1", "1s"]]
    add_tuned_column(header, rows, [("meta_lr", "0.01"), ("", "")])
    assert header[2] == "meta_lr (tuned)" and [r[2] for r in rows] == ["0.01", "-"]


def test_a_choice_at_the_edge_of_its_grid_says_so():
    from warpgrad.engine.tuning import chosen_values

    def entry(chosen):
        return {"tuning": {"setting": "meta_lr", "chosen": chosen, "grid": [1e-3, 3e-3, 1e-2]}}

    assert chosen_values([entry(3e-3)]) == ("meta_lr", "0.003")
    assert chosen_values([entry(1e-2)]) == ("meta_lr", "0.01 (max)")
    assert chosen_values([entry(1e-3), entry(3e-3)]) == ("meta_lr", "0.001 (min),0.003")  # over seeds
    assert chosen_values([{"mean": 1.0}]) == ("", "")
