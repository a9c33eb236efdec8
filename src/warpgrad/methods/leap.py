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
from typing import Any

import torch
from torch import Tensor, nn

from warpgrad.core.optim import InnerOptimizer
from warpgrad.core.tree import Params, State
from warpgrad.core.unroll import StepHook
from warpgrad.errors import UsageError
from warpgrad.methods.base import InitialisationLearner, inner_loop, task_loss
from warpgrad.methods.registry import register
from warpgrad.tasks.base import Task


def leap_segment_gradient(
    theta_prev: Params,
    theta_next: Params,
    loss_prev: Tensor,
    loss_next: Tensor,
    grad_prev: Params,
    norm: bool = True,
    loss_term: bool = True,
    stabilizer: bool = True,
) -> Params:
    """Δ_k for the segment ``theta_prev → theta_next`` (see module docstring)."""
    d_loss = (loss_next - loss_prev).detach() if loss_term else torch.zeros_like(loss_prev)
    if stabilizer:
        d_loss = -d_loss.abs()
    increment = {k: (theta_prev[k] - theta_next[k]) - d_loss * grad_prev[k] for k in theta_prev}
    if norm:
        squared = sum(((theta_next[k] - theta_prev[k]) ** 2).sum() for k in theta_prev) + d_loss**2
        length = torch.sqrt(squared)
        if length > 0:
            increment = {k: v / length for k, v in increment.items()}
    return increment


class LeapPath:
    """Accumulates Σ_k Δ_k along one task's path, one point at a time (O(1) memory in K).

    Call :meth:`observe` with (θ_k, L_k, ∇L(θ_k)) for k = 0, 1, …, K (the gradient of the last
    point is not needed: pass ``None``); :attr:`gradient` then holds Σ_k Δ_k and
    :attr:`length` the path length Σ_k √(‖Δθ‖² + ΔL²) (with the loss term when it is on).
    """

    def __init__(self, norm: bool = True, loss_term: bool = True, stabilizer: bool = True):
        self.norm, self.loss_term, self.stabilizer = norm, loss_term, stabilizer
        self.gradient: Params | None = None
        self.length = 0.0
        self._previous: tuple[Params, Tensor, Params | None] | None = None

    def observe(self, theta: Params, loss: Tensor, grad: Params | None) -> None:
        theta = {k: v.detach() for k, v in theta.items()}
        loss = loss.detach()
        if self._previous is not None:
            theta_prev, loss_prev, grad_prev = self._previous
            if grad_prev is None:
                raise UsageError("LeapPath.observe: every point but the last needs its gradient")
            inc = leap_segment_gradient(
                theta_prev, theta, loss_prev, loss, grad_prev, self.norm, self.loss_term, self.stabilizer
            )
            self.gradient = inc if self.gradient is None else {k: self.gradient[k] + inc[k] for k in inc}
            d_loss = float(loss - loss_prev) if self.loss_term else 0.0
            self.length += float(torch.sqrt(sum(((theta[k] - theta_prev[k]) ** 2).sum() for k in theta) + d_loss**2))
        self._previous = (theta, loss, None if grad is None else {k: v.detach() for k, v in grad.items()})


def run_trajectory(
    model: nn.Module,
    inner_optimizer: InnerOptimizer,
    theta0: Params,
    phi: Params,
    task: Task,
    steps: int,
    generator: torch.Generator,
    path: LeapPath | None = None,
    on_step: StepHook | None = None,
) -> tuple[Params, float]:
    """Run a task's inner loop, feeding every point to ``path`` (if any) and ``on_step``.

    Returns θ_K and its training loss on one more training batch (the path's last point).
    """

    def observe(k: int, theta: Params, state: State, loss: Tensor, grad: Params, batch: Any) -> None:
        if path is not None:
            path.observe(theta, loss, grad)
        if on_step is not None:
            on_step(k, theta, state, loss, grad, batch)

    theta_k, _ = inner_loop(model, inner_optimizer, theta0, phi, task, steps, generator, observe)
    batch = task.train_batch(generator)
    with torch.no_grad():
        final_loss = task_loss(model, task, phi)(theta_k, batch)
    if path is not None:
        path.observe(theta_k, final_loss, None)
    return theta_k, float(final_loss)


@dataclass
class LeapConfig:
    """Leap's options.

    Attributes:
        meta_optimizer: ``sgd`` or ``adam``.
        meta_lr: the meta learning rate.
        norm: divide each segment's gradient by its length (path length; Leap's default).
        loss_term: keep the −ΔL·∇L term.
        stabilizer: use −|ΔL| in place of ΔL.
    """

    meta_optimizer: str = "sgd"
    meta_lr: float = 0.1
    norm: bool = True
    loss_term: bool = True
    stabilizer: bool = True


class Leap(InitialisationLearner):
    """The Leap meta-learner: θ₀ descends the mean over tasks of Σ_k Δ_k (module docstring).

    Warp layers in the model, if any, are held fixed. Options as :class:`LeapPath`; the
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
    ):
        super().__init__(model, inner_optimizer, inner_steps, meta_optimizer=meta_optimizer, meta_lr=meta_lr)
        self.path_options = {"norm": norm, "loss_term": loss_term, "stabilizer": stabilizer}

    def meta_gradient(self, tasks: list[Task], generator: torch.Generator) -> tuple[Params, dict[str, float]]:
        """∇θ₀ (the mean over tasks of Σ_k Δ_k) and metrics, without applying it."""
        theta0, phi = self.parameters_by_role()
        paths, final_losses = [], []
        for task in tasks:
            path = LeapPath(**self.path_options)
            _, final = run_trajectory(
                self.model, self.inner_optimizer, theta0, phi, task, self.inner_steps, generator, path
            )
            paths.append(path)
            final_losses.append(final)
        zero = {k: torch.zeros_like(v) for k, v in theta0.items()}
        grad = {k: sum((p.gradient or zero)[k] for p in paths) / len(paths) for k in theta0}
        metrics = {
            "task_loss": sum(final_losses) / len(tasks),
            "path_length": sum(p.length for p in paths) / len(tasks),
        }
        return grad, metrics


register("leap", Leap, LeapConfig, "Leap: shorten the task training paths")
