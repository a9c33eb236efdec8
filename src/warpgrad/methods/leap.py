"""Leap: meta-learn an initialisation that shortens the paths of task training runs.

Leap (Flennerhag, Moreno, Lawrence, Damianou, ICLR 2019) views a training run
θ₀ → θ₁ → … → θ_K of a task as a path on the loss-augmented manifold (θ, L(θ)) and meta-learns
θ₀ to minimise the expected path length. Treating later points as constants (first order) and
the Jacobian of θ_k w.r.t. θ₀ as the identity, each segment k−1 → k contributes

    Δ_k = (θ_{k−1} − θ_k) − ΔL_k · ∇L(θ_{k−1}),     ΔL_k = L(θ_k) − L(θ_{k−1}),

to the gradient of the path energy (up to a factor 2), divided by the segment length
√(‖θ_k − θ_{k−1}‖² + ΔL_k²) when the path *length* is used (``norm=True``, Leap's default).
The meta-gradient of θ₀ is the mean over tasks of Σ_k Δ_k; descending it pulls θ₀ along the
task paths.

Options:
    loss_term: keep the −ΔL·∇L term (Leap); WarpGrad's reference Warp-Leap drops it (False).
    stabilizer: use −|ΔL| in place of ΔL, so a step on which the loss went *up* is treated as one
        on which it went down by as much: the loss term then always pulls θ₀ down the gradient
        instead of rewarding initialisations from which the loss increases (Leap's stabiliser).

References:
    Flennerhag, Moreno, Lawrence, Damianou. Transferring Knowledge across Learning Processes.
    ICLR 2019. arXiv:1812.01054.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from warpgrad.core.batching import batching_allowed
from warpgrad.core.lockstep import Step, lockstep
from warpgrad.core.optim import InnerOptimizer
from warpgrad.core.tree import Params
from warpgrad.errors import UsageError
from warpgrad.methods.base import InitialisationLearner, MetaLearner
from warpgrad.methods.registry import register
from warpgrad.tasks.base import Task


def leap_segment(
    theta_prev: Tensor,
    theta_next: Tensor,
    loss_prev: Tensor,
    loss_next: Tensor,
    grad_prev: Tensor,
    norm: bool = True,
    loss_term: bool = True,
    stabilizer: bool = True,
) -> tuple[Tensor, Tensor]:
    """Δ_k for the segments ``theta_prev → theta_next`` of T tasks at once (see module docstring)
    and the segments' lengths √(‖Δθ‖² + ΔL²): parameters flattened to ``[T, P]``, losses ``[T]``."""
    d_loss = (loss_next - loss_prev).detach() if loss_term else torch.zeros_like(loss_prev)
    if stabilizer:
        d_loss = -d_loss.abs()
    step = theta_next - theta_prev
    increment = -step - d_loss[:, None] * grad_prev
    length = torch.sqrt(step.pow(2).sum(1) + d_loss**2)
    if norm:
        increment = increment / torch.where(length > 0, length, torch.ones_like(length))[:, None]  # 0 adds 0
    return increment, length


class LeapPaths:
    """Accumulates Σ_k Δ_k along the paths of T tasks at once, one step at a time (O(1) memory
    in K): points are stacked ``[T, ...]`` (as :func:`warpgrad.core.lockstep.lockstep` gives them).

    Call :meth:`observe` with (θ_k, L_k, ∇L(θ_k)) for k = 0, 1, …, K (the gradient of the last
    point is not needed: pass ``None``); :meth:`mean_gradient` then gives the mean over tasks of
    Σ_k Δ_k and :meth:`mean_length` of the path lengths Σ_k √(‖Δθ‖² + ΔL²) (with the loss term
    when it is on). Parameters are flattened into one ``[T, P]`` tensor per point, so a step
    costs a handful of tensor operations however many parameter tensors the model has.
    """

    def __init__(self, norm: bool = True, loss_term: bool = True, stabilizer: bool = True):
        self.options = {"norm": norm, "loss_term": loss_term, "stabilizer": stabilizer}
        self.gradient: Tensor | None = None
        self.length: Tensor | None = None
        self._previous: tuple[Tensor, Tensor, Tensor | None] | None = None

    def observe(self, theta: Params, loss: Tensor, grad: Params | None) -> None:
        flat, loss = _flat(theta), loss.detach()
        if self._previous is not None:
            theta_prev, loss_prev, grad_prev = self._previous
            if grad_prev is None:
                raise UsageError("LeapPaths.observe: every point but the last needs its gradient")
            increment, length = leap_segment(theta_prev, flat, loss_prev, loss, grad_prev, **self.options)
            if self.gradient is None:
                self.gradient, self.length = increment, length
            else:
                self.gradient, self.length = self.gradient + increment, self.length + length
        self._previous = (flat, loss, None if grad is None else _flat(grad))

    def mean_gradient(self, like: Params) -> Params:
        """The mean over tasks of Σ_k Δ_k, shaped ``like`` θ₀ (zeros when no segment was observed)."""
        if self.gradient is None:
            return {k: torch.zeros_like(v) for k, v in like.items()}
        mean = self.gradient.mean(0).split([v.numel() for v in like.values()])
        return {k: m.view_as(v) for (k, v), m in zip(like.items(), mean)}

    def mean_length(self) -> float:
        return 0.0 if self.length is None else float(self.length.mean())


def _flat(params: Params) -> Tensor:
    """Stacked parameters ``{name: [T, ...]}`` as one detached ``[T, P]`` tensor."""
    return torch.cat([v.detach().flatten(1) for v in params.values()], 1)


def trajectories(
    learner: MetaLearner,
    tasks: list[Task],
    generator: torch.Generator,
    path: LeapPaths | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> tuple[Params, Tensor]:
    """Every task's inner loop from the learner's θ₀ in lockstep, feeding every point to ``path``
    (if any) and ``on_step``. Returns each task's θ_K and its training loss on one more batch
    (the path's last point), stacked over tasks."""

    def observe(step: Step) -> None:
        if path is not None:
            path.observe(step.theta, step.loss, step.grad)
        if on_step is not None:
            on_step(step)

    theta0, phi = learner.parameters_by_role()
    theta_k, final_loss, _ = lockstep(
        learner.model,
        learner.inner_optimizer,
        theta0,
        phi,
        tasks,
        learner.inner_steps,
        generator,
        learner.batched,
        observe,
        compile=getattr(learner, "compile", False),
    )
    if path is not None:
        path.observe(theta_k, final_loss, None)
    return theta_k, final_loss


@dataclass
class LeapConfig:
    """Leap's options.

    Attributes:
        meta_optimizer: ``sgd`` or ``adam``.
        meta_lr: the meta learning rate.
        norm: divide each segment's gradient by its length (path length; Leap's default).
        loss_term: keep the −ΔL·∇L term.
        stabilizer: use −|ΔL| in place of ΔL.
        batched: run the tasks' trajectories in lockstep with ``vmap`` when the model allows it.
    """

    meta_optimizer: str = "sgd"
    meta_lr: float = 0.1
    norm: bool = True
    loss_term: bool = True
    stabilizer: bool = True
    batched: bool = True


class Leap(InitialisationLearner):
    """The Leap meta-learner: θ₀ descends the mean over tasks of Σ_k Δ_k (module docstring).

    Warp layers in the model, if any, are held fixed. Options as :class:`LeapPaths`; the
    meta-optimiser is ``sgd`` or ``adam`` with ``meta_lr``.
    """

    name = "leap"

    def __init__(
        self,
        model: nn.Module,
        inner_optimizer: InnerOptimizer,
        inner_steps: int,
        *,
        meta_optimizer: str = "sgd",
        meta_lr: float = 0.1,
        norm: bool = True,
        loss_term: bool = True,
        stabilizer: bool = True,
        batched: bool = True,
    ):
        super().__init__(model, inner_optimizer, inner_steps, meta_optimizer=meta_optimizer, meta_lr=meta_lr)
        self.batched = batching_allowed(model, batched)  # trajectories in lockstep
        self.path_options = {"norm": norm, "loss_term": loss_term, "stabilizer": stabilizer}

    def meta_gradient(self, tasks: list[Task], generator: torch.Generator) -> tuple[Params, dict[str, float]]:
        """∇θ₀ (the mean over tasks of Σ_k Δ_k) and metrics, without applying it."""
        theta0, _ = self.parameters_by_role()
        path = LeapPaths(**self.path_options)
        _, final_losses = trajectories(self, tasks, generator, path)
        metrics = {"task_loss": float(final_losses.mean()), "path_length": path.mean_length()}
        return path.mean_gradient(theta0), metrics


register("leap", Leap, LeapConfig, "Leap: shorten the task training paths")
