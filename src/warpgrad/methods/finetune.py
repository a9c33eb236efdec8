"""Fine-tuning: pre-train one network on all meta-training tasks, then adapt it to each task.

The usual non-meta-learned baseline. Each meta-step takes one ``torch.optim`` step on the mean
training loss of the meta-batch's tasks (joint multi-task training of θ₀, one training batch per
task); adaptation then fine-tunes the task parameters from the pre-trained θ₀ with the inner
optimiser, exactly as for every other method. Warp layers in the model, if any, are held fixed.
"""

from __future__ import annotations

import torch

from warpgrad.functional import Params, combine, functional_apply
from warpgrad.methods.base import InitialisationLearner
from warpgrad.tasks.base import Task


class FineTune(InitialisationLearner):
    """Joint pre-training with ``meta_optimizer`` (``sgd``/``adam``, ``meta_lr``), then fine-tuning."""

    name = "finetune"

    def meta_gradient(self, tasks: list[Task], generator: torch.Generator) -> tuple[Params, dict[str, float]]:
        """∇θ₀ of the mean training loss of ``tasks`` at θ₀ (one batch each)."""
        theta0, phi = self.parameters_by_role()
        phi = {k: v.detach() for k, v in phi.items()}
        with torch.enable_grad():
            losses = []
            for task in tasks:
                x, y = task.train_batch(generator)
                losses.append(task.loss(functional_apply(self.model, combine(theta0, phi), x), y))
            loss = torch.stack(losses).mean()
            grads = torch.autograd.grad(loss, list(theta0.values()))
        return dict(zip(theta0, grads)), {"train_loss": float(loss.detach())}
