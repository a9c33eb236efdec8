"""This checkout's library against another checkout's, both loaded in one process, timed call by call.

    git worktree add /tmp/before 9ad8d52
    python benchmarks/checkout_swap.py /tmp/before/src

On a machine whose speed drifts from minute to minute (a shared VM), separate processes give
ratios that drift as much as the changes being measured. Here each checkout's ``warpgrad`` package
is imported under its own ``sys.modules`` (swapped in before each of its calls, so imports made
inside functions find their own version too), builds its own learner, and the two run alternately
on the same tasks. It prints the largest difference between the two versions' meta-gradients (0
when a change keeps every bit) and each version's median time.

Workloads: one kanji-multishot quick WarpGrad meta-step (``--batch-size 1``: with one-image
batches, what a meta-step costs regardless of its data) and the second-order MAML meta-gradient of
``maml_peers.py`` (vmapped).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from batch_norm_swap import kanji_meta_step, maml  # noqa: E402  (workloads; warpgrad imported when called)

SRC = HERE.parent / "src"


class Checkout:
    """One checkout's ``warpgrad`` modules, importable and swappable into ``sys.modules``."""

    def __init__(self, src: Path):
        for name in [m for m in sys.modules if m == "warpgrad" or m.startswith("warpgrad.")]:
            del sys.modules[name]
        sys.path.insert(0, str(src))
        import warpgrad  # noqa: F401  (this checkout's, now)

        sys.path.remove(str(src))
        self.src = src
        self.modules = {m: sys.modules[m] for m in sys.modules if m == "warpgrad" or m.startswith("warpgrad.")}

    def activate(self) -> None:
        for name in [m for m in sys.modules if m == "warpgrad" or m.startswith("warpgrad.")]:
            del sys.modules[name]
        sys.modules.update(self.modules)
        sys.path.insert(0, str(self.src))  # for modules first imported now

    def deactivate(self) -> None:
        sys.path.remove(str(self.src))
        self.modules.update({m: sys.modules[m] for m in sys.modules if m == "warpgrad" or m.startswith("warpgrad.")})


def maml_vmap() -> tuple[Callable[[], dict], Callable[[], None]]:
    sys.modules.pop("maml_peers", None)  # imported afresh, bound to the active checkout
    return maml(batched=True)


def compare(name: str, checkouts: list[Checkout], build: Callable[[], Any], calls: int) -> None:
    workloads = []
    for checkout in checkouts:
        checkout.activate()
        workloads.append(build())
        checkout.deactivate()
    grads, seconds = [], [[] for _ in checkouts]
    for checkout, (gradients, step) in zip(checkouts, workloads):
        checkout.activate()
        grads.append(gradients())
        step()  # warm-up
        checkout.deactivate()
    for _ in range(calls):
        for checkout, (_, step), times in zip(checkouts, workloads, seconds):
            checkout.activate()
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
            checkout.deactivate()
    difference = max(float((grads[0][k] - grads[1][k]).abs().max()) for k in grads[0])
    this, other = (statistics.median(t) for t in seconds)
    print(f"{name:<30} max |grad diff| {difference:.1e}   this {this:.3f} s   other {other:.3f} s", end="   ")
    print(f"other/this {other / this:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout's src directory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=8, help="alternating timed calls of each version")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkouts = [Checkout(SRC), Checkout(args.other.resolve())]
    for checkout in checkouts:  # each learner runs its own files
        assert Path(checkout.modules["warpgrad"].__file__).is_relative_to(checkout.src)
    print(f"{args.threads} threads, {args.calls} alternating calls each; other = {args.other}")
    compare("kanji-multishot meta-step", checkouts, lambda: kanji_meta_step(None), args.calls)
    compare("the same, one-image batches", checkouts, lambda: kanji_meta_step(1), args.calls)
    compare("MAML vmap (maml_peers)", checkouts, maml_vmap, args.calls)


if __name__ == "__main__":
    main()
