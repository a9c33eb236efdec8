"""Distributed meta-training: sharded meta-batches give the one-process result.

Two kinds of check:

* in-process, for every sine method: the meta-gradients each shard hands to its meta-optimiser,
  weighted by its share of the meta-batch and summed, equal the one-process meta-gradients
  (what the all-reduce computes), and sharded evaluation equals whole evaluation;
* real processes (gloo on loopback, through ``warpgrad run --nproc 2``): the final
  meta-parameters and results equal a one-process run's, and a distributed run killed midway
  resumes to the same result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from warpgrad.cli import main
from warpgrad.core.shell import LOCAL, Reduction
from warpgrad.distributed import Cluster
from warpgrad.engine import run
from warpgrad.engine.checkpoint import load_checkpoint
from warpgrad.engine.loop import _task_seeds
from warpgrad.experiments import build_method, get_experiment
from warpgrad.tasks.base import SeededTask

SINE = get_experiment("sine")
SMOKE = SINE.profile("smoke")
TOLERANCE = 1e-5  # float32; sharding only changes the order of the sums (measured: ~1e-7)


def _seeded_tasks(seeds, indices):
    family = SINE.make_family(SMOKE)
    generator = torch.Generator
    return [
        SeededTask(family.sample(generator().manual_seed(seeds[i][0])), generator().manual_seed(seeds[i][1]))
        for i in indices
    ]


def _recorded_gradients(learner, tasks, weight):
    """The gradients ``learner.meta_step(tasks)`` hands to its meta-optimisers, times ``weight``."""
    recorded: list[list[torch.Tensor]] = []

    def record(grads):
        recorded.append([g.detach().clone() * weight for g in grads])
        return grads

    learner.meta_step(tasks, torch.Generator().manual_seed(5), Reduction(record))
    return recorded


@pytest.mark.parametrize(
    "method, settings, world_size",
    [(m, {}, 2) for m in SINE.methods if m != "baseline"]
    + [("warpgrad", {"warpgrad.algorithm": "online"}, 2), ("warpgrad", {"warpgrad.init": "leap"}, 3)],
)
def test_shard_gradients_sum_to_the_one_process_gradient(method, settings, world_size):
    profile = SMOKE.with_overrides({"meta_batch": "5", **settings})  # unequal shards: 2 + 3, 1 + 2 + 2
    n = profile.meta_batch
    seeds = _task_seeds(torch.Generator().manual_seed(0), n)
    whole = _recorded_gradients(build_method(SINE, method, profile, 0), _seeded_tasks(seeds, range(n)), 1.0)
    summed = None
    for rank in range(world_size):
        shard = Cluster(rank, world_size).shard(n)
        learner = build_method(SINE, method, profile, 0)  # the same initialisation on every rank
        part = _recorded_gradients(learner, _seeded_tasks(seeds, shard), len(shard) / n)
        summed = part if summed is None else [[a + b for a, b in zip(x, y)] for x, y in zip(summed, part)]
    assert len(whole) == len(summed) >= 1
    for full, sharded in zip(whole, summed):
        for a, b in zip(full, sharded):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=TOLERANCE)
    assert any(float(g.abs().max()) > 1e-3 for grads in whole for g in grads)  # not trivially zero


def test_shards_cover_every_task_once():
    for n in range(1, 12):
        for world in range(1, n + 1):
            shards = [Cluster(r, world).shard(n) for r in range(world)]
            assert [i for s in shards for i in s] == list(range(n))
            assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_no_reducer_outside_a_distributed_step():
    grads = [torch.ones(2)]
    assert LOCAL.gradients(grads)[0] is grads[0]
    assert Cluster().reduction(4) is LOCAL
    doubling = Reduction(lambda gs: [g * 2 for g in gs])
    assert float(doubling.gradients(grads)[0][0]) == 2.0
    assert LOCAL.gradients(grads)[0] is grads[0]


# ------------------------------------------------------------------------------ real processes


def _warpgrad(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "warpgrad", *args], capture_output=True, text=True, env=env, timeout=300, **kwargs
    )


def _final_models(out: Path, methods: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    return {m: load_checkpoint(out / m / "checkpoint.pt")["learner"]["model"] for m in methods}


def _assert_same_run(one: Path, two: Path, methods: list[str]) -> None:
    a, b = _final_models(one, methods), _final_models(two, methods)
    for m in methods:
        for key in a[m]:
            torch.testing.assert_close(b[m][key], a[m][key], rtol=0, atol=TOLERANCE, msg=f"{m} {key}")
    ra, rb = (json.loads((d / "results.json").read_text())["methods"] for d in (one, two))
    for m in methods:
        assert rb[m]["per_task"] == pytest.approx(ra[m]["per_task"], rel=1e-4, abs=1e-5)
        assert rb[m]["steps"] == ra[m]["steps"]


def test_two_gloo_processes_equal_one(tmp_path):
    methods = ["warpgrad", "maml", "leap"]
    run(SINE, methods, "smoke", 3, tmp_path / "one", progress=False)
    done = _warpgrad(
        "run",
        "sine",
        "--profile",
        "smoke",
        "--seed",
        "3",
        "--method",
        ",".join(methods),
        "--out",
        str(tmp_path / "two"),
        "--nproc",
        "2",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test mse (lower is better)") == 1  # rank 0 alone prints the table
    _assert_same_run(tmp_path / "one", tmp_path / "two", methods)
    for runs, ranks in (("one", 1), ("two", 2)):  # where each rank's time went
        timing = json.loads((tmp_path / runs / "results.json").read_text())["methods"]["warpgrad"]["time_per_rank"]
        assert len(timing) == ranks
        for rank in timing:
            assert 0 < rank["meta_step_s"] and 0 <= rank["meta_step_collective_s"] <= rank["meta_step_s"]
            assert rank["meta_step_collective_s"] <= rank["collective_s"]
            assert rank["validation_s"] > 0 and rank["checkpoint_s"] >= 0  # rank 0 saves, the other waits
        assert (max(r["collective_s"] for r in timing) > 0) == (ranks == 2)


def test_killed_distributed_run_resumes_to_the_same_result(tmp_path):
    settings = ["--set", "meta_steps=16", "--set", "checkpoint_every=1"]
    common = ["run", "sine", "--profile", "smoke", "--method", "warpgrad", "--no-progress", *settings]
    run(
        SINE,
        ["warpgrad"],
        "smoke",
        0,
        tmp_path / "one",
        progress=False,
        settings={"meta_steps": "16", "checkpoint_every": "1"},
    )

    out = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "warpgrad", *common, "--out", str(out), "--nproc", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    checkpoint = out / "warpgrad" / "checkpoint.pt"
    killed_at = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and launcher.poll() is None:
        if checkpoint.exists():
            step = load_checkpoint(checkpoint)["step"]
            if step >= 2:
                os.killpg(launcher.pid, signal.SIGKILL)  # launcher, torchrun and both ranks
                launcher.wait()
                killed_at = step
                break
        time.sleep(0.02)
    assert killed_at is not None and killed_at < 16, "the run finished before it could be killed"

    resumed = _warpgrad(*common, "--out", str(out), "--nproc", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(tmp_path / "one", out, ["warpgrad"])


# ------------------------------------------------------------------------------ CLI and devices


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nproc", "0"], "--nproc must be >= 1"),
        (["--nproc", "5"], "meta_batch = 4 is smaller than --nproc 5"),
        (["--device", "tpu"], "invalid choice"),
    ],
)
def test_bad_distributed_arguments_exit_2(args, message, tmp_path, capsys):
    assert main(["run", "sine", "--profile", "smoke", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_stream_experiments_refuse_several_processes(tmp_path, capsys):
    assert main(["run", "digits-permuted", "--profile", "smoke", "--out", str(tmp_path), "--nproc", "2"]) == 2
    assert "runs in one process" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "sine", "--profile", "smoke", "--out", str(tmp_path), "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_run_matches_cpu(tmp_path):
    methods = ["warpgrad", "maml"]
    run(SINE, methods, "smoke", 0, tmp_path / "cpu", progress=False)
    run(SINE, methods, "smoke", 0, tmp_path / "cuda", progress=False, cluster=Cluster(device=torch.device("cuda")))
    ra, rb = (json.loads((tmp_path / d / "results.json").read_text())["methods"] for d in ("cpu", "cuda"))
    for m in methods:
        assert rb[m]["mean"] == pytest.approx(ra[m]["mean"], rel=1e-3)


def test_bf16_autocast_is_active_and_close_to_fp32(tmp_path):
    runs = {p: run(SINE, ["maml"], "smoke", 0, tmp_path / p, progress=False, precision=p) for p in ("fp32", "bf16")}
    a, b = (runs[p]["methods"]["maml"] for p in ("fp32", "bf16"))
    assert (a["precision"], b["precision"]) == ("fp32", "bf16")
    assert a["per_task"] != b["per_task"]  # bf16 matrix products really ran
    assert b["mean"] == pytest.approx(a["mean"], rel=0.05)
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        run(SINE, ["maml"], "smoke", 0, tmp_path / "x", progress=False, precision="fp16")


def test_ranks_split_warpgrads_replay_budget(monkeypatch):
    """Each rank keeps its share of the buffer and draws its share of the warp batch, so the
    ranks together spend one process's budget (not world_size times it)."""
    from warpgrad.methods import warpgrad as warpgrad_module

    seen: dict[str, list[int]] = {"capacity": [], "drawn": []}
    original_init, original_sample = warpgrad_module.PointBuffer.__init__, warpgrad_module.PointBuffer.sample

    def init(self, capacity, dtype=None):
        seen["capacity"].append(capacity)
        original_init(self, capacity, dtype)

    def sample(self, n, generator):
        seen["drawn"].append(n)
        return original_sample(self, n, generator)

    monkeypatch.setattr(warpgrad_module.PointBuffer, "__init__", init)
    monkeypatch.setattr(warpgrad_module.PointBuffer, "sample", sample)
    profile = SMOKE.with_overrides({"meta_batch": "5", "warpgrad.buffer_size": "10", "warpgrad.warp_batch": "6"})
    seeds = _task_seeds(torch.Generator().manual_seed(0), 5)
    for share, capacity, drawn in ((1.0, 10, 6), (0.4, 4, 2), (0.6, 6, 4)):
        learner = build_method(SINE, "warpgrad", profile, 0)
        learner.meta_step(_seeded_tasks(seeds, range(5)), torch.Generator().manual_seed(1), Reduction(share=share))
        assert (seen["capacity"][-1], seen["drawn"][-1]) == (capacity, drawn)


def test_sine_continual_runs_through_the_engine_on_cpu_only(tmp_path):
    results = run("sine-continual", ["baseline"], "smoke", 0, tmp_path, progress=False)
    assert results["methods"]["baseline"]["steps"] == 2
    with pytest.raises(ValueError, match="CPU only"):
        run(
            "sine-continual",
            ["baseline"],
            "smoke",
            0,
            tmp_path / "cuda",
            progress=False,
            cluster=Cluster(device=torch.device("cuda")),
        )
