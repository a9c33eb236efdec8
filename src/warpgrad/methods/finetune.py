"""Fine-tuning: pre-train one network on all meta-training tasks, then adapt it to each task.

The usual non-meta-learned baseline. Each meta-step takes one ``torch.optim`` step on the mean
training loss of the meta-batch's tasks (joint multi-task training of θ₀, one training batch per
task); adaptation then fine-tunes the task parameters from the pre-trained θ₀ with the inner
optimiser, exactly as for every other method. Warp layers in the model, if any, are held fixed.
"""

from __future__ import annotations

import torch
from torch import nn

from warpgrad.functional import InnerOptimizer, combine, functional_apply
from warpgrad.methods.base import MetaLearner, apply_gradients, make_meta_optimizer
from warpgrad.tasks.base import Task


class FineTune(MetaLearner):
    """Joint pre-training with ``meta_optimizer`` (``sgd``/``adam``, ``meta_lr``), then fine-tuning."""

    name = "finetune"

    def __init__(
        self,
        model: nn.Module,
        inner_optimizer: InnerOptimizer,
        inner_steps: int,
        *,
        meta_optimizer: str = "adam",
        meta_lr: float = 1e-3,
    ):
        super().__init__(model, inner_optimizer, inner_steps)
        theta0, _ = self.parameters_by_role()
        self.meta_optimizer = make_meta_optimizer(meta_optimizer, list(theta0.values()), meta_lr)

    def meta_step(self, tasks: list[Task], generator: torch.Generator) -> dict[str, float]:
        if not tasks:
            raise ValueError("meta_step needs at least one task")
        theta0, phi = self.parameters_by_role()
        phi = {k: v.detach() for k, v in phi.items()}
        with torch.enable_grad():
            losses = []
            for task in tasks:
                x, y = task.train_batch(generator)
                losses.append(task.loss(functional_apply(self.model, combine(theta0, phi), x), y))
            loss = torch.stack(losses).mean()
            grads = torch.autograd.grad(loss, list(theta0.values()))
        apply_gradients(self.meta_optimizer, list(theta0.values()), list(grads))
        return {"train_loss": float(loss.detach())}
