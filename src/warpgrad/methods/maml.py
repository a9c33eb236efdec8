"""The MAML family: meta-learn through the inner loop (MAML, FOMAML, Meta-SGD).

MAML (Finn, Abbeel, Levine, ICML 2017) minimises the post-adaptation test loss

    C(θ₀) = E_τ L_τ^test(θ_K(θ₀)),    θ_{k+1} = U(θ_k, ∇L_τ^train(θ_k)),

differentiating through all K inner steps (second order). FOMAML drops the second-order terms
(the inner gradients are treated as constants), so ∇C ≈ E_τ ∇L_τ^test(θ_K). Meta-SGD (Li, Zhou,
Chen, Li, 2017) also meta-learns a learning rate per parameter element: θ ← θ − α ⊙ g, with α
updated by the same meta-gradient.

Tasks are batched with ``torch.func.vmap`` (``batched=True``): every task's inner loop runs at
once, the inner gradient via ``torch.func.grad``; a per-task loop gives the same result and is
used when the tasks' batches differ in shape. Batch-norm layers must keep no running statistics
(``track_running_stats=False``), as is standard in few-shot learning.

Warp layers in the model are held fixed by MAML and Meta-SGD; T-Nets (:mod:`.tnets`) learns them
through the same meta-gradient.

References:
    Finn, Abbeel, Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks.
    ICML 2017. arXiv:1703.03400.
    Li, Zhou, Chen, Li. Meta-SGD: Learning to Learn Quickly for Few-Shot Learning. 2017.
    arXiv:1707.09835.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from warpgrad.functional import (
    InnerOptimizer,
    Params,
    batching_allowed,
    combine,
    functional_apply,
    partition,
    per_parameter_sgd,
)
from warpgrad.methods.base import MetaLearner, apply_gradients, make_meta_optimizer
from warpgrad.tasks.base import Task, loss_function

Batch = tuple[Tensor, Tensor]


def adapted_test_loss(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inner_optimizer: InnerOptimizer,
    theta0: Params,
    phi: Params,
    support: list[Batch],
    query: Batch,
    first_order: bool = False,
) -> Tensor:
    """L^test(θ_K): K differentiable inner steps on ``support`` batches, then the query loss.

    Pure in its tensor arguments, so it runs under ``torch.func.vmap``; its result is
    differentiable w.r.t. ``theta0``, ``phi`` and tensors captured by ``inner_optimizer``.
    """
    theta = dict(theta0)
    state = inner_optimizer.init(theta)
    for x, y in support:

        def train_loss(th: Params, x: Tensor = x, y: Tensor = y) -> Tensor:
            return loss_fn(functional_apply(model, combine(th, phi), x), y)

        grads = torch.func.grad(train_loss)(theta)
        if first_order:
            grads = {k: v.detach() for k, v in grads.items()}
        theta, state = inner_optimizer.update(grads, state, theta)
    return loss_fn(functional_apply(model, combine(theta, phi), query[0]), query[1])


def draw_support(tasks: list[Task], steps: int, generator: torch.Generator) -> list[list[Batch]]:
    """Each task's ``steps`` training batches, drawn task by task (the order both paths use)."""
    return [[task.train_batch(generator) for _ in range(steps)] for task in tasks]


def _same_shapes(batches: list[Any]) -> bool:
    def shapes(b: Any) -> Any:
        return tuple(shapes(x) for x in b) if isinstance(b, (list, tuple)) else tuple(b.shape)

    return len({shapes(b) for b in batches}) == 1


def mean_adapted_loss(
    model: nn.Module,
    inner_optimizer: InnerOptimizer,
    theta0: Params,
    phi: Params,
    tasks: list[Task],
    steps: int,
    generator: torch.Generator,
    first_order: bool = False,
    batched: bool = True,
) -> Tensor:
    """Mean over ``tasks`` of :func:`adapted_test_loss` (vmapped when ``batched`` allows)."""
    support = draw_support(tasks, steps, generator)
    queries = [task.test_batch() for task in tasks]
    loss_fn = tasks[0].loss
    same_family = len({loss_function(t) for t in tasks}) == 1
    if batched and len(tasks) > 1 and same_family and _same_shapes(support) and _same_shapes(queries):
        stacked_support = [
            (torch.stack([s[k][0] for s in support]), torch.stack([s[k][1] for s in support])) for k in range(steps)
        ]
        stacked_query = (torch.stack([q[0] for q in queries]), torch.stack([q[1] for q in queries]))

        def one(task_support: list[Batch], task_query: Batch) -> Tensor:
            return adapted_test_loss(
                model, loss_fn, inner_optimizer, theta0, phi, task_support, task_query, first_order
            )

        return torch.func.vmap(one)(stacked_support, stacked_query).mean()
    losses = [
        adapted_test_loss(model, task.loss, inner_optimizer, theta0, phi, s, q, first_order)
        for task, s, q in zip(tasks, support, queries)
    ]
    return torch.stack(losses).mean()


def maml_gradient(
    model: nn.Module,
    inner_optimizer: InnerOptimizer,
    theta0: Params,
    phi: Params,
    tasks: list[Task],
    steps: int,
    generator: torch.Generator,
    first_order: bool = False,
    batched: bool = True,
) -> tuple[Params, float]:
    """Mean over tasks of ∇_θ₀ L_τ^test(θ_K(θ₀)) with ``phi`` held fixed; and the mean loss."""
    phi = {k: v.detach() for k, v in phi.items()}
    with torch.enable_grad():
        loss = mean_adapted_loss(model, inner_optimizer, theta0, phi, tasks, steps, generator, first_order, batched)
        grads = torch.autograd.grad(loss, list(theta0.values()))
    return dict(zip(theta0, grads)), float(loss.detach())


class MAML(MetaLearner):
    """MAML (``first_order=False``) and FOMAML (``first_order=True``).

    Args:
        model: the task learner; its warp layers (if any) are held fixed.
        inner_optimizer: differentiable inner optimiser (SGD, momentum or Adam).
        inner_steps: K, the inner steps both in meta-training and in adaptation.
        first_order: drop second-order terms (FOMAML).
        meta_optimizer: ``adam`` or ``sgd``, with learning rate ``meta_lr``.
        batched: vmap over the tasks of a meta-batch when their batches have equal shapes.
    """

    name = "maml"
    learns_warps = False

    def __init__(
        self,
        model: nn.Module,
        inner_optimizer: InnerOptimizer,
        inner_steps: int,
        *,
        first_order: bool = False,
        meta_optimizer: str = "adam",
        meta_lr: float = 1e-3,
        batched: bool = True,
    ):
        super().__init__(model, inner_optimizer, inner_steps)
        self.first_order = first_order
        self.batched = batching_allowed(model, batched)
        self.meta_optimizer = make_meta_optimizer(meta_optimizer, self.meta_parameters(), meta_lr)

    def meta_parameters(self) -> list[Tensor]:
        """θ₀ (and φ for T-Nets): the tensors the meta-gradient is taken with respect to."""
        theta0, phi = self.parameters_by_role()
        return list(theta0.values()) + (list(phi.values()) if self.learns_warps else [])

    def meta_loss(self, tasks: list[Task], generator: torch.Generator) -> Tensor:
        """Mean post-adaptation test loss over ``tasks``, differentiable w.r.t. the meta-parameters."""
        theta0, phi = self.parameters_by_role()
        if not self.learns_warps:
            phi = {k: v.detach() for k, v in phi.items()}
        return mean_adapted_loss(
            self.model, self.inner_optimizer, theta0, phi, tasks, self.inner_steps, generator,
            self.first_order, self.batched,
        )

    def meta_step(self, tasks: list[Task], generator: torch.Generator) -> dict[str, float]:
        if not tasks:
            raise ValueError("meta_step needs at least one task")
        params = self.meta_parameters()
        with torch.enable_grad():
            loss = self.meta_loss(tasks, generator)
            grads = torch.autograd.grad(loss, params)
        apply_gradients(self.meta_optimizer, params, list(grads))
        return {"meta_loss": float(loss.detach())}


class MetaSGD(MAML):
    """Meta-SGD: MAML with a meta-learned learning rate for every task-parameter element.

    The inner optimiser is θ ← θ − α ⊙ g with α initialised to ``inner_lr`` and meta-learned
    with θ₀ by the MAML meta-gradient (second order unless ``first_order``).
    """

    name = "metasgd"

    def __init__(self, model: nn.Module, inner_steps: int, *, inner_lr: float = 0.01, **kwargs: Any):
        theta0, _ = partition(model)
        self.lr_names = list(theta0)
        self.learning_rates = [nn.Parameter(torch.full_like(p.detach(), inner_lr)) for p in theta0.values()]
        inner = per_parameter_sgd(dict(zip(self.lr_names, self.learning_rates)))
        super().__init__(model, inner, inner_steps, **kwargs)

    def meta_parameters(self) -> list[Tensor]:
        return super().meta_parameters() + list(self.learning_rates)

    def to(self, device: torch.device | str) -> MetaSGD:
        super().to(device)
        for lr in self.learning_rates:  # in place: the inner optimiser and meta-optimiser hold these
            lr.data = lr.data.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["learning_rates"] = [lr.detach().clone() for lr in self.learning_rates]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            for lr, saved in zip(self.learning_rates, state["learning_rates"], strict=True):
                lr.copy_(saved)

