"""Meta-step time and peak memory: (a) MAML vmap vs loop, (b) WarpGrad vs MAML as K grows.

Every configuration runs in a fresh subprocess, so its peak memory is its own: the figure is the
growth of the process's peak resident set size (ru_maxrss) over the meta-steps, above what the
process held after building the model and tasks. Times are the median of ``--repeats`` meta-steps
after one warm-up step. One run prints every figure and the ratios between them.

    python benchmarks/meta_step.py                 # the figures in docs/benchmarks.md
    python benchmarks/meta_step.py --repeats 2 --ks 5,25   # faster

Setup: sine regression tasks (10-shot), an MLP 1-256-256-1 (WarpGrad: a 256×256 linear warp after
each hidden layer), inner SGD (lr 0.01), 8 tasks per meta-batch. WarpGrad: offline, exact
objective, Warp-Leap initialisation, replay buffer of 32 points, one warp update on 32 points.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def worker(config: dict) -> dict:
    import torch

    from warpgrad import MAML, MLP, WarpGrad, sgd
    from warpgrad.tasks import SineFamily

    torch.manual_seed(0)
    family = SineFamily(shots=10, test_points=100)
    generator = torch.Generator().manual_seed(0)
    tasks = [family.sample(generator) for _ in range(config["meta_batch"])]
    k = config["k"]
    if config["method"] == "maml":
        learner = MAML(MLP(1, (256, 256), 1), sgd(0.01), k, batched=config["batched"])
    else:
        learner = WarpGrad(
            MLP(1, (256, 256), 1, warp={}),
            sgd(0.01),
            k,
            init="leap",
            buffer_size=32,
            warp_batch=32,
            batched=config["batched"],
        )
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    learner.meta_step(tasks, generator)  # warm-up
    times = []
    for _ in range(config["repeats"]):
        start = time.perf_counter()
        learner.meta_step(tasks, generator)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": statistics.median(times), "peak_mb": (peak - base) / 1024, "threads": torch.get_num_threads()}


def measure(config: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(config)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ks", default="5,25,100", help="inner-step counts for part (b)")
    parser.add_argument("--meta-batch", type=int, default=8)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    common = {"meta_batch": args.meta_batch, "repeats": args.repeats}
    print(f"(a) MAML, K=5, {args.meta_batch} tasks: vmap over tasks vs a per-task loop")
    print(f"{'variant':10s} {'ms/meta-step':>13s} {'peak MB':>8s}")
    rows = {}
    for batched in (True, False):
        r = measure({**common, "method": "maml", "k": 5, "batched": batched})
        rows[batched] = r
        print(f"{'vmap' if batched else 'loop':10s} {1000 * r['seconds']:13.1f} {r['peak_mb']:8.1f}")
    print(f"speed-up of vmap over loop: {rows[False]['seconds'] / rows[True]['seconds']:.2f}x\n")

    print(f"(b) WarpGrad (Warp-Leap, buffer 32) vs MAML as K grows, {args.meta_batch} tasks, both batched")
    print(
        f"{'K':>4s} {'MAML ms':>9s} {'MAML MB':>8s} {'WarpGrad ms':>12s} {'WarpGrad MB':>12s} "
        f"{'time ratio':>11s} {'memory ratio':>13s}"
    )
    for k in (int(v) for v in args.ks.split(",")):
        maml = measure({**common, "method": "maml", "k": k, "batched": True})
        warp = measure({**common, "method": "warpgrad", "k": k, "batched": True})
        print(
            f"{k:4d} {1000 * maml['seconds']:9.1f} {maml['peak_mb']:8.1f} {1000 * warp['seconds']:12.1f} "
            f"{warp['peak_mb']:12.1f} {maml['seconds'] / warp['seconds']:10.2f}x "
            f"{maml['peak_mb'] / max(warp['peak_mb'], 0.1):12.2f}x"
        )
    print(f"\n(ratios are MAML / WarpGrad; torch threads: {rows[True]['threads']})")


if __name__ == "__main__":
    main()
