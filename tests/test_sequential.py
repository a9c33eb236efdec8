"""The OML/ANML meta-test protocol runner (warpgrad.engine.sequential): trajectory sampling, the
meta-test on hand-known learners, learning-rate tuning on validation classes only, the CLI."""

import json
import urllib.error
import urllib.request

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from warpgrad.cli import main
from warpgrad.data.base import InMemoryClassDataset
from warpgrad.engine.sequential import (
    TEST_SEED_OFFSET,
    Pretrain,
    Scratch,
    TrajectorySampler,
    evaluate,
    linear_head_meta_test,
    meta_test_streams,
    meta_train,
    meta_train_classes,
    online_network_meta_test,
    sequential_streams,
)
from warpgrad.experiments import get_experiment
from warpgrad.methods.continual.oml import TrajectoryMetaLearner, continual_meta_test

SPLITS = {"train": [0, 1, 2, 3, 4, 5], "val": [6, 7, 8], "test": [9, 10, 11]}


def tagged_dataset(n_classes=12, per_class=8, splits=SPLITS):
    """Images whose pixel (0, 0) is the class index and pixel (0, 1) the image index."""
    images = []
    for c in range(n_classes):
        x = torch.rand(per_class, 1, 4, 4) * 0.1
        x[:, 0, 0, 0] = float(c)
        x[:, 0, 0, 1] = torch.arange(per_class, dtype=torch.float32)
        images.append(x)
    return InMemoryClassDataset("tagged", images, [f"c{c}" for c in range(n_classes)], splits)


def class_of(x):
    return x[:, 0, 0, 0].round().long()


def options(**changes):
    o = {
        "trajectory": 4,
        "remember": 5,
        "meta_classes": 4,
        "outputs": 6,
        "test_classes": 3,
        "stream_per_class": 4,
        "held_out_per_class": 2,
        "runs": 2,
        "tune_runs": 2,
        "lr_grid": "0.001,0.01,0.1",
        "head_reset": "zeros",
        "threads": 0,
    }
    o.update(changes)
    return o


# ------------------------------------------------------------------------------ sampling


def test_trajectory_sampler_draws_train_classes_with_consistent_labels_deterministically():
    ds = tagged_dataset()
    classes = meta_train_classes(ds, options(), seed=3)
    assert len(classes) == 4 and set(classes) <= set(SPLITS["train"])
    assert classes == meta_train_classes(ds, options(), seed=3)
    assert meta_train_classes(ds, options(meta_classes=0), seed=3) == SPLITS["train"]  # 0: all train classes

    def draws(seed, n=30):
        sampler = TrajectorySampler(ds, classes, 4, 5, torch.Generator().manual_seed(seed))
        return [sampler.sample() for _ in range(n)]

    first = draws(0)
    for tx, ty, rx, ry, label in first:
        assert tx.shape == (4, 1, 4, 4) and ty.shape == (4,) and rx.shape == (5, 1, 4, 4) and ry.shape == (5,)
        assert ty.dtype == ry.dtype == torch.long
        assert (ty == label).all() and (class_of(tx) == classes[label]).all()
        assert len(set(tx[:, 0, 0, 1].tolist())) == 4  # distinct images of the class
        assert [classes[int(y)] for y in ry] == class_of(rx).tolist()  # remember labels match their images
        assert set(class_of(rx).tolist()) <= set(classes)
    assert {label for *_, label in first} == set(range(4))
    again = draws(0)
    assert all(torch.equal(a, b) for s, t in zip(first, again) for a, b in zip(s[:4], t[:4]))
    other = draws(1)
    assert any(not torch.equal(s[0], t[0]) for s, t in zip(first, other))


def test_sampler_rejects_trajectories_longer_than_a_class():
    with pytest.raises(ValueError, match="trajectory=9"):
        TrajectorySampler(tagged_dataset(), [0, 1], 9, 2, torch.Generator())


def test_meta_train_resets_the_trajectory_row_and_stops_on_nan():
    class Recorder:
        head = nn.Linear(3, 6)

        def __init__(self):
            self.rows = []

        def meta_step(self, tx, ty, rx, ry):
            label = int(ty[0])
            self.rows.append(float((self.head.weight[label].abs().sum() + self.head.bias[label].abs()).detach()))
            return {"meta_loss": 1.0 if len(self.rows) < 3 else float("nan")}

    ds = tagged_dataset()
    learner = Recorder()
    sampler = TrajectorySampler(ds, [0, 1, 2], 4, 2, torch.Generator().manual_seed(0))
    with pytest.raises(FloatingPointError, match="meta-step 3"):
        meta_train(learner, sampler, 5, reset_class_row=True)
    assert learner.rows == [0.0, 0.0, 0.0]


# ------------------------------------------------------------------------------ meta-test


class Frozen(TrajectoryMetaLearner):
    """A learner with fixed features ``features(x)`` and a linear head (meta-test only)."""

    def __init__(self, features, width, outputs, bias=True, loss_fn=F.cross_entropy):
        self.features, self.loss_fn, self.inner_lr = features, loss_fn, 1.0
        self.head = nn.Linear(width, outputs, bias=bias)

    def frozen_features(self, x):
        return self.features(x)


def test_meta_test_of_a_bias_only_learner_forgets_all_but_the_last_class():
    # zero features: only the bias learns, and after each class it predicts that class for everything,
    # so the held-out accuracy after n classes is exactly 1/n (and the train accuracy 1/N)
    ds = tagged_dataset()
    streams = sequential_streams(ds, "test", 3, 4, 2, [5, 6])
    learner = Frozen(lambda x: torch.zeros(x.shape[0], 2), 2, 6)
    out = meta_test_streams(learner, streams, lr=1.0, train_accuracy=True)
    expected = torch.tensor([1.0, 1 / 2, 1 / 3], dtype=torch.float64)
    assert torch.allclose(out["curves"], expected.expand(2, 3))
    assert torch.allclose(out["final"], torch.full((2,), 1 / 3, dtype=torch.float64))
    assert torch.allclose(out["train_final"], torch.full((2,), 1 / 3, dtype=torch.float64))


def test_meta_test_of_one_hot_features_remembers_every_class():
    ds = tagged_dataset()
    streams = sequential_streams(ds, "test", 3, 4, 2, [5])
    learner = Frozen(lambda x: F.one_hot(class_of(x), 12).float(), 12, 6, bias=False)
    out = meta_test_streams(learner, streams, lr=0.5, train_accuracy=True)
    assert out["curves"].tolist() == [[1.0, 1.0, 1.0]] and out["train_final"].tolist() == [1.0]


def test_closed_form_head_equals_the_library_meta_test():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.ReLU())
    features = lambda x: body(x).detach()  # noqa: E731
    head = nn.Linear(5, 7)
    params = {k: v.detach().clone() for k, v in head.named_parameters()}
    xs = [torch.rand(4, 1, 4, 4) for _ in range(4)]
    ev = [torch.rand(3, 1, 4, 4) for _ in range(4)]
    labels = [3, 0, 6, 2]
    ref = continual_meta_test(features, head, params, xs, 0.7, ev, labels)
    fast = linear_head_meta_test(
        [features(x) for x in xs], [features(x) for x in ev], params["weight"], params["bias"], 0.7, labels
    )
    assert torch.equal(ref["accuracy"], fast["accuracy"])
    assert all(torch.equal(a, b) for a, b in zip(ref["per_class"], fast["per_class"]))
    train = continual_meta_test(features, head, params, xs, 0.7, None, labels)["accuracy"][-1]
    assert torch.equal(train, fast["train_accuracy"])
    # the runner's two paths agree: a loss that is not F.cross_entropy itself takes learner.meta_test
    streams = sequential_streams(tagged_dataset(), "val", 3, 4, 2, [1, 2])
    a = meta_test_streams(Frozen(features, 5, 7), streams, 0.3, train_accuracy=True)
    slow = Frozen(features, 5, 7, loss_fn=lambda z, y: F.cross_entropy(z, y))
    b = meta_test_streams(slow, streams, 0.3, train_accuracy=True)
    assert torch.equal(a["curves"], b["curves"]) and torch.equal(a["train_final"], b["train_final"])


def test_scratch_trains_the_whole_network_and_equals_head_training_without_a_body(float64):
    torch.manual_seed(0)
    xs = [torch.rand(3, 1, 2, 2) for _ in range(3)]
    ev = [torch.rand(2, 1, 2, 2) for _ in range(3)]
    head = nn.Linear(4, 5)
    scratch = Scratch(nn.Flatten(), head)
    got = scratch.meta_test(xs, ev, labels=[1, 4, 0], lr=0.9)
    ref = continual_meta_test(
        lambda x: x.flatten(1),
        head,
        {k: torch.zeros_like(v) for k, v in head.named_parameters()},
        xs,
        0.9,
        ev,
        [1, 4, 0],
    )
    assert torch.equal(got["accuracy"], ref["accuracy"])
    # with a body, its parameters move too (and the learner's own parameters do not)
    body = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh())
    model = nn.Sequential(body, nn.Linear(3, 5))
    before = {k: v.clone() for k, v in model.named_parameters()}
    params = dict(model.named_parameters())
    out = online_network_meta_test(model, params, xs, 0.5, ev)
    assert out["accuracy"].shape == (3,)
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())


def test_pretrain_meta_step_is_supervised_training_on_the_pooled_sample():
    torch.manual_seed(0)
    learner = Pretrain(nn.Flatten(), nn.Linear(16, 6), lr=0.05)
    sampler = TrajectorySampler(tagged_dataset(), [0, 1, 2, 3], 4, 8, torch.Generator().manual_seed(0))
    tx, ty, rx, ry, _ = sampler.sample()
    first = learner.meta_step(tx, ty, rx, ry)["meta_loss"]
    for _ in range(30):
        last = learner.meta_step(tx, ty, rx, ry)["meta_loss"]
    assert last < first


class Spy:
    """A learner whose final accuracy is known per lr (best at 0.01); records every meta-test call."""

    def __init__(self):
        self.calls = []

    def meta_test(self, stream_x, eval_x=None, *, labels=None, head_reset="zeros", lr=None):
        classes = {int(c) for x in stream_x for c in class_of(x)} | {int(c) for x in eval_x or [] for c in class_of(x)}
        self.calls.append((lr, classes, eval_x is None))
        score = 1.0 - abs(torch.log10(torch.tensor(lr)) + 2.0) / 10
        return {"accuracy": torch.linspace(1.0, float(score), len(stream_x))}


def test_lr_is_tuned_on_validation_classes_only_then_tested_on_test_classes():
    ds = tagged_dataset()
    spy = Spy()
    result = evaluate(spy, ds, options(), seed=4)
    assert result["lr"] == 0.01 and set(result["tuning"]) == {0.001, 0.01, 0.1}
    tuning, testing = spy.calls[:6], spy.calls[6:]
    assert sorted({lr for lr, *_ in tuning}) == [0.001, 0.01, 0.1]
    assert all(classes <= set(SPLITS["val"]) for _, classes, _ in tuning)
    assert len(testing) == 4  # 2 runs, each held-out and train accuracy
    assert all(lr == 0.01 and classes <= set(SPLITS["test"]) for lr, classes, _ in testing)
    assert torch.allclose(result["final"], torch.full((2,), 1.0, dtype=torch.float64))
    # the test streams are the seeded ones, whatever happened before
    stream = sequential_streams(ds, "test", 3, 4, 2, [TEST_SEED_OFFSET + 4])[0]
    assert spy.calls[6][1] == {int(e.classes[0]) for e in stream}


def test_options_are_checked_against_the_dataset():
    ds = tagged_dataset()
    with pytest.raises(ValueError, match="outputs=2"):
        meta_train_classes(ds, options(outputs=2), 0)
    with pytest.raises(ValueError, match="meta_classes=9"):
        meta_train_classes(ds, options(meta_classes=9, outputs=9), 0)
    with pytest.raises(ValueError, match="test_classes=4"):
        meta_train_classes(ds, options(test_classes=4), 0)
    with pytest.raises(ValueError, match="has only 8 images"):
        meta_train_classes(ds, options(stream_per_class=7), 0)


# ------------------------------------------------------------------------------ the CLI


def test_kanji_sequential_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "ks"
    argv = ["run", "kanji-sequential", "--profile", "smoke", "--method", "oml,anml,sgd,pretrain", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "final_accuracy" and results["lower_is_better"] is False
    o = get_experiment("kanji-sequential").profile("smoke").options
    grid = [float(v) for v in o["lr_grid"].split(",")]
    for method in ("oml", "anml", "sgd", "pretrain"):
        entry = results["methods"][method]
        assert len(entry["curve"]) == entry["n_classes"] == o["test_classes"] and entry["n_tasks"] == o["runs"]
        assert entry["lr"] in grid and 0.0 <= entry["mean"] <= 1.0
        assert abs(entry["curve"][-1] - entry["mean"]) < 1e-9
        assert set(entry["extra"]) == {"train_accuracy", "tuning", "meta_training"}
        assert entry["extra"]["tuning"]["split"] == "val"
    assert results["methods"]["sgd"]["steps"] == 0 and results["methods"]["oml"]["steps"] == 3
    assert (out / "accuracy_vs_classes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "accuracy_vs_classes.png" in capsys.readouterr().out
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0]


def test_omniglot_sequential_without_data_is_one_line_naming_the_download(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WARPGRAD_DATA", str(tmp_path / "data"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    out = tmp_path / "os"
    assert main(["run", "omniglot-sequential", "--profile", "smoke", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warpgrad: error: ")
    assert "images_background.zip" in err[0] and "by hand" in err[0]
    assert not out.exists()
