"""Throughput: (a) tasks per second and peak memory per method and K; (b) scaling over processes.

(a) Every sine method of ``warpgrad run sine`` (the experiment's own recipes: MLP 1-40-40-1 with
linear warps for WarpGrad/T-Nets, inner SGD lr 0.01, 8 tasks per meta-batch) with K inner steps.
Each configuration runs in a fresh subprocess; tasks/s is the meta-batch over the median of
``--repeats`` meta-steps after one warm-up; peak MB is the growth of the process's peak resident
set size over those steps.

(b) ``warpgrad run EXPERIMENT --method warpgrad`` through the real engine, four ways on the same
machine: one process with one torch thread, one process with one thread per core, ``--nproc 2``
(one thread each), and two independent one-thread runs side by side (no communication: the most
two processes can get from this hardware, since they share its caches and memory bandwidth).
Tasks/s is meta-steps × meta-batch over the training wall time the run records (data loading and
the final test excluded). Scaling efficiency is the 2-process throughput over twice the 1-process,
1-thread throughput; the ceiling is the same for the two independent runs (their tasks/s summed).

    python benchmarks/throughput.py                   # the figures in docs/benchmarks.md
    python benchmarks/throughput.py --skip-scaling    # (a) only
    python benchmarks/throughput.py --skip-methods --experiments kanji-multishot --rounds 3 --per-rank
                                                      # (b) with --nproc 2 at twice the meta-batch too
    python benchmarks/throughput.py --skip-methods --experiments kanji-multishot --rounds 3 --decompose
                                                      # (b) and where a rank's meta-step time goes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SINE_METHODS = ("maml", "fomaml", "metasgd", "tnets", "reptile", "leap", "finetune", "warpgrad")


def worker(config: dict) -> dict:
    import torch

    from warpgrad.engine.loop import _seeded, _task_seeds
    from warpgrad.experiments import build_method, get_experiment

    experiment = get_experiment("sine")
    profile = experiment.profile("quick").with_overrides({"inner_steps": str(config["k"])})
    learner = build_method(experiment, config["method"], profile, 0)
    family = experiment.make_family(profile)
    n = profile.meta_batch
    seeds = _task_seeds(torch.Generator().manual_seed(0), n)

    def tasks():
        sampled = [family.sample(torch.Generator().manual_seed(a)) for a, _ in seeds]
        return _seeded(sampled, [b for _, b in seeds], torch.device("cpu"))

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    learner.meta_step(tasks(), torch.Generator().manual_seed(1))  # warm-up
    times = []
    for _ in range(config["repeats"]):
        batch = tasks()
        start = time.perf_counter()
        learner.meta_step(batch, torch.Generator().manual_seed(1))
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "tasks_per_s": n / statistics.median(times),
        "peak_mb": (peak - base) / 1024,
        "threads": torch.get_num_threads(),
    }


def measure(config: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(config)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def engine_throughput(experiment: str, profile: str, settings: list[str], threads: int, nproc: int) -> dict:
    """Tasks/s of ``warpgrad run EXPERIMENT --method warpgrad`` as the engine records it."""
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable,
            "-m",
            "warpgrad",
            "run",
            experiment,
            "--method",
            "warpgrad",
            "--profile",
            profile,
            "--out",
            out,
            "--no-progress",
            *[p for s in settings for p in ("--set", s)],
        ]
        if nproc > 1:
            command += ["--nproc", str(nproc)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        results = json.loads((Path(out) / "results.json").read_text())
    entry = results["methods"]["warpgrad"]
    from warpgrad.experiments import get_experiment

    prof = get_experiment(experiment).profile(profile).with_overrides(dict(s.split("=", 1) for s in settings))
    tasks_per_s = entry["steps"] * prof.meta_batch / entry["wall_time_s"]
    return {
        "tasks_per_s": tasks_per_s,
        "meta_step_tasks_per_s": entry["steps"]
        * prof.meta_batch
        / max(t["meta_step_s"] + t["sample_s"] for t in entry["time_per_rank"]),
        "wall_time_s": entry["wall_time_s"],
        "steps": entry["steps"],
        "mean": entry["mean"],
        "timing": entry["time_per_rank"],
    }


def scaled_batch(experiment: str, profile: str, factor: float) -> list[str]:
    """``--set`` overrides that scale the profile's meta-batch and WarpGrad's warp batch."""
    from warpgrad.experiments import get_experiment

    prof = get_experiment(experiment).profile(profile)
    warp_batch = prof.options.get("warpgrad", {}).get("warp_batch")
    scaled = [f"meta_batch={int(factor * prof.meta_batch)}"]
    return scaled + ([f"warpgrad.warp_batch={int(factor * warp_batch)}"] if warp_batch else [])


def decomposition(alone: dict, pair: dict, ranks: dict) -> str:
    """Seconds per meta-step: one process at a rank's share of the meta-batch alone, two such
    processes side by side, and a ``--nproc 2`` rank (its collectives, waiting included, apart)."""

    def per_step(run: dict, key: str = "meta_step_s") -> float:
        return max(t[key] for t in run["timing"]) / run["steps"]

    one, two = per_step(alone), statistics.mean(per_step(r) for r in pair["runs"])
    rank, waiting = per_step(ranks), per_step(ranks, "meta_step_collective_s")
    return (
        f"  a rank's meta-step: {one:.3f} s for one process at a rank's batch alone, {two:.3f} s with two "
        f"such processes side by side ({two / one:.2f}x: shared caches and memory), {rank:.3f} s in an "
        f"--nproc 2 rank ({rank / two:.2f}x that), of which {waiting:.3f} s in collectives (waiting included)"
    )


def side_by_side(experiment: str, profile: str, settings: list[str]) -> dict:
    """Two independent one-thread runs at once: their summed tasks/s (and step tasks/s)."""
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: engine_throughput(experiment, profile, settings, 1, 1), range(2)))
    return {
        "tasks_per_s": sum(r["tasks_per_s"] for r in runs),
        "meta_step_tasks_per_s": sum(r["meta_step_tasks_per_s"] for r in runs),
        "runs": runs,
    }


def _median_run(runs: list[dict]) -> dict:
    """The run of median tasks/s, its step throughput replaced by the median of all."""
    ordered = sorted(runs, key=lambda r: r["tasks_per_s"])
    return {
        **ordered[len(ordered) // 2],
        "meta_step_tasks_per_s": statistics.median(r["meta_step_tasks_per_s"] for r in runs),
    }


def breakdown(name: str, run: dict) -> str:
    """Where each rank's training wall time went: meta-step compute, collectives within meta-steps
    (waiting for the other rank included), sampling, validation, checkpoints, and the rest."""
    parts = []
    for rank, t in enumerate(run["timing"]):
        compute = t["meta_step_s"] - t["meta_step_collective_s"]
        counted = t["meta_step_s"] + t["sample_s"] + t["validation_s"] + t["checkpoint_s"]
        parts.append(
            f"rank {rank}: compute {compute:.1f} s, in-step collectives {t['meta_step_collective_s']:.1f} s, "
            f"sampling {t['sample_s']:.1f} s, validation {t['validation_s']:.1f} s, "
            f"checkpoints {t['checkpoint_s']:.1f} s, rest {run['wall_time_s'] - counted:.1f} s"
        )
    return f"  {name} (wall {run['wall_time_s']:.1f} s): " + "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ks", default="5,25", help="inner-step counts for part (a)")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-methods", action="store_true", help="part (b) only")
    parser.add_argument("--experiments", default="sine,kanji-multishot", help="part (b)'s experiments")
    parser.add_argument("--rounds", type=int, default=1, help="part (b)'s interleaved repetitions (medians)")
    parser.add_argument(
        "--per-rank",
        action="store_true",
        help="part (b): also --nproc 2 with the meta-batch and warp batch doubled (each rank runs one process's)",
    )
    parser.add_argument(
        "--decompose",
        action="store_true",
        help="part (b): also one process at half the meta-batch, alone and two side by side (where a rank's time goes)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    ks = [] if args.skip_methods else [int(k) for k in args.ks.split(",")]
    if ks:
        print("(a) sine, 8 tasks per meta-batch: tasks/s (peak MB) per method and K")
        print(f"{'method':10s}" + "".join(f"{f'K={k}':>22s}" for k in ks))
    threads = None
    for method in SINE_METHODS if ks else ():
        cells = []
        for k in ks:
            r = measure({"method": method, "k": k, "repeats": args.repeats})
            threads = r["threads"]
            cells.append(f"{r['tasks_per_s']:10.1f} ({r['peak_mb']:6.1f} MB)")
        print(f"{method:10s}" + "".join(f"{c:>22s}" for c in cells))
    if ks:
        print(f"(torch threads: {threads})\n")
    if args.skip_scaling:
        return

    cores = os.cpu_count() or 1
    workloads = [
        ("sine", "quick", ["meta_steps=100", "val_tasks=2", "test_tasks=2"]),
        ("kanji-multishot", "quick", ["meta_steps=20", "val_tasks=2", "test_tasks=2"]),
    ]
    print(f"(b) scaling over processes, warpgrad, {cores} cores: tasks/s through `warpgrad run`")
    print(
        f"{'experiment':16s} {'1 proc x 1 thr':>15s} {f'1 proc x {cores} thr':>15s} {'2 procs x 1 thr':>16s} "
        f"{'efficiency':>11s} {'step effic.':>12s} {'vs 1 proc x all':>16s} {'metric diff':>12s} "
        f"{'2 independent':>14s} {'ceiling':>8s} {'vs ceiling':>11s}"
    )
    configs = [(1, 1), (cores, 1), (1, 2), (1, 0)]  # (threads, processes); 0: two independent runs
    for experiment, profile, settings in workloads:
        if experiment not in args.experiments.split(","):
            continue
        doubled = settings + scaled_batch(experiment, profile, 2)
        halved = settings + scaled_batch(experiment, profile, 0.5)
        extra = ([lambda: engine_throughput(experiment, profile, doubled, 1, 2)] if args.per_rank else []) + (
            [
                lambda: engine_throughput(experiment, profile, halved, 1, 1),
                lambda: side_by_side(experiment, profile, halved),
            ]
            if args.decompose
            else []
        )
        rounds = [
            [
                engine_throughput(experiment, profile, settings, threads, nproc)
                if nproc
                else side_by_side(experiment, profile, settings)
                for threads, nproc in configs
            ]
            + [run() for run in extra]
            for _ in range(args.rounds)
        ]  # interleaved, so slow phases of the machine hit every configuration alike
        one, all_threads, two, apart = (_median_run([r[i] for r in rounds]) for i in range(len(configs)))
        difference = abs(two["mean"] - one["mean"]) / max(abs(one["mean"]), 1e-12)
        print(
            f"{experiment:16s} {one['tasks_per_s']:15.1f} {all_threads['tasks_per_s']:15.1f} "
            f"{two['tasks_per_s']:16.1f} {two['tasks_per_s'] / (2 * one['tasks_per_s']):10.2f}x "
            f"{two['meta_step_tasks_per_s'] / (2 * one['meta_step_tasks_per_s']):11.2f}x "
            f"{two['tasks_per_s'] / all_threads['tasks_per_s']:15.2f}x {difference:11.2%} "
            f"{apart['tasks_per_s']:14.1f} {apart['tasks_per_s'] / (2 * one['tasks_per_s']):7.2f}x "
            f"{two['tasks_per_s'] / apart['tasks_per_s']:10.2f}x"
        )
        print(breakdown("1 proc x 1 thr", one))
        print(breakdown("2 procs x 1 thr", two))
        for i, run in enumerate(apart["runs"]):
            print(breakdown(f"independent run {i + 1} of 2", run))
        if args.per_rank:
            per_rank = _median_run([r[len(configs)] for r in rounds])
            print(
                f"  --nproc 2 with the meta-batch doubled (each rank runs the 1-process meta-batch): "
                f"{per_rank['tasks_per_s']:.1f} tasks/s, {per_rank['tasks_per_s'] / one['tasks_per_s']:.2f}x the "
                f"1-process 1-thread run ({per_rank['tasks_per_s'] / (2 * one['tasks_per_s']):.2f} efficiency)"
            )
            print(breakdown("2 procs x 1 thr, doubled batch", per_rank))
        if args.decompose:
            first = len(configs) + (1 if args.per_rank else 0)
            alone = _median_run([r[first] for r in rounds])
            pair = _median_run([r[first + 1] for r in rounds])
            print(decomposition(alone, pair, two))
    print(
        "(efficiency: 2-process tasks/s over twice the 1-process 1-thread tasks/s; step efficiency: the same "
        "counting only sampling and meta-steps (the slower rank's), without validation and checkpoints; "
        "ceiling: two independent 1-thread runs side by side, summed, over twice the 1-process tasks/s (what "
        "the shared hardware leaves for two processes); vs ceiling: --nproc 2 over those two runs; "
        "metric diff: relative difference of the 2-process run's test metric from the 1-process one: float "
        "summation order only on sine, amplified over the meta-steps; also sampling on kanji-multishot, whose "
        "warp batch is a random subset of the buffer; see docs/distributed.md)"
    )


if __name__ == "__main__":
    main()
