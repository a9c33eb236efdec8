"""WarpGrad on your own network and your own tasks, with the library API only.

Any nn.Module works: wrap the layers that should act as a learned preconditioner in
``warpgrad.Warp``; everything else is adapted per task. A task is any object with
``train_batch(generator)``, ``test_batch()``, ``loss``, ``metric``, ``metric_name`` and
``lower_is_better``.

    python examples/custom_model.py            # ~20 s on a laptop CPU
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.nn import functional as F

import warpgrad


class LinearRegressionTask:
    """y = w·x + noise, with a task-specific w; 20 training points, 100 held-out points."""

    metric_name = "mse"
    lower_is_better = True

    def __init__(self, generator: torch.Generator, dim: int = 8):
        w = torch.randn(dim, 1, generator=generator)
        x = torch.randn(120, dim, generator=generator)
        y = x @ w + 0.1 * torch.randn(120, 1, generator=generator)
        self.train, self.test = (x[:20], y[:20]), (x[20:], y[20:])

    def train_batch(self, generator: torch.Generator):
        return self.train

    def test_batch(self):
        return self.test

    def loss(self, prediction, target):
        return F.mse_loss(prediction, target)

    metric = loss


def main(meta_steps: int = 150) -> dict[str, float]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 32),
        nn.Tanh(),
        warpgrad.Warp(nn.Linear(32, 32)),  # a meta-learned warp layer
        nn.Linear(32, 1),
    )
    learner = warpgrad.WarpGrad(
        model,
        warpgrad.sgd(0.05),
        inner_steps=10,
        objective="exact",
        init="leap",
        meta_optimizer="adam",
        warp_lr=3e-3,
        init_lr=3e-3,
    )
    generator = torch.Generator().manual_seed(0)
    held_out = [LinearRegressionTask(torch.Generator().manual_seed(10_000 + i)) for i in range(50)]
    before = float(learner.evaluate(held_out, generator)["mse"].mean())
    for step in range(meta_steps):
        metrics = learner.meta_step([LinearRegressionTask(generator) for _ in range(4)], generator)
        if (step + 1) % 50 == 0:
            print(f"meta-step {step + 1}: warp loss {metrics['warp_loss']:.3f}")
    after = float(learner.evaluate(held_out, generator)["mse"].mean())
    print(f"held-out MSE after 10 inner steps: {before:.3f} before meta-training, {after:.3f} after")
    return {"before": before, "after": after}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meta-steps", type=int, default=150)
    main(parser.parse_args().meta_steps)
