"""One WarpGrad meta-step of kanji-multishot quick after warm-up, against its FLOP bound.

    python benchmarks/kanji_meta_step.py                        # the figures in docs/benchmarks.md
    python benchmarks/kanji_meta_step.py --before /tmp/old/src  # also time another checkout's code

The experiment's own learner and tasks (``warpgrad run kanji-multishot --profile quick``: Conv4-16
with conv warps, 4 tasks of 5 characters, 10 inner steps, the engine's per-task seeds), with
``--threads`` torch threads (default 2). Every character the tasks use is rendered before timing
(warm-up), so the figure is the meta-step itself. Variants as in ``warpgrad_sine.py``: lockstep
(vmap), compiled (``compile=True``, compiled once in the warm-up), task by task
(``batched=False``) and ``--before SRC``; interleaved rounds in fresh
subprocesses; then the lockstep meta-step's two parts (trajectories, warp update) timed and counted
on their own. The FLOP bound is the meta-step's counted convolution and matrix-product FLOPs at
this machine's measured convolution rate (a 3×3 64→64 convolution on 64 images of 28×28), with
the same threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def worker(config: dict) -> dict:
    import time

    import torch

    torch.set_num_threads(config["threads"])
    from warpgrad.experiments import build_method, get_experiment
    from warpgrad.tasks.base import SeededTask

    experiment = get_experiment("kanji-multishot")
    profile = experiment.profile("quick")
    if not config["batched"]:
        profile = profile.with_overrides({"warpgrad.batched": "false"})
    if config.get("compile"):
        profile = profile.with_overrides({"warpgrad.compile": "true"})
    family = experiment.make_family(profile)
    learner = build_method(experiment, "warpgrad", profile, 0)
    seeds = torch.Generator().manual_seed(0)

    def meta_batch() -> list:
        return [
            SeededTask(family.sample(torch.Generator().manual_seed(int(a))), torch.Generator().manual_seed(int(b)))
            for a, b in torch.randint(0, 2**31, (profile.meta_batch, 2), generator=seeds)
        ]

    batches = [meta_batch() for _ in range(config["repeats"] + 1)]
    generator = torch.Generator().manual_seed(0)
    learner.meta_step(batches[0], generator)  # warm-up (kernels)
    for tasks in batches[1:]:  # render every character the timed steps use
        for task in tasks:
            task.train_batch()
    if config.get("phases"):
        return phases(learner, batches[1:], generator)
    times = []
    for tasks in batches[1:]:
        start = time.perf_counter()
        learner.meta_step(tasks, generator)
        times.append(time.perf_counter() - start)
    out = {"seconds": statistics.median(times)}
    if config.get("flops"):
        sys.path.insert(0, str(HERE))
        from _bound import counted_flops

        out["flops"] = counted_flops(lambda: learner.meta_step(batches[1], generator))
    return out


def phases(learner, batches: list, generator) -> dict:
    """Seconds (median over the meta-steps) and counted FLOPs of the meta-step's two parts: the
    lockstep trajectories and the warp update (the warp objective's value and gradient)."""
    import time

    sys.path.insert(0, str(HERE))
    from _bound import counted_flops

    parts = {"trajectories": "run_trajectories", "warp update": "warp_gradient"}
    seconds: dict[str, list[float]] = {name: [] for name in parts}
    flops = dict.fromkeys(parts, 0)
    counting = [False]
    kind = type(learner)
    originals = {name: getattr(kind, method) for name, method in parts.items()}

    def timed(name: str):
        def run(self, *args, **kwargs):
            if counting[0]:
                result = {}

                def call() -> None:
                    result["out"] = originals[name](self, *args, **kwargs)

                flops[name] += counted_flops(call)
                return result["out"]
            start = time.perf_counter()
            out = originals[name](self, *args, **kwargs)
            seconds[name][-1] += time.perf_counter() - start
            return out

        return run

    for name, method in parts.items():
        setattr(kind, method, timed(name))
    for tasks in batches:
        for values in seconds.values():
            values.append(0.0)
        learner.meta_step(tasks, generator)
    counting[0] = True
    learner.meta_step(batches[0], generator)
    return {name: {"seconds": statistics.median(seconds[name]), "flops": flops[name]} for name in parts}


def measure(config: dict, src: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(config["threads"])}
    command = [sys.executable, __file__, "--worker", json.dumps(config)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed meta-steps per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every variant")
    parser.add_argument("--before", type=Path, help="src directory of another checkout to time as well")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))
    from _bound import conv_rate

    rate = conv_rate()
    variants = {"lockstep": (SRC, True, False), "compiled": (SRC, True, True), "task by task": (SRC, False, False)}
    if args.before is not None:
        variants["before"] = (args.before.resolve(), True, False)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (src, batched, compiled) in variants.items():
            config = {"batched": batched, "compile": compiled, "repeats": args.repeats, "threads": args.threads}
            seconds[name].append(measure(config, src)["seconds"])
    flops = measure({"batched": True, "repeats": 1, "threads": args.threads, "flops": True}, SRC)["flops"]
    parts = measure({"batched": True, "repeats": args.repeats, "threads": args.threads, "phases": True}, SRC)
    bound = flops / rate
    print(f"{args.threads} threads; convolution rate: {rate / 1e9:.1f} GFLOP/s; meta-step: {flops / 1e9:.1f} GFLOP")
    print(f"FLOP bound: {bound:.3f} s")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:<13} {median:7.3f} s/meta-step  {median / bound:5.1f}× the FLOP bound")
    print("lockstep, by part (one more run):")
    for name, part in parts.items():
        part_bound = part["flops"] / rate
        print(
            f"  {name:<13} {part['seconds']:7.3f} s  {part['flops'] / 1e9:5.1f} GFLOP  "
            f"{part['seconds'] / part_bound:5.1f}× its FLOP bound"
        )
    if args.before is not None:
        ratio = statistics.median(seconds["before"]) / statistics.median(seconds["lockstep"])
        print(f"before / lockstep: {ratio:.2f}×")


if __name__ == "__main__":
    main()
