"""THE inner loop: every method's adaptation, meta-training unroll and meta-test runs through it.

    θ_{k+1}, s_{k+1} = update(∇_θ L(θ_k; batch_k), s_k, θ_k),     k = 0 … K−1,

with a pure inner optimiser (:mod:`warpgrad.core.optim`) and a loss ``loss(θ, batch)`` that
closes over the model, its frozen parameters and the task. Two modes:

* ``differentiable=True``: the gradient is ``torch.func.grad``'s (outside functorch transforms
  the same gradient by ``torch.autograd.grad(create_graph=True)``, which is cheaper) and nothing
  is detached, so the result is differentiable w.r.t. the initial parameters and everything the
  loss and the optimiser close over (MAML's second-order meta-gradient, OML/ANML);
  ``first_order=True`` treats the inner gradients as constants (FOMAML). Pure in its tensors:
  runs under ``vmap``.
* ``differentiable=False`` (default): the parameters are detached copies and each step runs
  without building a graph (adaptation, trajectories for WarpGrad, Leap and Reptile).

``on_step(k, θ_k, s_k, L_k, g_k, batch_k)`` is called before the k-th update with the point,
optimiser state, loss, gradient (detached in the non-differentiable mode) and batch: WarpGrad
collects trajectory points or accumulates online meta-gradients there, Leap its path.

``batches`` is any iterable; it is consumed lazily, one batch per step, so a batch drawn from a
generator is drawn just before its step (and after the previous step's hook).

Example:
    >>> loss = lambda p, b: ((b[0] @ p["w"] - b[1]) ** 2).mean()
    >>> theta, _ = unroll(loss, {"w": torch.zeros(3)}, sgd(0.1), [(x, y)] * 5)
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol

import torch
from torch import Tensor

from warpgrad.core.optim import InnerOptimizer
from warpgrad.core.tree import Params, State, detach

__all__ = ["unroll", "StepHook", "LossFn"]

LossFn = Callable[[Params, Any], Tensor]


class StepHook(Protocol):
    def __call__(self, k: int, theta: Params, state: State, loss: Tensor, grad: Params, batch: Any) -> None: ...


def unroll(
    loss: LossFn,
    params: Params,
    optimizer: InnerOptimizer,
    batches: Iterable[Any],
    *,
    differentiable: bool = False,
    first_order: bool = False,
    state: State | None = None,
    on_step: StepHook | None = None,
) -> tuple[Params, State]:
    """Run ``optimizer`` on ``loss`` from ``params`` over ``batches``; return ``(θ_K, s_K)``.

    ``state`` continues from a previous unroll's optimiser state (default: ``optimizer.init``).
    """
    if differentiable:
        return _unroll_differentiable(loss, params, optimizer, batches, first_order, state, on_step)
    theta = detach(params)
    state = optimizer.init(theta) if state is None else state
    for k, batch in enumerate(batches):
        value, grads = _loss_and_grad(loss, theta, batch)
        theta = {n: v.detach() for n, v in theta.items()}
        if on_step is not None:
            on_step(k, theta, state, value.detach(), grads, batch)
        with torch.no_grad():
            theta, state = optimizer.update(grads, state, theta)
    return theta, state


def _loss_and_grad(loss: LossFn, theta: Params, batch: Any, create_graph: bool = False) -> tuple[Tensor, Params]:
    """The loss at ``theta`` and its gradient by plain autograd (zeros for parameters it does not use).

    Outside functorch transforms this is ``torch.func.grad_and_value``'s result, but autograd
    records each operation once instead of through functorch's wrapped tensors, which makes a
    second-order meta-step of a conv net several percent faster; ``create_graph`` keeps the
    gradient differentiable.
    """
    with torch.enable_grad():
        leaves = {n: v if v.requires_grad else v.detach().requires_grad_() for n, v in theta.items()}
        value = loss(leaves, batch)
        if not value.requires_grad:  # the loss does not depend on θ
            return value, {n: torch.zeros_like(v) for n, v in leaves.items()}
        grads = torch.autograd.grad(value, list(leaves.values()), create_graph=create_graph, allow_unused=True)
    return value, {n: torch.zeros_like(v) if g is None else g for (n, v), g in zip(leaves.items(), grads)}


def _unroll_differentiable(
    loss: LossFn,
    params: Params,
    optimizer: InnerOptimizer,
    batches: Iterable[Any],
    first_order: bool,
    state: State | None,
    on_step: StepHook | None,
) -> tuple[Params, State]:
    theta = dict(params)
    state = optimizer.init(theta) if state is None else state
    for k, batch in enumerate(batches):
        if on_step is None and not _inside_functorch_transform():  # the same gradient, cheaper
            create_graph = torch.is_grad_enabled() and not first_order
            grads = _loss_and_grad(loss, theta, batch, create_graph)[1]
        elif on_step is None:
            grads, value = torch.func.grad(lambda th, b=batch: loss(th, b))(theta), None
        else:
            grads, value = torch.func.grad_and_value(lambda th, b=batch: loss(th, b))(theta)
        if first_order:
            grads = {n: g.detach() for n, g in grads.items()}
        if on_step is not None:
            on_step(k, theta, state, value, grads, batch)
        theta, state = optimizer.update(grads, state, theta)
    return theta, state


def _inside_functorch_transform() -> bool:
    peek = getattr(torch._C._functorch, "peek_interpreter_stack", None)
    return peek is None or peek() is not None
