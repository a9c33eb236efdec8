"""Peak memory against the number of inner steps K on the paper-scale conv net: WarpGrad vs MAML.

    python benchmarks/warpgrad_memory.py                       # the figures in docs/benchmarks.md
    python benchmarks/warpgrad_memory.py --warpgrad-ks 100,1000 --maml-ks 1,5

Setup: Conv4-64 (four conv3×3-64 → batch norm → ReLU → max-pool blocks, a linear head) with a
3×3 conv warp after each block (WarpGrad; MAML has no warps), 20-way 1-shot on random 28×28
images (20 support and 20 query images), one task per meta-batch, inner SGD at lr 0.01, one torch
thread. WarpGrad: offline, exact objective, Warp-Leap, replay buffer of 256 points (``same`` and
``bfloat16`` storage), one warp update on 32 points. MAML: second order.

Each configuration runs in a fresh subprocess; "peak MB" is the growth of the process's peak
resident set size over one meta-step, above what the process held after building the model and
the task (and running one K = 1 meta-step, so that allocator and library warm-up are not counted).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def worker(config: dict) -> dict:
    import torch
    from torch.nn import functional as F

    from warpgrad import MAML, Conv4, WarpGrad, sgd

    torch.set_num_threads(1)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    class Task:
        metric_name, lower_is_better = "accuracy", False
        support = (torch.rand(20, 1, 28, 28, generator=g), torch.arange(20))
        query = (torch.rand(20, 1, 28, 28, generator=g), torch.arange(20))

        def train_batch(self, generator):
            return self.support

        def test_batch(self):
            return self.query

        def loss(self, prediction, target):
            return F.cross_entropy(prediction, target)

        def metric(self, prediction, target):
            return (prediction.argmax(1) == target).float().mean()

    def build(k: int):
        if config["method"] == "maml":
            return MAML(Conv4(1, 20, 28, 64), sgd(0.01), k)
        model = Conv4(1, 20, 28, 64, warp={})
        return WarpGrad(model, sgd(0.01), k, warp_batch=32, buffer_dtype=config["buffer_dtype"])

    tasks = [Task()]
    build(1).meta_step(tasks, g)  # warm-up: allocator, kernels, libraries
    learner = build(config["k"])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    learner.meta_step(tasks, g)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mb": (peak - base) / 1024, "seconds": seconds}


def measure(config: dict) -> dict:
    command = [sys.executable, __file__, "--worker", json.dumps(config)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warpgrad-ks", default="100,1000,10000")
    parser.add_argument("--maml-ks", default="1,5,10,20")
    parser.add_argument("--buffer-dtypes", default="same,bfloat16", help="WarpGrad's replay-buffer storage")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    print(f"{'method':<22} {'K':>6} {'peak MB':>9} {'vs first K':>10} {'s/meta-step':>12}")
    configs = [("maml", "same", k) for k in args.maml_ks.split(",")]
    configs += [("warpgrad", dtype, k) for dtype in args.buffer_dtypes.split(",") for k in args.warpgrad_ks.split(",")]
    first: dict[tuple[str, str], float] = {}
    for method, dtype, k in configs:
        r = measure({"method": method, "buffer_dtype": dtype, "k": int(k)})
        label = method if method == "maml" else f"warpgrad (buffer {dtype})"
        base = first.setdefault((method, dtype), r["peak_mb"])
        print(f"{label:<22} {int(k):>6} {r['peak_mb']:>9.1f} {r['peak_mb'] / base:>9.2f}× {r['seconds']:>12.1f}")


if __name__ == "__main__":
    main()
