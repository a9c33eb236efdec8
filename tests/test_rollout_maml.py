"""MAML through the navigation simulator: the meta-gradient against a per-task autograd loop with
``create_graph=True``, the first-order variant, queries, state; the ES-MAML and MAML trials of
the ``navigation`` and ``four-corners`` experiments through the CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from warpgrad.cli import main
from warpgrad.errors import UsageError
from warpgrad.methods.rollout_maml import RolloutMAML, RolloutMAMLConfig
from warpgrad.tasks.rl.navigation import FourCorners, Navigation2D


def _theta():
    return {"weight": torch.tensor([[0.05, -0.02, 0.01], [0.03, 0.04, -0.02]], dtype=torch.float64)}


def _tasks(family, count=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [family.sample(generator) for _ in range(count)]


def _loop_meta_gradient(theta, tasks, lr, first_order):
    """Per task with torch.autograd: θ' = θ + α∇f(θ) (graph kept unless first order), ∇_θ f(θ')."""
    grads = []
    for task in tasks:
        leaf = theta["weight"].clone().requires_grad_(True)
        (inner,) = torch.autograd.grad(task.rollout_return({"weight": leaf}), leaf, create_graph=not first_order)
        adapted = leaf + lr * (inner.detach() if first_order else inner)
        if first_order:
            adapted = adapted.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(task.rollout_return({"weight": adapted}), adapted)
        else:
            (grad,) = torch.autograd.grad(task.rollout_return({"weight": adapted}), leaf)
        grads.append(grad)
    return torch.stack(grads).mean(0)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("family", [Navigation2D(horizon=15), FourCorners(horizon=15)], ids=["dense", "sparse"])
def test_meta_gradient_equals_a_per_task_autograd_loop(family, first_order):
    tasks, theta, lr = _tasks(family), _theta(), 1e-3
    if isinstance(family, FourCorners):  # head for (2, 2), reached by two goals, so the sparse reward has a gradient
        theta = {"weight": torch.tensor([[0.0, 0.0, 0.08], [0.0, 0.0, 0.08]], dtype=torch.float64)}
        lr = 1e-5  # a larger inner step saturates the actions at ±0.1, where the gradient is zero
        goals = [(2.0, 2.0), (2.0, 2.0), (-2.0, 2.0)]
        tasks = [dataclasses.replace(task, goal=torch.tensor(goal)) for task, goal in zip(tasks, goals)]
    maml = RolloutMAML(family, theta, RolloutMAMLConfig(lr=lr, first_order=first_order, task_batch=3))
    grad, values = maml.meta_gradient(tasks)
    expected = _loop_meta_gradient(theta, tasks, lr, first_order)
    assert expected.abs().max() > 1e-3  # not a vacuous comparison
    torch.testing.assert_close(grad["weight"], expected, rtol=1e-9, atol=1e-9)
    assert values.shape == (3,)


def test_second_and_first_order_differ_where_the_inner_step_bends():
    tasks = _tasks(Navigation2D(horizon=15))
    second, _ = RolloutMAML(Navigation2D(horizon=15), _theta(), RolloutMAMLConfig(lr=1e-3)).meta_gradient(tasks)
    first, _ = RolloutMAML(
        Navigation2D(horizon=15), _theta(), RolloutMAMLConfig(lr=1e-3, first_order=True)
    ).meta_gradient(tasks)
    assert (second["weight"] - first["weight"]).abs().max() > 1e-3


def test_meta_steps_count_queries_and_resume_identically():
    family = Navigation2D(horizon=10)
    config = RolloutMAMLConfig(lr=1e-3, meta_lr=1e-2, task_batch=4)
    a = RolloutMAML(family, _theta(), config)
    generator = torch.Generator().manual_seed(1)
    metrics = a.meta_step(generator)
    assert metrics["queries"] == 8 and a.queries == 8 and a.step == 1
    state, generator_state = a.state_dict(), generator.get_state()
    a.meta_step(generator)
    b = RolloutMAML(family, _theta(), config)
    b.load_state_dict(state)
    generator.set_state(generator_state)
    b.meta_step(generator)
    assert torch.equal(a.theta["weight"], b.theta["weight"]) and b.queries == 16


def test_the_meta_step_ascends_the_post_adaptation_return():
    family = Navigation2D(horizon=20)
    maml = RolloutMAML(family, _theta(), RolloutMAMLConfig(lr=1e-4, meta_lr=1e-2, task_batch=8))
    tasks = _tasks(family, 8, seed=5)
    before = float(maml.meta_gradient(tasks)[1].mean())
    for _ in range(30):
        maml.meta_step(torch.Generator().manual_seed(5))  # the same 8 tasks every step
    assert float(maml.meta_gradient(tasks)[1].mean()) > before


def test_bad_config_values_are_refused():
    for bad in ({"lr": -1.0}, {"task_batch": 0}, {"first_order": "yes"}):
        with pytest.raises(UsageError):
            RolloutMAMLConfig(**bad)
    with pytest.raises(UsageError, match="RolloutMAMLConfig"):
        RolloutMAML(Navigation2D(), _theta(), config={"lr": 1.0})


# -- the experiments through the CLI ----------------------------------------------------------------


def _run(capsys, *args):
    code = main(["run", *args, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("navigation") / "run"
    assert main(["run", "navigation", "--profile", "smoke", "--out", str(out), "--no-progress"]) == 0
    return out


def test_navigation_smoke_run_compares_the_four_methods_within_the_budget(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    assert set(results["methods"]) == {"es-maml", "es-maml-hc", "maml-sim", "fomaml-sim"}
    for name, entry in results["methods"].items():
        assert entry["metric"] == "post_return" and len(entry["per_task"]) == 4
        queries = [row["step"] for row in entry["history"]]
        assert queries[0] == 0 and queries == sorted(queries)
        assert entry["extra"]["meta_training_queries"] == queries[-1] <= 80
        assert entry["extra"]["meta_training_queries"] > 80 - entry["extra"]["queries_per_meta_step"]
        assert (smoke_run / name / "metrics.csv").exists()
        state = torch.load(smoke_run / name / "state.pt", weights_only=False)
        assert state["queries"] == queries[-1]
    assert (smoke_run / "curves.png").stat().st_size > 1000


def test_same_seed_same_numbers_other_seed_other_goals(smoke_run, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    for out, seed in ((again, "0"), (other, "1")):
        argv = ["run", "four-corners" if out == other else "navigation", "--profile", "smoke", "--method", "es-maml"]
        assert main([*argv, "--seed", seed, "--out", str(out), "--no-progress"]) == 0
    first = json.loads((smoke_run / "results.json").read_text())["methods"]["es-maml"]
    second = json.loads((again / "results.json").read_text())["methods"]["es-maml"]
    assert first["per_task"] == second["per_task"] and first["history"] == second["history"]
    third = json.loads((other / "results.json").read_text())["methods"]["es-maml"]
    assert third["per_task"] != first["per_task"]


def test_bad_settings_exit_2_naming_the_value(capsys, tmp_path):
    code, _, err = _run(
        capsys, "navigation", "--profile", "smoke", "--set", "es-maml.adaptation=nope", "--out", str(tmp_path / "a")
    )
    assert code == 2 and "'nope'" in err and "hill-climbing" in err and "Traceback" not in err
    assert not (tmp_path / "a").exists()


def test_seeds_write_one_curve_over_them(tmp_path):
    out = tmp_path / "seeds"
    argv = ["run", "navigation", "--profile", "smoke", "--method", "es-maml", "--seeds", "0-1", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    assert (out / "curves.png").stat().st_size > 1000
    assert {p.name for p in out.iterdir()} == {"curves.png", "seed-0", "seed-1"}
