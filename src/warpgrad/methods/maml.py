"""MAML: meta-learn an initialisation by differentiating through the inner loop.

MAML (Finn, Abbeel, Levine, ICML 2017) minimises the post-adaptation test loss
C(θ₀) = E_τ L_τ^test(θ_K(θ₀)), where θ_K is the result of K differentiable inner steps on the
task's training batches; its gradient is second order (it backpropagates through every inner
gradient). First-order MAML (FOMAML) drops the second-order terms: ∇C ≈ E_τ ∇L_τ^test(θ_K).

This module holds the meta-gradient as a function of parameter dicts; WarpGrad uses it for its
Warp-MAML initialisation (with the warp parameters held fixed).

References:
    Finn, Abbeel, Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks.
    ICML 2017. arXiv:1703.03400.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from warpgrad.functional import InnerOptimizer, Params, combine, functional_apply, loss_and_grad
from warpgrad.tasks.base import Task


def maml_task_loss(
    model: nn.Module,
    inner_optimizer: InnerOptimizer,
    theta0: Params,
    phi: Params,
    task: Task,
    steps: int,
    generator: torch.Generator,
    first_order: bool = False,
) -> Tensor:
    """L_τ^test(θ_K(θ₀)) with the inner loop in the autograd graph (unless ``first_order``)."""
    theta = dict(theta0)
    state = inner_optimizer.init(theta)
    for _ in range(steps):
        _, grads = loss_and_grad(
            model, task.loss, theta, phi, task.train_batch(generator), create_graph=not first_order
        )
        theta, state = inner_optimizer.update(grads, state, theta)
    x, y = task.test_batch()
    return task.loss(functional_apply(model, combine(theta, phi), x), y)


def maml_gradient(
    model: nn.Module,
    inner_optimizer: InnerOptimizer,
    theta0: Params,
    phi: Params,
    tasks: list[Task],
    steps: int,
    generator: torch.Generator,
    first_order: bool = False,
) -> tuple[Params, float]:
    """Mean over tasks of ∇_θ₀ L_τ^test(θ_K(θ₀)), with ``phi`` held fixed; and the mean loss."""
    phi = {k: v.detach() for k, v in phi.items()}
    total = {k: torch.zeros_like(v) for k, v in theta0.items()}
    loss_sum = 0.0
    for task in tasks:
        with torch.enable_grad():
            loss = maml_task_loss(model, inner_optimizer, theta0, phi, task, steps, generator, first_order)
            grads = torch.autograd.grad(loss, list(theta0.values()))
        for k, g in zip(theta0, grads):
            total[k] += g
        loss_sum += float(loss.detach())
    n = len(tasks)
    return {k: v / n for k, v in total.items()}, loss_sum / n
