"""WarpGrad's outer iteration on sine: trajectories in lockstep (vmap) vs one task at a time.

    python benchmarks/warpgrad_sine.py                           # the figures in docs/benchmarks.md
    python benchmarks/warpgrad_sine.py --before /tmp/old/src     # also time another checkout's code

Setup (issue 15): MLP 1-40-40-1 with a 40×40 linear warp after each hidden layer, 10-shot sine
tasks, 20 inner SGD steps at lr 0.01, 5 tasks per meta-batch, one torch thread. WarpGrad with its
default options (exact objective, Warp-Leap initialisation, replay buffer of 256 points, one warp
update on every buffered point): ``offline`` (Algorithm 2) and ``online`` (Algorithm 1); and
continual WarpGrad (Algorithm 3) on 5-interval continual sine, 10 steps per interval, 8 sequences
per meta-batch (the paper profile's).

Variants: ``lockstep`` (the tasks' trajectories vmapped, the default), ``compiled`` (the same with
``compile=True``: the batched inner step compiled by ``torch.compile``), ``task by task`` (the same
code with ``batched=False``: the loop fallback), and with ``--before SRC`` the code at ``SRC``
(e.g. a ``git worktree`` of an older commit) with its defaults. Every measurement runs in a fresh
subprocess; rounds interleave the variants (A, B, C, A, B, C, …) so that load on the machine hits
them alike; the figure is the median over rounds of each round's median of ``--repeats`` steps.
The FLOP bound is the meta-step's counted matrix-product FLOPs at this machine's measured rate.
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

    torch.set_num_threads(1)
    from warpgrad import MLP, sgd

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = MLP(1, (40, 40), 1, warp={})
    options = {} if config["batched"] else {"batched": False}
    if config.get("compile"):
        options["compile"] = True
    if config["algorithm"] == "continual":
        from warpgrad.methods.continual.warpgrad import ContinualWarpGrad
        from warpgrad.tasks.continual import ContinualSineFamily

        family = ContinualSineFamily(5, 10, 50)
        tasks = [family.sample(generator) for _ in range(8)]
        learner = ContinualWarpGrad(model, sgd(0.01), 10, meta_optimizer="adam", warp_lr=1e-3, **options)
    else:
        from warpgrad import WarpGrad
        from warpgrad.tasks import SineFamily

        family = SineFamily(shots=10, test_points=100)
        tasks = [family.sample(generator) for _ in range(5)]
        learner = WarpGrad(model, sgd(0.01), 20, algorithm=config["algorithm"], **options)
    learner.meta_step(tasks, generator)  # warm-up
    times = []
    for _ in range(config["repeats"]):
        start = time.perf_counter()
        learner.meta_step(tasks, generator)
        times.append(time.perf_counter() - start)
    out = {"seconds": statistics.median(times)}
    if config.get("flops"):
        sys.path.insert(0, str(HERE))
        from _bound import counted_flops

        out["flops"] = counted_flops(lambda: learner.meta_step(tasks, generator))
    return out


def measure(config: dict, src: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, __file__, "--worker", json.dumps(config)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed meta-steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every variant")
    parser.add_argument("--before", type=Path, help="src directory of another checkout to time as well")
    parser.add_argument("--algorithms", default="offline,online,continual")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))
    from _bound import gemm_rate

    rate = gemm_rate()
    print(f"one thread; matrix-product rate (1024×1024 float32): {rate / 1e9:.1f} GFLOP/s")
    variants = {"lockstep": (SRC, True), "compiled": (SRC, "compiled"), "task by task": (SRC, False)}
    if args.before is not None:
        variants["before"] = (args.before.resolve(), True)
    print(f"{'algorithm':<10} " + " ".join(f"{name + ' ms':>16}" for name in variants), end="")
    print(
        f" {'task-by-task/lockstep':>21}"
        + (f" {'before/lockstep':>15} {'before/compiled':>15}" if args.before else ""),
        end="",
    )
    print("  lockstep vs FLOP bound")
    for algorithm in args.algorithms.split(","):
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (src, batched) in variants.items():
                config = {"algorithm": algorithm, "batched": bool(batched), "repeats": args.repeats}
                config["compile"] = batched == "compiled"
                seconds[name].append(measure(config, src)["seconds"])
        flops = measure({"algorithm": algorithm, "batched": True, "repeats": 1, "flops": True}, SRC)["flops"]
        median = {name: statistics.median(s) for name, s in seconds.items()}
        line = f"{algorithm:<10} " + " ".join(f"{1e3 * median[name]:>16.1f}" for name in variants)
        line += f" {median['task by task'] / median['lockstep']:>20.2f}×"
        if args.before:
            line += f" {median['before'] / median['lockstep']:>14.2f}× {median['before'] / median['compiled']:>14.2f}×"
        bound = flops / rate
        print(f"{line}  {median['lockstep'] / bound:.0f}× ({flops / 1e6:.0f} MFLOP: {1e3 * bound:.2f} ms)")
    errors = ", ".join(f"{group} {error:.1e}" for group, error in bfloat16_buffer_error().items())
    print(f"replay buffer in bfloat16 (offline): relative error of the meta-gradients: {errors}")


def bfloat16_buffer_error() -> dict[str, float]:
    """Relative error ‖g_bf16 − g‖ / ‖g‖ of each meta-gradient when the replay buffer stores the
    points in bfloat16 instead of float32 (same tasks, same draws)."""
    import torch

    from warpgrad import MLP, WarpGrad, sgd
    from warpgrad.tasks import SineFamily

    grads = {}
    for dtype in ("same", "bfloat16"):
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        tasks = [SineFamily(shots=10, test_points=100).sample(generator) for _ in range(5)]
        learner = WarpGrad(MLP(1, (40, 40), 1, warp={}), sgd(0.01), 20, buffer_dtype=dtype)
        grads[dtype] = learner.meta_gradients(tasks, generator)
    errors = {}
    for group, exact in grads["same"].items():
        diff = sum(float((grads["bfloat16"][group][k] - g).pow(2).sum()) for k, g in exact.items())
        norm = sum(float(g.pow(2).sum()) for g in exact.values())
        errors[group] = (diff / norm) ** 0.5
    return errors


if __name__ == "__main__":
    main()
