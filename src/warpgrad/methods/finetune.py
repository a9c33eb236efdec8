"""Fine-tuning: pre-train one network on all meta-training tasks, then adapt it to each task.

The usual non-meta-learned baseline. Each meta-step takes one ``torch.optim`` step on the mean
training loss of the meta-batch's tasks (joint multi-task training of θ₀, one training batch per
task); adaptation then fine-tunes the task parameters from the pre-trained θ₀ with the inner
optimiser, exactly as for every other method. Warp layers in the model, if any, are held fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from warpgrad.core.params import combine, functional_apply
from warpgrad.core.tree import Params
from warpgrad.methods.base import InitialisationLearner
from warpgrad.methods.registry import register
from warpgrad.tasks.base import Task, objective


@dataclass
class FineTuneConfig:
    """Fine-tuning's options.

    Attributes:
        meta_optimizer: ``adam`` or ``sgd`` for the joint pre-training.
        meta_lr: its learning rate.
    """

    meta_optimizer: str = "adam"
    meta_lr: float = 1e-3


class FineTune(InitialisationLearner):
    """Joint pre-training with ``meta_optimizer`` (``sgd``/``adam``, ``meta_lr``), then fine-tuning."""

    name = "finetune"

    def meta_gradient(self, tasks: list[Task], generator: torch.Generator) -> tuple[Params, dict[str, float]]:
        """∇θ₀ of the mean training loss of ``tasks`` at θ₀ (one batch each)."""
        theta0, phi = self.parameters_by_role()
        phi = {k: v.detach() for k, v in phi.items()}
        with torch.enable_grad():
            losses = []
            params = combine(theta0, phi)
            for task in tasks:
                batch = task.train_batch(generator)
                losses.append(objective(task)(lambda *inputs: functional_apply(self.model, params, *inputs), batch))
            loss = torch.stack(losses).mean()
            grads = torch.autograd.grad(loss, list(theta0.values()))
        return dict(zip(theta0, grads)), {"train_loss": float(loss.detach())}


register(
    "finetune", FineTune, FineTuneConfig, "fine-tuning: joint pre-training on the meta-training tasks, then adaptation"
)
