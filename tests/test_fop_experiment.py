"""The fop experiment (warpgrad.experiments.fop) through the CLI: files, seeds, the kanji data, a bad
``--set data``, and FOP's first step against its base optimiser's on the experiment's convnet."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from warpgrad.cli import main
from warpgrad.experiments import EXPERIMENTS, FOP_EXPERIMENT, TrialExperiment

SMOKE = ["--profile", "smoke", "--no-progress"]
METHODS = {"sgd", "fop-sgd", "momentum", "fop-momentum", "adam", "fop-adam"}


def _results(path):
    return json.loads((path / "results.json").read_text())


def _scores(results):
    return {m: (e["per_task"], [row["test_accuracy"] for row in e["history"]]) for m, e in results["methods"].items()}


@pytest.fixture(scope="module")
def seed_0(tmp_path_factory):
    out = tmp_path_factory.mktemp("fop") / "seed-0"
    assert main(["run", "fop", *SMOKE, "--out", str(out)]) == 0
    return out


def test_registered_as_a_trial_experiment():
    assert EXPERIMENTS["fop"] is FOP_EXPERIMENT and isinstance(FOP_EXPERIMENT, TrialExperiment)
    assert set(FOP_EXPERIMENT.methods) == METHODS
    for profile in FOP_EXPERIMENT.profiles.values():  # each FOP method at its base's hyperparameters
        for base in ("sgd", "momentum", "adam"):
            fop = profile.options[f"fop-{base}"]
            assert {k: fop[k] for k in profile.options[base]} == profile.options[base] and fop["hyper_lr"] > 0


def test_smoke_run_writes_results_curves_and_metrics(seed_0):
    results = _results(seed_0)
    assert results["metric"] == "accuracy" and results["lower_is_better"] is False
    assert set(results["methods"]) == METHODS
    for method, entry in results["methods"].items():
        assert entry["steps"] == 20 and entry["n_tasks"] == 1 and len(entry["per_task"]) == 1
        assert [row["step"] for row in entry["history"]] == [10, 20]
        assert entry["mean"] == entry["per_task"][0] == entry["history"][-1]["test_accuracy"]
        assert 0 <= entry["mean"] <= 1
        for key in ("step_time_s", "train_step_time_s", "train_loss", "test_loss"):
            assert entry["extra"][key]["mean"] > 0, (method, key)
        assert entry["extra"]["step_time_s"]["mean"] < entry["extra"]["train_step_time_s"]["mean"]
        rows = (seed_0 / method / "metrics.csv").read_text().splitlines()
        assert rows[0] == "step,test_accuracy,train_loss,test_loss" and len(rows) == 3
    assert (seed_0 / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_same_seed_same_results_another_seed_other_results(seed_0, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    methods = ["--method", "sgd,fop-adam"]
    assert main(["run", "fop", *SMOKE, *methods, "--out", str(again)]) == 0
    assert main(["run", "fop", *SMOKE, *methods, "--out", str(other), "--seed", "1"]) == 0
    first, repeated, seed_1 = (_scores(_results(p)) for p in (seed_0, again, other))
    for method in ("sgd", "fop-adam"):
        assert repeated[method] == first[method]
        assert seed_1[method] != first[method]
    loss = [_results(p)["methods"]["sgd"]["history"][0]["train_loss"] for p in (seed_0, again, other)]
    assert loss[0] == loss[1] != loss[2]


def test_kanji_data(tmp_path, capsys):
    out = tmp_path / "kanji"
    assert main(["run", "fop", *SMOKE, "--method", "sgd,fop-sgd", "--set", "data=kanji", "--out", str(out)]) == 0
    results = _results(out)
    assert results["settings"] == "data=kanji"
    data = results["methods"]["fop-sgd"]["extra"]["data"]
    assert data == {"name": "kanji", "train_images": 40, "test_images": 20}  # 10 characters, 4 + 2 drawings


@pytest.mark.parametrize(
    "setting, expected",
    [
        ("data=nope", "data='nope': allowed are 'fashion-mnist', 'kanji'"),
        ("runs=0", "setting runs='0': must be >= 1"),
    ],
)
def test_bad_settings_are_one_line_errors_with_exit_2(tmp_path, capsys, setting, expected):
    assert main(["run", "fop", *SMOKE, "--method", "sgd", "--set", setting, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "x" / "sgd").exists()


@pytest.mark.parametrize("base", ["sgd", "momentum", "adam"])
def test_fop_first_step_is_its_base_optimisers_step(base):
    """FOP's preconditioner starts as the identity: after one step the parameters are exactly the
    base optimiser's (even at a large hyper_lr); after two, the preconditioned ones differ."""
    profile = FOP_EXPERIMENT.resolve("smoke", {f"fop-{base}.hyper_lr": "10"})
    trials = {m: FOP_EXPERIMENT.method(m).build(profile) for m in (base, f"fop-{base}")}
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 16, 1, 28, 28, generator=generator), torch.randint(0, 10, (2, 16), generator=generator)
    params = {}
    for method, trial in trials.items():
        model = trial.model(seed=3, n_classes=10)
        optimizer = trial.optimizer(model)
        params[method] = []
        for step in range(2):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[step]), y[step]).backward()
            optimizer.step()
            params[method].append([p.detach().clone() for p in model.parameters()])
    plain, fop = params[base], params[f"fop-{base}"]
    initial = [p.detach() for p in trials[base].model(seed=3, n_classes=10).parameters()]
    assert not any(torch.equal(a, b) for a, b in zip(plain[0], initial))  # the step moved every tensor
    assert all(torch.equal(a, b) for a, b in zip(plain[0], fop[0]))
    # step 2 starts from the same parameters, so the gradients are the same: only the preconditioned
    # tensors (3 conv kernels, the head's weight) move otherwise, the biases exactly as the base's
    preconditioned = [p.dim() > 1 for p in initial]
    assert sum(preconditioned) == 4
    assert [not torch.equal(a, b) for a, b in zip(plain[1], fop[1])] == preconditioned


def test_the_validation_split_holds_out_a_sixth_of_the_training_images():
    from warpgrad.experiments.fop import validation_split

    x = torch.arange(60.0).reshape(60, 1)
    (train_x, train_y), (val_x, val_y) = validation_split(x, torch.arange(60))
    assert len(val_x) == 10 and len(train_x) == 50
    assert set(train_y.tolist()).isdisjoint(val_y.tolist()) and set(train_y.tolist()) | set(val_y.tolist()) == set(
        range(60)
    )
    assert torch.equal(validation_split(x, torch.arange(60))[1][1], val_y)  # fixed, whatever the run
