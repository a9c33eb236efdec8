"""The maze experiment through the CLI and its runner: files, resume, refusals, curves over seeds."""

from __future__ import annotations

import json

import pytest
import torch

from warpgrad.cli import main
from warpgrad.engine.checkpoint import load_checkpoint
from warpgrad.engine.rl import MazeRun, maze_seed
from warpgrad.experiments import get_experiment

SMOKE = ["--profile", "smoke", "--no-progress"]


def _results(path):
    return json.loads((path / "results.json").read_text())


def test_smoke_run_writes_results_curves_metrics_and_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "maze", *SMOKE, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "maze (smoke profile, seed 0): training (last 3 episodes) reward (higher is better)" in printed
    results = _results(out)
    assert results["metric"] == "reward" and results["lower_is_better"] is False
    assert set(results["methods"]) == {"warp-rnn", "rnn", "hebbian", "backpropamine"}
    for method, entry in results["methods"].items():
        assert entry["steps"] == 6 and len(entry["per_task"]) == 3
        assert [row["step"] for row in entry["history"]] == [2, 4, 6]
        rows = (out / method / "metrics.csv").read_text().splitlines()
        assert rows[0] == "step,reward,loss" and len(rows) == 4
        assert load_checkpoint(out / method / "checkpoint.pt")["step"] == 6
        # the reported mean is the mean of the last episodes' rewards, recorded per episode
        assert entry["mean"] == pytest.approx(sum(entry["per_task"]) / 3)
    assert (out / "reward_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path, capsys):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    methods = ["--method", "warp-rnn,hebbian"]
    assert main(["run", "maze", *SMOKE, *methods, "--out", str(straight)]) == 0
    assert main(["run", "maze", *SMOKE, *methods, "--out", str(stopped), "--stop-after", "2"]) == 0
    assert "stopped after 2 episodes as asked; resume with: warpgrad run maze" in capsys.readouterr().out
    assert load_checkpoint(stopped / "warp-rnn" / "checkpoint.pt")["step"] == 2
    assert main(["run", "maze", *SMOKE, *methods, "--out", str(stopped), "--resume", "--stop-after", "3"]) == 0
    assert load_checkpoint(stopped / "warp-rnn" / "checkpoint.pt")["step"] == 5  # mid φ block (meta_every 2)
    assert main(["run", "maze", *SMOKE, *methods, "--out", str(stopped), "--resume"]) == 0
    a, b = _results(straight)["methods"], _results(stopped)["methods"]
    for method in a:
        assert a[method]["per_task"] == b[method]["per_task"]
        assert a[method]["history"] == b[method]["history"]
        agent_a = load_checkpoint(straight / method / "checkpoint.pt")["trainer"]["agent"]
        agent_b = load_checkpoint(stopped / method / "checkpoint.pt")["trainer"]["agent"]
        assert all(torch.equal(agent_a[k], agent_b[k]) for k in agent_a)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--log", "tensorboard"], "--log tensorboard is not available"),
        (["--nproc", "2"], "runs in one process"),
        (["--set", "rnn.lr=0"], "rnn.lr"),
        (["--set", "a2c.regulariser=l2"], "regulariser 'l2' is not one of sum-p2, entropy"),
        (["--method", "maml"], "unknown method 'maml' for maze"),
        (["--stop-after", "0"], "stop_after must be a positive integer"),
    ],
)
def test_bad_arguments_are_one_line_errors_with_exit_2(tmp_path, capsys, extra, expected):
    assert main(["run", "maze", *SMOKE, "--out", str(tmp_path / "x"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_existing_run_is_refused_and_resume_checks_the_profile(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "maze", *SMOKE, "--method", "rnn", "--out", str(out)]) == 0
    assert main(["run", "maze", *SMOKE, "--method", "rnn", "--out", str(out)]) == 2
    assert "already holds a run of rnn" in capsys.readouterr().err
    assert main(["run", "maze", *SMOKE, "--method", "rnn", "--out", str(out), "--resume", "--set", "size=9"]) == 2
    assert "size=9" in capsys.readouterr().err  # the checkpoint was written with other settings


def test_every_method_meets_the_same_goals_in_the_same_episode():
    experiment = get_experiment("maze")
    profile = experiment.profile("smoke")
    goals = []
    for method in experiment.methods:
        run = MazeRun(experiment, method, profile, seed=5)
        run.train_episode()
        run.train_episode()
        goals.append(run.maze.goal.clone())
    assert all(torch.equal(goals[0], g) for g in goals[1:])
    assert maze_seed(5, 1) != maze_seed(5, 2) != maze_seed(6, 1)


def test_several_seeds_draw_one_curve_plot_with_a_band(tmp_path, capsys):
    out = tmp_path / "seeds"
    assert main(["run", "maze", *SMOKE, "--method", "rnn,warp-rnn", "--out", str(out), "--seeds", "0-1"]) == 0
    printed = capsys.readouterr().out
    assert f"reward curves over 2 seeds: {out / 'reward_curves.png'}" in printed
    assert "over seeds" in printed
    assert (out / "reward_curves.png").read_bytes()[:4] == b"\x89PNG"
    from warpgrad.engine.curves import seed_curves

    curves = seed_curves([_results(out / f"seed-{s}") for s in (0, 1)])
    episodes, per_seed = curves["rnn"]
    assert episodes == [2, 4, 6] and len(per_seed) == 2
    assert per_seed[1] == [row["reward"] for row in _results(out / "seed-1")["methods"]["rnn"]["history"]]
