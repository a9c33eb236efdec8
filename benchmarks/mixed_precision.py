"""Are meta-gradients safe in mixed precision? Relative error of bf16 autocast vs float32.

For each method, the meta-gradient of one meta-batch (the same tasks and batches) is computed in
float64 (the reference), in float32, and in float32 under ``torch.autocast(dtype=bfloat16)``
(matrix products in bf16, as mixed-precision training would run them; on CPU here, on CUDA with
``--device cuda``). Printed: the relative error ``‖g − g₆₄‖ / ‖g₆₄‖`` of each, and the cosine
between the bf16 and float64 gradients. float32's error is the floor. For scale, the last column
is how much the float64 meta-gradient changes from one meta-batch to another (another 8 tasks):
the sampling noise every meta-step already carries.

    python benchmarks/mixed_precision.py
"""

from __future__ import annotations

import argparse
import contextlib

import torch

from warpgrad.engine.loop import _seeded, _task_seeds
from warpgrad.experiments import build_method, get_experiment

CASES = [
    ("warpgrad", {"warpgrad.objective": "exact", "warpgrad.init": "none"}, "WarpGrad exact (warp gradient)"),
    ("warpgrad", {"warpgrad.objective": "first_order", "warpgrad.init": "none"}, "WarpGrad first-order"),
    ("warpgrad", {"warpgrad.init": "maml"}, "Warp-MAML (warp + init gradients)"),
    ("maml", {}, "MAML (second order)"),
    ("fomaml", {}, "FOMAML"),
    ("leap", {}, "Leap"),
]


def meta_gradient(
    method: str, settings: dict[str, str], dtype: torch.dtype, autocast: bool, device: str, batch_seed: int = 0
):
    experiment = get_experiment("sine")
    profile = experiment.profile("quick").with_overrides(settings)
    learner = build_method(experiment, method, profile, 0)
    learner.model.to(device=device, dtype=dtype)
    family = experiment.make_family(profile)
    seeds = _task_seeds(torch.Generator().manual_seed(batch_seed), profile.meta_batch)
    tasks = _seeded(
        [family.sample(torch.Generator().manual_seed(a)) for a, _ in seeds], [b for _, b in seeds], torch.device(device)
    )
    for task in tasks:  # batches in the model's dtype
        original = task.train_batch, task.test_batch
        task.train_batch = lambda g=None, f=original[0]: tuple(t.to(dtype) for t in f(g))
        task.test_batch = lambda f=original[1]: tuple(t.to(dtype) for t in f())
    captured: list[torch.Tensor] = []

    def capture(grads):
        captured.extend(g.detach().double().reshape(-1).cpu() for g in grads)
        return [torch.zeros_like(g) for g in grads]  # leave the parameters where they are

    from warpgrad.core.shell import Reduction

    context = torch.autocast(device_type=device, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with context:
        learner.meta_step(tasks, torch.Generator().manual_seed(1), Reduction(capture))
    return torch.cat(captured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"sine quick profile (MLP 1-40-40-1, 8 tasks, K = 5), device {args.device}")
    print(
        f"{'method':36s} {'float32 rel. err':>17s} {'bf16 rel. err':>14s} {'bf16 cosine':>12s} "
        f"{'other meta-batch':>17s}"
    )
    for method, settings, label in CASES:
        reference = meta_gradient(method, settings, torch.float64, False, args.device)
        single = meta_gradient(method, settings, torch.float32, False, args.device)
        half = meta_gradient(method, settings, torch.float32, True, args.device)
        norm = reference.norm()
        other = meta_gradient(method, settings, torch.float64, False, args.device, batch_seed=1)
        cosine = float(torch.dot(half, reference) / (half.norm() * norm))
        print(
            f"{label:36s} {float((single - reference).norm() / norm):17.2e} "
            f"{float((half - reference).norm() / norm):14.2e} {cosine:12.5f} "
            f"{float((other - reference).norm() / norm):17.2e}"
        )


if __name__ == "__main__":
    main()
