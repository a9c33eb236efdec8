"""Task trajectories in lockstep: K inner steps of T tasks at once, batched with ``vmap``.

WarpGrad, Leap and Reptile meta-learn from the *points* that plain inner loops visit; nothing is
backpropagated through the loop, so the T tasks of a meta-batch can take their k-th step
together. At step k every task draws its k-th training batch (in task order), then

    θ_{k+1}^τ, s_{k+1}^τ = update(∇L_τ(θ_k^τ; batch_k^τ), s_k^τ, θ_k^τ)      for all τ at once,

the forward pass batched over tasks (written out for this library's layers,
:mod:`warpgrad.core.stacked`, else vmapped), the backward plain autograd of the summed losses (tasks do not
interact), and the update applied to the stacked tensors (vmapped unless it is elementwise). ``on_step`` sees
every task's point at step k stacked along a leading task dimension (:class:`Step`) before the
update: WarpGrad stores or scores the points there, Leap extends the paths.

With ``compile=True`` the batched step (vmapped gradient and value) is compiled with
``torch.compile``: a few seconds once per process and model, then several times faster steps where
the step is overhead-bound (small models, see docs/benchmarks.md); values equal the eager step's
up to float rounding. Where compiling fails (no C++ compiler, an unsupported model), one warning
says so and the eager step runs.

The tasks are batched when the model allows it (:func:`warpgrad.core.batching.batching_allowed`),
their batches have equal shapes and they share one loss; otherwise each task's step runs on its
own (the same points, drawn in the same order) and the results are stacked, so ``on_step`` never
sees the difference.

Data order: tasks draw their batches step by step (task 0's k-th batch, task 1's k-th, …, then
step k + 1). The engine gives every task its own generator (:class:`warpgrad.tasks.base.SeededTask`),
so each task sees exactly the batches it would see if the tasks ran one after another.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from warpgrad.core.optim import InnerOptimizer
from warpgrad.core.params import scored_loss
from warpgrad.core.stacked import stacked_loss
from warpgrad.core.tree import Params, State, same_shapes, tree_map, tree_stack
from warpgrad.core.unroll import _loss_and_grad
from warpgrad.tasks.base import Task, loss_function, objective

__all__ = ["Step", "lockstep", "unstack"]


@dataclass
class Step:
    """Every task's point at inner step ``k``, stacked along dim 0 (task τ is row τ)."""

    k: int
    theta: Params
    state: State
    loss: Tensor
    grad: Params


def unstack(tree: Any, i: int) -> Any:
    """Row ``i`` of every tensor of a stacked tree."""
    return tree_map(lambda v: v[i], tree)


def lockstep(
    model: nn.Module,
    inner_optimizer: InnerOptimizer,
    theta0: Params,
    frozen: Params,
    tasks: Sequence[Task],
    steps: int,
    generator: torch.Generator,
    batched: bool,
    on_step: Callable[[Step], None] | None = None,
    resume: tuple[Params, State] | None = None,
    final_loss: bool = True,
    compile: bool = False,
) -> tuple[Params, Tensor | None, State]:
    """Run ``steps`` inner steps of every task from ``theta0`` (``frozen`` held fixed), or from
    stacked parameters and optimiser states ``resume`` (a previous call's).

    Returns every task's θ_K (stacked), its training loss on one more batch (a ``[T]`` tensor;
    ``None`` without ``final_loss``) and its optimiser state.
    """
    frozen = {k: v.detach() for k, v in frozen.items()}
    losses = [scored_loss(model, objective(task), frozen) for task in tasks]
    one_loss = len({loss_function(task) for task in tasks}) == 1
    start = {k: v.detach() for k, v in theta0.items()}
    if resume is None:
        theta, state = tree_stack([start] * len(tasks)), tree_stack([inner_optimizer.init(start) for _ in tasks])
    else:
        theta, state = resume

    def vectorised(batches: list[Any]) -> bool:
        return batched and one_loss and same_shapes(batches)

    batched_loss = stacked_loss(model, tasks[0], frozen) or torch.func.vmap(losses[0])
    update = inner_optimizer.update if inner_optimizer.elementwise else torch.func.vmap(inner_optimizer.update)

    for k in range(steps):
        batches = [task.train_batch(generator) for task in tasks]
        if vectorised(batches):
            stacked = tree_stack(batches)
            compiled = _run_compiled(model, theta, frozen, stacked, objective(tasks[0])) if compile else None
            loss, grad = compiled if compiled is not None else _batched_loss_and_grad(batched_loss, theta, stacked)
            if on_step is not None:
                on_step(Step(k, theta, state, loss, grad))
            with torch.no_grad():
                theta, state = update(grad, state, theta)
        else:
            points = [_loss_and_grad(losses[i], unstack(theta, i), batches[i]) for i in range(len(tasks))]
            loss, grad = torch.stack([p[0].detach() for p in points]), tree_stack([p[1] for p in points])
            if on_step is not None:
                on_step(Step(k, theta, state, loss, grad))
            with torch.no_grad():
                stepped = [
                    inner_optimizer.update(points[i][1], unstack(state, i), unstack(theta, i))
                    for i in range(len(tasks))
                ]
            theta, state = tree_stack([s[0] for s in stepped]), tree_stack([s[1] for s in stepped])
    if not final_loss:
        return theta, None, state
    batches = [task.train_batch(generator) for task in tasks]
    with torch.no_grad():
        if vectorised(batches):
            final = batched_loss(theta, tree_stack(batches))
        else:
            final = torch.stack([losses[i](unstack(theta, i), batches[i]) for i in range(len(tasks))])
    return theta, final, state


def _batched_loss_and_grad(
    batched_loss: Callable[[Params, Any], Tensor], theta: Params, batch: Any
) -> tuple[Tensor, Params]:
    """Every task's loss and gradient: the forward pass is vmapped (``batched_loss``), the backward
    is plain autograd of the summed losses (tasks do not interact, so row τ of the gradient is
    task τ's)."""
    theta = {k: v.detach().requires_grad_() for k, v in theta.items()}
    with torch.enable_grad():
        values = batched_loss(theta, batch)
        grads = torch.autograd.grad(values.sum(), list(theta.values()))
    return values.detach(), dict(zip(theta, grads))


_COMPILED: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()


def _compiled_step(model: nn.Module) -> Any:
    """The model's compiled batched step (``None`` once compiling it has failed). The task's
    objective and the frozen parameters are arguments, so new tasks do not recompile it."""
    if model not in _COMPILED:

        def step(theta: Params, frozen: Params, batch: Any, score: Callable) -> tuple[Params, Tensor]:
            return torch.func.vmap(torch.func.grad_and_value(scored_loss(model, score, frozen)))(theta, batch)

        _COMPILED[model] = torch.compile(step)
    return _COMPILED[model]


def _run_compiled(
    model: nn.Module, theta: Params, frozen: Params, batch: Any, score: Callable
) -> tuple[Tensor, Params] | None:
    """The compiled step's losses and gradients, or ``None`` (and one warning) if compiling fails."""
    step = _compiled_step(model)
    if step is None:
        return None
    try:
        grad, loss = step(theta, frozen, batch, score)
    except Exception as error:  # any compiler failure falls back to the eager step
        _COMPILED[model] = None
        warnings.warn(f"torch.compile failed, trajectories run eagerly: {str(error).splitlines()[0]}", stacklevel=3)
        return None
    return loss.detach(), grad
