"""WarpGrad's meta-objective at trajectory points (Eq. 11 and 12 of the paper; the objectives are
described in :mod:`warpgrad.methods.warpgrad`): at one point, and at many stacked points."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from warpgrad.core.lockstep import unstack
from warpgrad.core.optim import InnerOptimizer
from warpgrad.core.tree import Params, State, same_shapes, tree_stack
from warpgrad.methods.base import task_loss
from warpgrad.tasks.base import as_task, loss_function

Batch = Any

__all__ = ["warp_objective", "warp_objectives"]


def warp_objective(
    model: nn.Module,
    task: Any,
    inner_optimizer: InnerOptimizer,
    theta: Params,
    state: State,
    phi: Params,
    inner_batch: Batch,
    meta_batch: Batch,
    objective: str = "exact",
) -> Tensor:
    """WarpGrad's meta-loss at one trajectory point θ (with inner-optimiser state ``state``).

    ``task`` is a task (its objective scores the model) or a loss ``(prediction, target)``.
    Differentiate the result w.r.t. ``phi`` for the point's meta-gradient. ``theta`` and
    ``state`` are constants. Works on plain tensors and under ``torch.func.vmap``.
    """
    loss = task_loss(model, as_task(task), phi)
    theta = {k: v.detach() for k, v in theta.items()}
    if objective == "approx":
        stepped = theta
    else:
        grads = torch.func.grad(lambda th: loss(th, inner_batch))(theta)
        if objective == "first_order":
            grads = {k: v.detach() for k, v in grads.items()}
        stepped, _ = inner_optimizer.update(grads, state, theta)
    return loss(stepped, meta_batch)


def warp_objectives(
    model: nn.Module,
    tasks: list[Any],
    inner_optimizer: InnerOptimizer,
    theta: Params,
    state: State,
    phi: Params,
    batches: list[tuple[Batch, Batch]],
    objective: str,
    batched: bool,
) -> Tensor:
    """:func:`warp_objective` at P stacked points (``theta``, ``state`` ``[P, ...]``; point j with
    task or loss ``tasks[j]`` and ``(inner, meta) = batches[j]``): a ``[P]`` tensor. ``vmap`` over
    the points when ``batched``, their batches have equal shapes and they share one loss; else a
    loop, with the same values."""

    def one(task: Any, theta: Params, state: State, inner: Batch, meta: Batch) -> Tensor:
        return warp_objective(model, task, inner_optimizer, theta, state, phi, inner, meta, objective)

    one_loss = len({loss_function(as_task(task)) for task in tasks}) == 1
    if batched and len(tasks) > 1 and same_shapes(batches) and one_loss:
        inner, meta = tree_stack(batches)
        return torch.func.vmap(partial(one, tasks[0]))(theta, state, inner, meta)
    return torch.stack([one(task, unstack(theta, j), unstack(state, j), *batches[j]) for j, task in enumerate(tasks)])
