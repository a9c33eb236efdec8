"""This checkout's batch norm against another checkout's, swapped in and out of one process.

    git worktree add /tmp/before c4fd691
    python benchmarks/batch_norm_swap.py /tmp/before/src

On a machine whose speed drifts from minute to minute (a shared VM), separate processes give
ratios that drift too, so this benchmark alternates the two batch norms call by call in one process
on the same learner and data. It is for changes to ``warpgrad.core.batchnorm`` only: the other
checkout's ``batch_norm`` replaces ``warpgrad.layers.batch_norm``; everything else is this checkout's.

Workloads: one kanji-multishot quick WarpGrad meta-step (trajectories in lockstep and the exact
warp objective) and the second-order MAML meta-gradient of ``maml_peers.py`` (vmapped and looped).
It prints the largest difference between the two versions' meta-gradients (0 when the change
keeps every bit) and each version's median time.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

HERE = Path(__file__).resolve().parent


def load_batch_norm(src: Path) -> Callable:
    spec = importlib.util.spec_from_file_location("other_batchnorm", src / "warpgrad" / "core" / "batchnorm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.batch_norm


def kanji_meta_step(batch_size: int | None = None) -> tuple[Callable[[], dict], Callable[[], None]]:
    """The meta-gradients and the meta-step of kanji-multishot quick WarpGrad (``batch_size``: the
    profile's images per batch, or another)."""
    from warpgrad.experiments import build_method, get_experiment
    from warpgrad.tasks.base import SeededTask

    experiment = get_experiment("kanji-multishot")
    profile = experiment.profile("quick")
    if batch_size is not None:
        profile = profile.with_overrides({"batch_size": str(batch_size)})
    family = experiment.make_family(profile)
    learner = build_method(experiment, "warpgrad", profile, 0)

    def tasks() -> list:  # the same tasks, with fresh generators, on every call
        seeded = [
            (torch.Generator().manual_seed(i), torch.Generator().manual_seed(99 + i)) for i in range(profile.meta_batch)
        ]
        return [SeededTask(family.sample(sampler), batches) for sampler, batches in seeded]

    def gradients() -> dict:
        captured = learner.meta_gradients(tasks(), torch.Generator().manual_seed(1))
        return {(group, name): g for group, grads in captured.items() for name, g in grads.items()}

    return gradients, lambda: learner.meta_step(tasks(), torch.Generator().manual_seed(1))


def maml(batched: bool) -> tuple[Callable[[], dict], Callable[[], None]]:
    sys.path.insert(0, str(HERE))
    import maml_peers

    ours, twin = maml_peers.make_models(torch.float32)
    tasks = maml_peers.make_tasks(torch.float32)
    run = maml_peers.warpgrad_maml(batched)

    def gradients() -> dict:
        return dict(enumerate(run(ours, twin, tasks)))

    return gradients, lambda: run(ours, twin, tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other_src", type=Path, help="the other checkout's src/ directory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import warpgrad.layers as layers

    versions = {"this": layers.batch_norm, "other": load_batch_norm(args.other_src)}
    workloads = {"kanji-multishot meta-step": kanji_meta_step(), "MAML vmap": maml(True), "MAML loop": maml(False)}
    print(f"{args.threads} threads, {args.repeats} alternating calls each; other = {args.other_src}")
    for name, (gradients, step) in workloads.items():
        grads, times = {}, {version: [] for version in versions}
        for version, norm in versions.items():
            layers.batch_norm = norm
            grads[version] = gradients()  # also the warm-up
        diff = max(float((grads["this"][k] - grads["other"][k]).abs().max()) for k in grads["this"])
        for i in range(args.repeats):
            for version in list(versions)[:: 1 if i % 2 else -1]:
                layers.batch_norm = versions[version]
                start = time.perf_counter()
                step()
                times[version].append(time.perf_counter() - start)
        this, other = (statistics.median(times[v]) for v in ("this", "other"))
        print(
            f"{name:26s} max |grad diff| {diff:.1e}   this {this:.3f} s   other {other:.3f} s",
            f"  other/this {other / this:.2f}x",
        )
    layers.batch_norm = versions["this"]


if __name__ == "__main__":
    main()
