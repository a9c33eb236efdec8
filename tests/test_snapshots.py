"""Snapshots of the learner during meta-training (``--set snapshot_every=N``)."""

from __future__ import annotations

import pytest
import torch

from warpgrad.cli import main
from warpgrad.engine import checkpoint_path, load_checkpoint, run, train
from warpgrad.engine.snapshots import list_snapshots, load_snapshot, snapshot_path
from warpgrad.engine.state import run_config
from warpgrad.errors import FileFormatError, UsageError
from warpgrad.experiments import build_method, get_experiment

SINE = get_experiment("sine")  # smoke: 4 meta-steps


def _same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same_state, a, b))
    return a == b


def _learners(out, method):
    return {step: load_snapshot(path)["learner"] for step, path in list_snapshots(out, method).items()}


@pytest.mark.parametrize(("every", "steps"), [(2, [0, 2, 4]), (3, [0, 3])])
def test_snapshots_are_written_at_step_0_and_every_nth_step(tmp_path, every, steps):
    settings = {"snapshot_every": str(every)}
    train("sine", "maml", "smoke", seed=0, out_dir=tmp_path, progress=False, settings=settings)
    found = list_snapshots(tmp_path, "maml")
    assert list(found) == steps
    assert all(
        path == snapshot_path(tmp_path, "maml", s) and path.name == f"step-{s:06d}.pt" for s, path in found.items()
    )
    profile = SINE.resolve("smoke", settings)
    learners = _learners(tmp_path, "maml")
    for step, path in found.items():
        snapshot = load_snapshot(path, run_config(SINE, "maml", profile, 0))
        assert snapshot["step"] == step
    # step 0 is the freshly built learner; the last multiple of 4 is the final checkpoint's learner
    assert _same_state(learners[0], build_method(SINE, "maml", profile, 0).state_dict())
    if 4 in learners:
        assert _same_state(learners[4], load_checkpoint(checkpoint_path(tmp_path, "maml"))["learner"])
    # meta-training moved the learner: the snapshots are not copies of one state
    assert not _same_state(learners[0], learners[steps[-1]])


def test_snapshots_do_not_change_training(tmp_path):
    plain = train("sine", "maml", "smoke", seed=3, out_dir=tmp_path / "a", progress=False)
    snapped = train("sine", "maml", "smoke", 3, tmp_path / "b", progress=False, settings={"snapshot_every": "1"})
    assert plain["per_task"] == snapped["per_task"]
    a = load_checkpoint(checkpoint_path(tmp_path / "a", "maml"))
    b = load_checkpoint(checkpoint_path(tmp_path / "b", "maml"))
    assert _same_state(a["learner"], b["learner"]) and _same_state(a["torch_rng"], b["torch_rng"])
    assert list_snapshots(tmp_path / "a", "maml") == {}


@pytest.mark.parametrize(("method", "stops"), [("maml", [2, 1]), ("warpgrad", [1])])
def test_a_resumed_run_writes_the_same_snapshots(tmp_path, method, stops):
    settings = {"snapshot_every": "1"}
    train("sine", method, "smoke", seed=1, out_dir=tmp_path / "a", progress=False, settings=settings)
    done = 0
    for n in stops:
        train(
            "sine", method, "smoke", 1, tmp_path / "b", resume=done > 0, stop_after=n, progress=False, settings=settings
        )
        done += n
        assert list(list_snapshots(tmp_path / "b", method)) == list(range(done + 1))
    train("sine", method, "smoke", 1, tmp_path / "b", resume=True, progress=False, settings=settings)
    full, resumed = _learners(tmp_path / "a", method), _learners(tmp_path / "b", method)
    assert list(full) == list(resumed) == [0, 1, 2, 3, 4]
    for step in full:
        assert _same_state(full[step], resumed[step]), step
    assert not _same_state(full[1], full[2])  # the check can fail: consecutive snapshots differ


def test_a_fresh_run_removes_an_earlier_runs_snapshots(tmp_path):
    out, settings = tmp_path / "run", {"snapshot_every": "3"}
    run("sine", "maml", "smoke", out_dir=out, progress=False, settings=settings)
    stray = snapshot_path(out, "maml", 99)
    stray.write_bytes(snapshot_path(out, "maml", 3).read_bytes())
    assert list(list_snapshots(out, "maml")) == [0, 3, 99]
    run("sine", "maml", "smoke", out_dir=out, progress=False, overwrite=True, settings=settings)
    assert list(list_snapshots(out, "maml")) == [0, 3]


def test_a_snapshot_of_another_run_is_refused(tmp_path):
    train("sine", "maml", "smoke", seed=0, out_dir=tmp_path, progress=False, settings={"snapshot_every": "2"})
    other = run_config(SINE, "maml", SINE.resolve("smoke", {"snapshot_every": "2"}), 1)
    with pytest.raises(FileFormatError, match="seed"):
        load_snapshot(snapshot_path(tmp_path, "maml", 2), other)
    path = snapshot_path(tmp_path, "maml", 4)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(FileFormatError, match="truncated"):
        load_snapshot(path)


def test_bad_snapshot_settings_are_refused(capsys):
    with pytest.raises(UsageError, match="snapshot_every"):
        get_experiment("digits-permuted").resolve("smoke", {"snapshot_every": "2"})
    assert get_experiment("digits-permuted").resolve("smoke", {"snapshot_every": "0"}).snapshot_every == 0
    assert main(["run", "sine", "--profile", "smoke", "--set", "snapshot_every=-1", "--no-progress"]) == 2
    assert main(["run", "sine", "--profile", "smoke", "--set", "snapshot_every=x", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("snapshot_every" in line for line in err)
