"""Engine: bit-exact resume, atomic checkpoints, results and their statistics, outputs."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import t as scipy_t
from torch import nn

from warpgrad.engine import (
    TrainingInterrupted,
    checkpoint_path,
    load_checkpoint,
    mean_ci95,
    read_metrics_csv,
    run,
    save_checkpoint,
    train,
)
from warpgrad.engine import loop as loop_module
from warpgrad.experiments import Experiment, MethodSpec, Profile, build_method, get_experiment
from warpgrad.functional import sgd
from warpgrad.methods.base import MetaLearner
from warpgrad.tasks.base import SeededTask
from warpgrad.tasks.sine import SineFamily

SINE_METHODS = list(get_experiment("sine").methods)
TIME_KEYS = {"time_s", "wall_time_s", "test_time_s", "time_per_rank"}


# ------------------------------------------------------------------------------ a fake method


class FakeLearner(MetaLearner):
    """A learner whose meta-step really trains and draws from both its generator and the
    global torch RNG, so a resume that loses any piece of state gives different numbers."""

    name = "fake"
    interrupt_at: int | None = None  # send SIGINT to ourselves during this meta-step call

    def __init__(self) -> None:
        model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
        super().__init__(model, sgd(lr=0.05), 2)
        self.meta_optimizer = self.shell.add_group("init", dict(model.named_parameters()), "adam", 0.03)
        self.calls = 0

    def meta_step(self, tasks, generator, reduction=None):
        self.calls += 1
        if self.interrupt_at == self.calls:
            signal.raise_signal(signal.SIGINT)
        noise = torch.randn((), generator=generator)
        jitter = torch.rand(())  # global RNG
        x = torch.cat([t.train_batch(generator)[0] for t in tasks])
        y = torch.cat([t.train_batch(generator)[1] for t in tasks])
        loss = nn.functional.mse_loss(self.model(x), y)
        objective = loss + 0.1 * noise * jitter * self.model[0].weight.sum()
        self.meta_optimizer.zero_grad()
        objective.backward()
        self.meta_optimizer.step()
        return {"train_loss": float(loss.detach()), "noise": float(noise)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.calls = state["calls"]


def _profile(name: str, **changes: Any) -> Profile:
    base = dict(meta_steps=7, meta_batch=3, eval_every=2, val_tasks=3, test_tasks=5, checkpoint_every=3)
    base.update(changes)
    return Profile(name, f"fake {name}", **base)


FAKE = Experiment(
    name="fake",
    description="a fake experiment for engine tests",
    profiles={
        "smoke": _profile("smoke"),
        "every": _profile("every", eval_every=1, checkpoint_every=1),
        "rare": _profile("rare", eval_every=100, checkpoint_every=100),
    },
    make_family=lambda p: SineFamily(shots=5, test_points=10),
    methods={
        "fake": MethodSpec("fake learner", lambda p: FakeLearner()),
        "fake2": MethodSpec("another fake learner", lambda p: FakeLearner()),
    },
)


# ------------------------------------------------------------------------------ helpers


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Recursive exact equality; tensors with torch.equal; time fields ignored."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict), path
        keys_a = {k for k in a if k not in TIME_KEYS}
        keys_b = {k for k in b if k not in TIME_KEYS}
        assert keys_a == keys_b, path
        for k in keys_a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), f"{path}: {a} != {b}"


def assert_same_run(dir_a: Path, dir_b: Path, method: str, entry_a: dict, entry_b: dict) -> None:
    ckpt_a = load_checkpoint(checkpoint_path(dir_a, method))
    ckpt_b = load_checkpoint(checkpoint_path(dir_b, method))
    for key in ("step", "learner", "generators", "torch_rng", "history", "config"):
        assert_same(ckpt_a[key], ckpt_b[key], key)
    assert_same(entry_a, entry_b, "entry")
    assert_same(read_metrics_csv(dir_a / method / "metrics.csv"), read_metrics_csv(dir_b / method / "metrics.csv"))


# ------------------------------------------------------------------------------ resume


@pytest.mark.parametrize("method", SINE_METHODS)
def test_sine_resume_equals_uninterrupted_run(tmp_path, method):
    full = train("sine", method, "smoke", seed=0, out_dir=tmp_path / "a", progress=False)
    assert train("sine", method, "smoke", seed=0, out_dir=tmp_path / "b", stop_after=3, progress=False) is None
    assert load_checkpoint(checkpoint_path(tmp_path / "b", method))["step"] == 3
    resumed = train("sine", method, "smoke", seed=0, out_dir=tmp_path / "b", resume=True, progress=False)
    assert full["steps"] == resumed["steps"] == get_experiment("sine").profile("smoke").meta_steps
    assert_same_run(tmp_path / "a", tmp_path / "b", method, full, resumed)


@pytest.mark.parametrize("stops", [[1], [2], [3], [6], [2, 2], [1, 3, 1]])
def test_fake_resume_is_bit_exact(tmp_path, stops):
    full = train(FAKE, "fake", "smoke", seed=5, out_dir=tmp_path / "a", progress=False)
    step = 0
    for n in stops:
        assert train(FAKE, "fake", "smoke", 5, tmp_path / "b", resume=step > 0, stop_after=n, progress=False) is None
        step += n
        assert load_checkpoint(checkpoint_path(tmp_path / "b", "fake"))["step"] == step
    resumed = train(FAKE, "fake", "smoke", 5, tmp_path / "b", resume=True, progress=False)
    assert_same_run(tmp_path / "a", tmp_path / "b", "fake", full, resumed)
    # the learner really changed, and the history has every evaluation once
    start = build_method(FAKE, "fake", FAKE.profile("smoke"), 5).state_dict()["model"]
    end = load_checkpoint(checkpoint_path(tmp_path / "a", "fake"))["learner"]["model"]
    assert not torch.equal(start["0.weight"], end["0.weight"])
    assert [row["step"] for row in resumed["history"]] == [0, 2, 4, 6, 7]


def test_resume_check_can_fail_when_a_generator_is_not_restored(tmp_path, monkeypatch):
    full = train(FAKE, "fake", "smoke", 5, tmp_path / "a", progress=False)
    train(FAKE, "fake", "smoke", 5, tmp_path / "b", stop_after=3, progress=False)
    restore = loop_module.TrainingState._restore

    def restore_but_lose_step_generator(self, checkpoint):
        state = self.step_generator.get_state()
        restore(self, checkpoint)
        self.step_generator.set_state(state)

    monkeypatch.setattr(loop_module.TrainingState, "_restore", restore_but_lose_step_generator)
    resumed = train(FAKE, "fake", "smoke", 5, tmp_path / "b", resume=True, progress=False)
    with pytest.raises(AssertionError):
        assert_same_run(tmp_path / "a", tmp_path / "b", "fake", full, resumed)


def test_evaluation_does_not_perturb_training(tmp_path):
    every = train(FAKE, "fake", "every", 1, tmp_path / "every", progress=False)
    rare = train(FAKE, "fake", "rare", 1, tmp_path / "rare", progress=False)
    assert len(every["history"]) == 8 and len(rare["history"]) == 2
    a = load_checkpoint(checkpoint_path(tmp_path / "every", "fake"))
    b = load_checkpoint(checkpoint_path(tmp_path / "rare", "fake"))
    assert_same(a["learner"], b["learner"])
    assert_same(a["generators"], b["generators"])
    assert_same(every["per_task"], rare["per_task"])
    assert_same(every["history"][-1], rare["history"][-1])


def test_interrupt_checkpoints_the_completed_step_and_resumes_exactly(tmp_path, monkeypatch):
    full = train(FAKE, "fake", "smoke", 2, tmp_path / "a", progress=False)
    monkeypatch.setattr(FakeLearner, "interrupt_at", 5)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as stop:
        train(FAKE, "fake", "smoke", 2, tmp_path / "b", progress=False)
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    assert (stop.value.step, stop.value.total) == (5, 7)
    assert load_checkpoint(checkpoint_path(tmp_path / "b", "fake"))["step"] == 5
    monkeypatch.setattr(FakeLearner, "interrupt_at", None)
    resumed = train(FAKE, "fake", "smoke", 2, tmp_path / "b", resume=True, progress=False)
    assert_same_run(tmp_path / "a", tmp_path / "b", "fake", full, resumed)


def test_run_stopped_in_first_method_resumes_all_methods(tmp_path):
    full = run(FAKE, ["fake", "fake2"], "smoke", 3, tmp_path / "a", progress=False)
    assert run(FAKE, "fake,fake2", "smoke", 3, tmp_path / "b", stop_after=4, progress=False) is None
    assert not (tmp_path / "b" / "results.json").exists()
    assert load_checkpoint(checkpoint_path(tmp_path / "b", "fake2"))["step"] == 0  # resumable
    resumed = run(FAKE, ["fake", "fake2"], "smoke", 3, tmp_path / "b", resume=True, progress=False)
    for method in ("fake", "fake2"):
        assert_same_run(tmp_path / "a", tmp_path / "b", method, full["methods"][method], resumed["methods"][method])
    assert_same(full, resumed)


# ------------------------------------------------------------------------------ resume errors


def test_resume_without_checkpoint_names_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"checkpoint.*fake[/\\]checkpoint\.pt"):
        train(FAKE, "fake", "smoke", 0, tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match="checkpoint.pt"):
        run(FAKE, ["fake"], "smoke", 0, tmp_path, resume=True, progress=False)
    assert not (tmp_path / "fake").exists()


@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("seed", dict(seed=1)),
        ("profile", dict(profile="every")),
        ("method", dict(method="fake2")),
        ("experiment", dict(experiment=dataclasses.replace(FAKE, name="fake-b"))),
    ],
)
def test_resume_with_other_config_names_the_field(tmp_path, field, kwargs):
    train(FAKE, "fake", "smoke", 0, tmp_path, stop_after=2, progress=False)
    if field == "method":  # another method's checkpoint in this method's place
        (tmp_path / "fake2").mkdir()
        (tmp_path / "fake" / "checkpoint.pt").rename(tmp_path / "fake2" / "checkpoint.pt")
    args = dict(experiment=FAKE, method="fake", profile="smoke", seed=0) | kwargs
    with pytest.raises(ValueError, match=rf"{field}=") as error:
        train(**args, out_dir=tmp_path, resume=True, progress=False)
    assert "checkpoint.pt" in str(error.value)


def test_run_refuses_results_of_another_seed_before_training(tmp_path):
    run(FAKE, ["fake"], "smoke", 0, tmp_path, progress=False)
    before = (tmp_path / "fake" / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match=r"results\.json.*seed=0.*seed=1"):
        run(FAKE, ["fake"], "smoke", 1, tmp_path, progress=False)
    assert (tmp_path / "fake" / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_bad_seed(tmp_path, seed):
    with pytest.raises(ValueError, match="seed"):
        train(FAKE, "fake", "smoke", seed, tmp_path, progress=False)


# ------------------------------------------------------------------------------ checkpoints


def test_failed_checkpoint_write_keeps_previous_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "config": {}, "w": torch.arange(5.0)})
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        real_save({"step": 2, "config": {}, "w": torch.zeros(1000)}, f)  # write a lot, then fail
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2, "config": {}, "w": torch.ones(5)})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    checkpoint = load_checkpoint(path)
    assert checkpoint["step"] == 1 and torch.equal(checkpoint["w"], torch.arange(5.0))


def test_failed_checkpoint_during_training_keeps_a_resumable_checkpoint(tmp_path, monkeypatch):
    full = train(FAKE, "fake", "smoke", 4, tmp_path / "a", progress=False)
    real_save = torch.save
    calls = []

    def save_then_fail_on_third(obj, f, *args, **kwargs):
        calls.append(obj["step"])
        real_save(obj, f, *args, **kwargs)
        if len(calls) == 3:  # checkpoints at steps 0, 3, then 6 fails
            raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_then_fail_on_third)
    with pytest.raises(OSError):
        train(FAKE, "fake", "smoke", 4, tmp_path / "b", progress=False)
    monkeypatch.undo()
    assert calls == [0, 3, 6]
    assert sorted(p.name for p in (tmp_path / "b" / "fake").iterdir()) == ["checkpoint.pt", "metrics.csv"]
    assert load_checkpoint(checkpoint_path(tmp_path / "b", "fake"))["step"] == 3
    resumed = train(FAKE, "fake", "smoke", 4, tmp_path / "b", resume=True, progress=False)
    assert_same_run(tmp_path / "a", tmp_path / "b", "fake", full, resumed)


def test_checkpoint_loads_with_weights_only_and_holds_the_protocol(tmp_path):
    train(FAKE, "fake", "smoke", 0, tmp_path, progress=False)
    data = checkpoint_path(tmp_path, "fake").read_bytes()
    header, payload = data.split(b"\n", 1)
    assert header.startswith(b"WARPGRAD-CHECKPOINT 2 sha256=")
    raw = torch.load(io.BytesIO(payload), weights_only=True)  # after the header: torch.save's bytes
    checkpoint = load_checkpoint(checkpoint_path(tmp_path, "fake"))
    assert raw["step"] == checkpoint["step"] and torch.equal(raw["torch_rng"], checkpoint["torch_rng"])
    assert checkpoint["step"] == 7
    expected = {"experiment": "fake", "method": "fake", "profile": "smoke", "seed": 0, "settings": ""}
    assert checkpoint["config"] == expected
    assert set(checkpoint["generators"]) == {"tasks", "meta_step"}
    assert torch.equal(checkpoint["torch_rng"], checkpoint["torch_rng"].to(torch.uint8))
    assert checkpoint["learner"]["calls"] == 7
    assert all(isinstance(v, (int, float, str)) for row in checkpoint["history"] for v in row.values())


def test_load_checkpoint_rejects_garbage(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint.pt"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------ results


def test_mean_ci95_matches_numpy():
    values = np.random.default_rng(0).exponential(size=37)
    mean, ci95 = mean_ci95(values.tolist())
    assert mean == pytest.approx(values.mean(), rel=1e-12)
    assert ci95 == pytest.approx(scipy_t.ppf(0.975, 36) * values.std(ddof=1) / np.sqrt(37), rel=1e-9)
    assert mean_ci95([2.5]) == (2.5, None)
    with pytest.raises(ValueError):
        mean_ci95([])


def test_results_json_values_csv_and_plot(tmp_path):
    results = run(FAKE, ["fake"], "smoke", 7, tmp_path, progress=False)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert (on_disk["experiment"], on_disk["profile"], on_disk["seed"]) == ("fake", "smoke", 7)
    entry = on_disk["methods"]["fake"]
    assert entry["metric"] == "mse" and entry["lower_is_better"] is True
    assert (entry["n_tasks"], entry["steps"]) == (5, 7)
    assert isinstance(entry["mean"], float) and isinstance(entry["ci95"], float)

    # an independent evaluation of the final learner on the held-out tasks
    profile = FAKE.profile("smoke")
    learner = build_method(FAKE, "fake", profile, 7)
    learner.load_state_dict(load_checkpoint(checkpoint_path(tmp_path, "fake"))["learner"])
    # the documented seeding: task i sampled from its own seed, its batches from another
    task_seeds = torch.randint(0, 2**62, (5, 2), generator=torch.Generator().manual_seed(2_000_007))
    tasks = [FAKE.make_family(profile).sample(torch.Generator().manual_seed(int(s))) for s in task_seeds[:, 0]]
    evaluation = torch.Generator().manual_seed(3_000_007)
    batch_seeds = torch.randint(0, 2**62, (5, 2), generator=evaluation)[:, 1]
    learner_seed = int(torch.randint(0, 2**62, (), generator=evaluation))
    tasks = [SeededTask(t, torch.Generator().manual_seed(int(s))) for t, s in zip(tasks, batch_seeds)]
    values = learner.evaluate(tasks, torch.Generator().manual_seed(learner_seed))["mse"].double().numpy()
    assert entry["per_task"] == values.tolist()
    assert entry["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert entry["ci95"] == pytest.approx(scipy_t.ppf(0.975, 4) * values.std(ddof=1) / np.sqrt(5), rel=1e-9)

    rows = read_metrics_csv(tmp_path / "fake" / "metrics.csv")
    assert [r["step"] for r in rows] == [0, 2, 4, 6, 7]
    assert list(rows[1]) == ["step", "time_s", "val_mse", "val_loss", "train_loss", "noise"]
    for row, kept in zip(rows, entry["history"]):
        assert row == kept  # floats round-trip exactly
    assert rows[0]["val_mse"] != rows[-1]["val_mse"]

    png = (tmp_path / "learning_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".warpgrad.lock",
        "fake",
        "learning_curves.png",
        "results.json",
    ]


def test_runs_of_some_methods_merge_into_results(tmp_path):
    first = run(FAKE, ["fake"], "smoke", 0, tmp_path, progress=False)
    second = run(FAKE, ["fake2"], "smoke", 0, tmp_path, progress=False)
    assert list(second["methods"]) == ["fake", "fake2"]
    assert_same(second["methods"]["fake"], first["methods"]["fake"])
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert list(on_disk["methods"]) == ["fake", "fake2"]
    # same learner, same seed, same tasks: the two methods agree exactly
    assert on_disk["methods"]["fake"]["per_task"] == on_disk["methods"]["fake2"]["per_task"]


def test_sine_smoke_run_all_methods_share_test_tasks(tmp_path):
    results = run("sine", ["baseline"], "smoke", 0, tmp_path, progress=False)
    entry = results["methods"]["baseline"]
    assert entry["n_tasks"] == get_experiment("sine").profile("smoke").test_tasks
    # baseline never meta-learns: its validation curve is flat
    assert len({row["val_mse"] for row in entry["history"]}) == 1


def test_a_diverging_method_stops_with_one_line_naming_the_step(tmp_path, capsys, monkeypatch):
    from warpgrad import cli
    from warpgrad.methods.base import NoMetaLearning

    def diverging(self, tasks, generator, reduction=None):
        return {"meta_loss": float("nan")}

    monkeypatch.setattr(NoMetaLearning, "meta_step", diverging)
    argv = ["run", "sine", "--method", "baseline", "--profile", "smoke", "--out", str(tmp_path), "--no-progress"]
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "baseline diverged at meta-step 1 (meta_loss = nan)" in err[0]


def test_prefetching_tasks_changes_nothing(tmp_path):
    """Sampling the next meta-batch in a background thread gives the same run, checkpoint included."""
    entries, states = [], []
    for prefetch in (True, False):
        out = tmp_path / str(prefetch)
        entries.append(train(FAKE, "fake", "smoke", 3, out, progress=False, prefetch=prefetch))
        states.append(load_checkpoint(checkpoint_path(out, "fake")))
    assert entries[0]["per_task"] == entries[1]["per_task"]
    assert states[0]["generators"]["tasks"].equal(states[1]["generators"]["tasks"])
    for key, value in states[0]["learner"]["model"].items():
        assert value.equal(states[1]["learner"]["model"][key])
