"""The learned-rules experiment through the CLI: a smoke run of a rule and the baselines, tuning on
validation episodes only, and a meta-training stopped with --stop-after and resumed equal to the
uninterrupted run."""

from __future__ import annotations

import json

import pytest
import torch

from warpgrad.cli import main
from warpgrad.experiments import get_experiment
from warpgrad.experiments.learned_rules import TEST_SEED, VALIDATION_SEED


def _run(*args):
    return main(["run", "learned-rules", "--profile", "smoke", "--no-progress", *map(str, args)])


def _entries(out):
    return json.loads((out / "results.json").read_text())["methods"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("rules") / "run"
    assert _run("--method", "blur,vsml,local-rules,sgd,adam", "--out", out) == 0
    return out


def test_smoke_run_tests_every_method_on_every_test_set(smoke):
    entries = _entries(smoke)
    assert set(entries) == {"blur", "vsml", "local-rules", "sgd", "adam"}
    for entry in entries.values():
        assert entry["metric"] == "online_accuracy" and len(entry["per_task"]) == 4
        assert {"final", "fashion-mnist online", "kanji online", "kanji final"} <= set(entry["extra"])
        assert [row["step"] for row in entry["history"]] == [5, 10]
    assert (smoke / "blur" / "rule.pt").exists() and (smoke / "blur" / "checkpoint.pt").exists()
    assert entries["blur"]["extra"]["meta_training"]["steps"] == 2
    assert (smoke / "curves.png").stat().st_size > 1000


def test_the_baselines_learning_rate_is_the_best_on_validation_episodes(smoke):
    for name in ("sgd", "adam"):
        tuning = _entries(smoke)[name]["extra"]["tuning"]
        scores = tuning["validation_online_accuracy"]
        assert tuning["chosen_lr"] == tuning["grid"][scores.index(max(scores))]
        assert tuning["grid"] == list(get_experiment("learned-rules").profile("smoke").options[name]["lr_grid"])
    assert VALIDATION_SEED != TEST_SEED and abs(VALIDATION_SEED - TEST_SEED) > 1000  # no episode shared with tests


def test_stopped_and_resumed_meta_training_equals_the_uninterrupted_run(smoke, tmp_path, capsys):
    out = tmp_path / "stopped"
    assert _run("--method", "blur", "--out", out, "--stop-after", "1") == 0
    assert "stopped after 1 meta-steps" in capsys.readouterr().out
    assert not (out / "results.json").exists() or "blur" not in _entries(out)
    assert _run("--method", "blur", "--out", out, "--resume") == 0
    resumed, full = _entries(out)["blur"], _entries(smoke)["blur"]
    assert resumed["per_task"] == full["per_task"] and resumed["history"] == full["history"]
    a = torch.load(out / "blur" / "rule.pt", weights_only=True)
    b = torch.load(smoke / "blur" / "rule.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_experiments_without_checkpoints_refuse_resume(tmp_path, capsys):
    code = main(["run", "fop", "--profile", "smoke", "--out", str(tmp_path / "x"), "--resume", "--no-progress"])
    assert code == 2 and "no checkpoints" in capsys.readouterr().err


def test_a_bad_setting_leaves_no_directory_behind(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert _run("--method", "vsml", "--out", out, "--set", "vsml.trainer=cma") == 2
    assert "'cma'" in capsys.readouterr().err and not (tmp_path / "new").exists()
