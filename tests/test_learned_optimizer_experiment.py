"""The learned-optimizer experiment through the CLI: its files, the saved weights reproducing the
learned optimiser's held-out losses, learning rates tuned away from the test problems, and
identical results for the same seed."""

from __future__ import annotations

import json

import pytest
import torch

from warpgrad.cli import main
from warpgrad.experiments import get_experiment
from warpgrad.experiments.learned_optimizer import HELD_OUT_DIGITS, TRAIN_CLASSES, draw_problems, families, train_on
from warpgrad.optim import LearnedOptimizer
from warpgrad.optim.learned import load_meta_params
from warpgrad.optim.problems import inner_batch

SMOKE = ["--profile", "smoke", "--no-progress"]
METHODS = {"learned", "adam", "sgd"}


def _results(path):
    return json.loads((path / "results.json").read_text())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread, as the experiment runs (small ops are slow with threads on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("lopt") / "run"
    assert main(["run", "learned-optimizer", *SMOKE, "--out", str(out)]) == 0
    return out


def test_smoke_run_writes_results_curves_metrics_and_weights(smoke_run, capsys):
    results = _results(smoke_run)
    assert results["metric"] == "mean_train_loss" and results["lower_is_better"] is True
    assert set(results["methods"]) == METHODS
    for method, entry in results["methods"].items():
        assert entry["n_tasks"] == 4 == len(entry["per_task"])
        assert [row["step"] for row in entry["history"]] == [0, 5, 10]
        rows = (smoke_run / method / "metrics.csv").read_text().splitlines()
        assert rows[0] == "step,test_loss" and len(rows) == 4
        # the metric is the mean of the logged full-data losses after step 0, per problem
        assert entry["mean"] == pytest.approx(sum(entry["per_task"]) / 4)
        mean_curve = sum(row["test_loss"] for row in entry["history"][1:]) / 2
        assert entry["mean"] == pytest.approx(mean_curve)
    assert (smoke_run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    column, _, _, log_y = get_experiment("learned-optimizer").curve  # the column curves.png draws
    assert column == "test_loss" and log_y
    meta_params, info = load_meta_params(smoke_run / "learned" / "learned_optimizer.pt")
    assert info["total_steps"] == 10 and info["meta_steps"] == 2 and info["seed"] == 0
    assert meta_params["W1"].shape == (12, 8)
    assert (smoke_run / "learned" / "meta_training.csv").read_text().startswith("iteration,")


def test_saved_weights_reproduce_the_learned_optimizers_held_out_losses(smoke_run):
    """Rebuild each held-out problem from its recorded seed and train it by hand with
    LearnedOptimizer and the saved weights: the same losses as recorded."""
    profile = get_experiment("learned-optimizer").profile("smoke")
    entry = _results(smoke_run)["methods"]["learned"]
    meta_params, info = load_meta_params(smoke_run / "learned" / "learned_optimizer.pt")
    for i, recorded in enumerate(entry["extra"]["held_out_problems"]):
        generator = torch.Generator().manual_seed(recorded["seed"])
        problem = families(profile, "test")[i % 2](generator)
        assert problem.info["classes"] == recorded["classes"] and problem.info["source"] == recorded["source"]
        params = {k: v.requires_grad_(True) for k, v in problem.init(generator).items()}
        optimizer = LearnedOptimizer(params.values(), meta_params, info["total_steps"])
        losses = []
        for t in range(info["total_steps"]):
            optimizer.zero_grad()
            problem.loss(params, inner_batch(problem, recorded["seed"], t)).backward()
            optimizer.step()
            if (t + 1) % profile.eval_every == 0:
                losses.append(problem.full_loss(params))
        assert sum(losses) / len(losses) == pytest.approx(entry["per_task"][i], rel=1e-5, abs=1e-7)
        assert losses[-1] == pytest.approx(entry["extra"]["final_train_loss"]["per_task"][i], rel=1e-5, abs=1e-7)
    # other weights give other losses: the check above can fail
    other = {k: v * 2 for k, v in meta_params.items()}
    problem, params = draw_problems(profile, "test", 0)[0]
    curve, _ = train_on(problem, params, lambda ps: LearnedOptimizer(ps, other, 10), 10, profile.eval_every)
    assert sum(loss for _, loss in curve[1:]) / 2 != pytest.approx(entry["per_task"][0], rel=1e-5)


def test_learning_rates_are_tuned_on_training_distribution_problems_never_the_test_ones(smoke_run):
    profile = get_experiment("learned-optimizer").profile("smoke")
    methods = _results(smoke_run)["methods"]
    held_out = methods["learned"]["extra"]["held_out_problems"]
    for entry in methods.values():  # every method trains the same held-out problems from the same weights
        assert entry["extra"]["held_out_problems"] == held_out
        assert entry["history"][0] == methods["learned"]["history"][0]
    test_pairs = {(p["source"], c) for p in held_out for c in p["classes"]}
    assert {p["source"] for p in held_out} == {"fashion-mnist", "digits"}
    assert all(c in HELD_OUT_DIGITS for p in held_out if p["source"] == "digits" for c in p["classes"])
    for method in ("adam", "sgd"):
        tuning = methods[method]["extra"]["tuning"]
        validation = tuning["validation_problems"]
        assert len(validation) == profile.val_tasks and all(p["split"] == "validation" for p in validation)
        assert {p["seed"] for p in validation}.isdisjoint(p["seed"] for p in held_out)
        assert all(p["source"] in ("digits", "mnist5k") and set(p["classes"]) <= set(TRAIN_CLASSES) for p in validation)
        assert test_pairs.isdisjoint((p["source"], c) for p in validation for c in p["classes"])
        # the choice is the grid's best validation score, and that score is the validation problems' loss
        scores = tuning["validation_mean_train_loss"]
        assert len(tuning["grid"]) == 3 and tuning["chosen_lr"] == tuning["grid"][scores.index(min(scores))]
        kind = torch.optim.Adam if method == "adam" else torch.optim.SGD
        problems = draw_problems(profile, "validation", 0)
        assert [p.info for p, _ in problems] == validation
        per_problem = [
            sum(loss for _, loss in curve[1:]) / 2
            for curve, _ in (
                train_on(p, w, lambda ps: kind(ps, lr=tuning["chosen_lr"]), 10, profile.eval_every) for p, w in problems
            )
        ]
        assert sum(per_problem) / len(per_problem) == pytest.approx(min(scores), rel=1e-6)
        assert methods[method]["extra"]["validation_train_loss"]["mean"] == pytest.approx(min(scores), rel=1e-6)


def test_same_seed_gives_identical_results_and_weights(smoke_run, tmp_path):
    again = tmp_path / "again"
    assert main(["run", "learned-optimizer", *SMOKE, "--out", str(again)]) == 0
    a, b = _results(smoke_run)["methods"], _results(again)["methods"]
    for method in METHODS:
        assert a[method]["per_task"] == b[method]["per_task"]
        assert a[method]["history"] == b[method]["history"]
        extra_a, extra_b = dict(a[method]["extra"]), dict(b[method]["extra"])
        assert extra_a == extra_b
    weights_a, _ = load_meta_params(smoke_run / "learned" / "learned_optimizer.pt")
    weights_b, _ = load_meta_params(again / "learned" / "learned_optimizer.pt")
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    profile = get_experiment("learned-optimizer").profile("smoke")
    seeds = {p.info["seed"] for p, _ in draw_problems(profile, "test", 1)}
    assert seeds.isdisjoint(p["seed"] for p in a["learned"]["extra"]["held_out_problems"])


def test_a_diverging_run_is_stopped_and_recorded_at_its_largest_finite_loss():
    profile = get_experiment("learned-optimizer").profile("smoke")
    problem, params = draw_problems(profile, "test", 0)[0]
    curve, diverged = train_on(problem, params, lambda ps: torch.optim.SGD(ps, lr=1e6), 10, 5)
    assert diverged and [s for s, _ in curve] == [0, 5, 10]
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in curve)
    assert curve[-1][1] == max(loss for _, loss in curve)
