"""Reptile: move the initialisation towards the parameters each task's training reaches.

Reptile (Nichol, Achiam, Schulman, 2018) runs K inner steps from θ₀ on each task of a
meta-batch and updates θ₀ ← θ₀ + ε (mean_τ θ_K^τ − θ₀). Here the "gradient" θ₀ − mean_τ θ_K^τ
is handed to a meta-optimiser (SGD with learning rate ε gives exactly the update above). Warp
layers in the model, if any, are held fixed.

References:
    Nichol, Achiam, Schulman. On First-Order Meta-Learning Algorithms. 2018. arXiv:1803.02999.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from warpgrad.core.batching import batching_allowed
from warpgrad.core.optim import InnerOptimizer
from warpgrad.core.tree import Params
from warpgrad.methods.base import InitialisationLearner
from warpgrad.methods.leap import trajectories
from warpgrad.methods.registry import register
from warpgrad.tasks.base import Task


@dataclass
class ReptileConfig:
    """Reptile's options.

    Attributes:
        meta_optimizer: ``sgd`` (the paper's update with ``meta_lr`` = ε) or ``adam``.
        meta_lr: the meta learning rate ε.
        batched: run the tasks' trajectories in lockstep with ``vmap`` when the model allows it.
    """

    meta_optimizer: str = "sgd"
    meta_lr: float = 1.0
    batched: bool = True


class Reptile(InitialisationLearner):
    """Reptile; with meta-optimiser ``sgd`` at ``meta_lr`` = ε this is the paper's update."""

    name = "reptile"

    def __init__(
        self,
        model: nn.Module,
        inner_optimizer: InnerOptimizer,
        inner_steps: int,
        *,
        meta_optimizer: str = "sgd",
        meta_lr: float = 1.0,
        batched: bool = True,
    ):
        super().__init__(model, inner_optimizer, inner_steps, meta_optimizer=meta_optimizer, meta_lr=meta_lr)
        self.batched = batching_allowed(model, batched)  # trajectories in lockstep

    def meta_gradient(self, tasks: list[Task], generator: torch.Generator) -> tuple[Params, dict[str, float]]:
        """θ₀ − mean_τ θ_K^τ and metrics, without applying it."""
        theta0, _ = self.parameters_by_role()
        theta_k, final_losses = trajectories(self, tasks, generator)
        grad = {k: theta0[k].detach() - theta_k[k].mean(0) for k in theta0}
        return grad, {"task_loss": float(final_losses.mean())}


register("reptile", Reptile, ReptileConfig, "Reptile: move θ₀ towards the adapted parameters")
