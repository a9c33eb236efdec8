"""WarpGrad: meta-learned warp layers that precondition the task learner's gradient.

The model's parameters split into task parameters θ (adapted by the inner optimiser from θ₀)
and warp parameters φ (the parameters of :class:`warpgrad.Warp` layers, frozen during
adaptation). WarpGrad meta-learns φ so that gradient descent *through* the warps adapts fast,
without backpropagating through the task's training run: points θ visited on task trajectories
are treated as samples, and the meta-objective takes one step ahead of each point,

    L(φ) = E_τ E_{θ ~ trajectory(τ)} L_meta(θ − α ∇L_task(θ; φ); φ).          (Eq. 11)

Objectives (``objective=``):

* ``exact``: the gradient of Eq. 11, including the look-ahead's dependence on φ through the
  inner gradient ∇L_task(θ; φ) (second order in φ). With any inner optimiser: the step is
  ``inner_optimizer.update(∇L_task(θ; φ), s, θ)`` from the optimiser state s stored with θ.
* ``first_order`` (Eq. 12): the same look-ahead with the inner gradient treated as a constant.
* ``approx``: no look-ahead: ∇_φ L_meta(θ; φ) at the visited point itself.

Each point's inner and meta batches are two fresh training batches of its task
(``meta_loss_data="train"``, as in the reference code) or a training batch and the task's
held-out batch (``"test"``).

Algorithms (``algorithm=``):

* ``offline`` (Algorithm 2): for a meta-batch of tasks, run K inner steps each and offer every
  visited point (θ_k with its optimiser state) to a bounded reservoir-sampled replay buffer
  (memory independent of K); then take ``warp_updates`` meta-steps on φ, each on the mean
  objective over ``warp_batch`` points drawn from the buffer.
* ``online`` (Algorithm 1): accumulate ∇_φ of the objective at every point as the trajectories
  are run (O(1) memory in K) and take one meta-step on φ with the mean.

Initialisation (``init=``), combined as J = L(φ) + λ C(θ₀) with λ = ``init_weight``:

* ``none``: θ₀ stays fixed;
* ``leap`` (Warp-Leap): C is Leap's expected path length of the task trajectories (see
  :mod:`warpgrad.methods.leap`), accumulated along the same trajectories;
* ``maml`` (Warp-MAML): C is the MAML loss (post-adaptation test loss, second order through
  ``maml_steps`` inner steps) with φ held fixed; φ learns from the warp objective only.

φ and θ₀ have their own meta-optimisers (``meta_optimizer`` = ``sgd`` or ``adam`` with
``warp_lr`` and ``init_lr``).

Example:
    >>> model = MLP(1, (40, 40), 1, warp={})
    >>> learner = WarpGrad(model, sgd(0.01), inner_steps=5, init="maml")
    >>> metrics = learner.meta_step(tasks, torch.Generator().manual_seed(0))

References:
    Flennerhag, Rusu, Pascanu, Visin, Yin, Hadsell. Meta-Learning with Warped Gradient Descent.
    ICLR 2020. arXiv:1909.00025.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from warpgrad.distributed import scaled_budget
from warpgrad.functional import (
    InnerOptimizer,
    Params,
    State,
    batching_allowed,
    combine,
    functional_apply,
)
from warpgrad.methods.base import META_OPTIMIZERS, MetaLearner, apply_gradients, make_meta_optimizer
from warpgrad.methods.leap import LeapPath, run_trajectory
from warpgrad.methods.maml import maml_gradient
from warpgrad.tasks.base import Task, loss_function

OBJECTIVES = ("exact", "first_order", "approx")
ALGORITHMS = ("offline", "online")
INITS = ("none", "leap", "maml")
META_LOSS_DATA = ("train", "test")

Batch = tuple[Tensor, Tensor]


def warp_objective(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inner_optimizer: InnerOptimizer,
    theta: Params,
    state: State,
    phi: Params,
    inner_batch: Batch,
    meta_batch: Batch,
    objective: str = "exact",
) -> Tensor:
    """WarpGrad's meta-loss at one trajectory point θ (with inner-optimiser state ``state``).

    Differentiate the result w.r.t. ``phi`` for the point's meta-gradient. ``theta`` and
    ``state`` are constants. Works on plain tensors and under ``torch.func.vmap``.
    """
    theta = {k: v.detach() for k, v in theta.items()}
    if objective == "approx":
        stepped = theta
    else:

        def inner_loss(th: Params) -> Tensor:
            return loss_fn(functional_apply(model, combine(th, phi), inner_batch[0]), inner_batch[1])

        grads = torch.func.grad(inner_loss)(theta)
        if objective == "first_order":
            grads = {k: v.detach() for k, v in grads.items()}
        stepped, _ = inner_optimizer.update(grads, state, theta)
    return loss_fn(functional_apply(model, combine(stepped, phi), meta_batch[0]), meta_batch[1])


@dataclass
class TrajectoryPoint:
    task: int
    theta: Params
    state: State


class ReservoirBuffer:
    """A bounded replay buffer: every offered item is kept with equal probability (reservoir)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.items: list[Any] = []
        self.offered = 0

    def add(self, item: Any, generator: torch.Generator) -> None:
        if len(self.items) < self.capacity:
            self.items.append(item)
        else:
            j = int(torch.randint(self.offered + 1, (), generator=generator))
            if j < self.capacity:
                self.items[j] = item
        self.offered += 1

    def sample(self, n: int, generator: torch.Generator) -> list[Any]:
        """``min(n, len)`` distinct items chosen uniformly at random, in buffer order (so that
        taking every item gives the same list however the buffer was filled)."""
        chosen = torch.randperm(len(self.items), generator=generator)[:n].sort().values
        return [self.items[int(i)] for i in chosen]

    def __len__(self) -> int:
        return len(self.items)


def _choice(name: str, value: Any, allowed: tuple[str, ...] | dict[str, Any]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


class WarpGrad(MetaLearner):
    """The WarpGrad meta-learner (see the module docstring for what each option computes)."""

    name = "warpgrad"

    def __init__(
        self,
        model: nn.Module,
        inner_optimizer: InnerOptimizer,
        inner_steps: int,
        *,
        objective: str = "exact",
        algorithm: str = "offline",
        init: str = "leap",
        init_weight: float = 1.0,
        meta_optimizer: str = "sgd",
        warp_lr: float = 0.1,
        init_lr: float = 0.1,
        buffer_size: int = 256,
        warp_batch: int | None = None,
        warp_updates: int = 1,
        meta_loss_data: str = "train",
        maml_steps: int | None = None,
        leap_norm: bool = True,
        leap_loss_term: bool = True,
        leap_stabilizer: bool = True,
        batched: bool = True,
    ):
        super().__init__(model, inner_optimizer, inner_steps)
        _choice("objective", objective, OBJECTIVES)
        _choice("algorithm", algorithm, ALGORITHMS)
        _choice("init", init, INITS)
        _choice("meta_optimizer", meta_optimizer, META_OPTIMIZERS)
        _choice("meta_loss_data", meta_loss_data, META_LOSS_DATA)
        for label, value in (("buffer_size", buffer_size), ("warp_updates", warp_updates)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
        if warp_batch is not None and (not isinstance(warp_batch, int) or warp_batch < 1):
            raise ValueError(f"warp_batch must be None (all buffered points) or an integer >= 1, got {warp_batch!r}")
        theta0, phi = self.parameters_by_role()
        if not phi:
            raise ValueError("WarpGrad needs a model with at least one warpgrad.Warp layer; found none")
        self.objective = objective
        self.algorithm = algorithm
        self.init = init
        self.init_weight = init_weight
        self.buffer_size = buffer_size
        self.warp_batch = warp_batch
        self.warp_updates = warp_updates
        self.meta_loss_data = meta_loss_data
        self.maml_steps = inner_steps if maml_steps is None else maml_steps
        self.leap_options = {"norm": leap_norm, "loss_term": leap_loss_term, "stabilizer": leap_stabilizer}
        self.batched = batching_allowed(model, batched)
        self.warp_optimizer = make_meta_optimizer(meta_optimizer, list(phi.values()), warp_lr)
        self.init_optimizer = (
            make_meta_optimizer(meta_optimizer, list(theta0.values()), init_lr) if init != "none" else None
        )

    # ------------------------------------------------------------------ meta-objective
    def _point_batches(self, points: list[TrajectoryPoint], tasks: list[Task], generator: torch.Generator):
        batches = []
        for p in points:
            task = tasks[p.task]
            inner = task.train_batch(generator)
            meta = task.train_batch(generator) if self.meta_loss_data == "train" else task.test_batch()
            batches.append((inner, meta))
        return batches

    def warp_loss(self, points: list[TrajectoryPoint], tasks: list[Task], generator: torch.Generator) -> Tensor:
        """Mean warp objective over ``points`` (differentiable w.r.t. the warp parameters).

        Uses ``torch.func.vmap`` over points when ``batched`` and all batches have equal shapes,
        else a loop; both draw the same batches and give the same value.
        """
        _, phi = self.parameters_by_role()
        batches = self._point_batches(points, tasks, generator)
        loss_fns = {loss_function(tasks[p.task]) for p in points}
        shapes = {tuple(t.shape for b in pair for t in b) for pair in batches}
        if self.batched and len(points) > 1 and len(shapes) == 1 and len(loss_fns) == 1:
            return self._warp_loss_vmap(points, tasks[points[0].task].loss, batches, phi)
        losses = [
            warp_objective(
                self.model, tasks[p.task].loss, self.inner_optimizer, p.theta, p.state, phi,
                inner, meta, self.objective,
            )
            for p, (inner, meta) in zip(points, batches)
        ]
        return torch.stack(losses).mean()

    def _warp_loss_vmap(self, points, loss_fn, batches, phi) -> Tensor:
        theta = {k: torch.stack([p.theta[k] for p in points]) for k in points[0].theta}
        state = _stack_states([p.state for p in points])
        x1, y1, x2, y2 = (torch.stack([pair[i][j] for pair in batches]) for i in (0, 1) for j in (0, 1))

        def one(theta, state, x1, y1, x2, y2):
            return warp_objective(
                self.model, loss_fn, self.inner_optimizer, theta, state, phi, (x1, y1), (x2, y2), self.objective
            )

        return torch.func.vmap(one)(theta, state, x1, y1, x2, y2).mean()

    # ------------------------------------------------------------------ meta-step
    def meta_step(self, tasks: list[Task], generator: torch.Generator) -> dict[str, float]:
        return self._meta_step(tasks, generator, self._apply, self.warp_updates)

    def meta_gradients(self, tasks: list[Task], generator: torch.Generator) -> dict[str, Params]:
        """The meta-gradients of one meta-step (one warp update) without applying them.

        Returns ``{"warp": ∇φ, "init": ∇θ₀}`` (the latter only when ``init`` is not ``none``),
        exactly as :meth:`meta_step` would hand them to the meta-optimisers.
        """
        theta0, phi = self.parameters_by_role()
        captured: dict[str, Params] = {}

        def capture(role: str, grads: list[Tensor]) -> None:
            names = list(phi) if role == "warp" else list(theta0)
            captured[role] = {n: g.detach().clone() for n, g in zip(names, grads)}

        self._meta_step(tasks, generator, capture, warp_updates=1)
        return captured

    def _meta_step(
        self,
        tasks: list[Task],
        generator: torch.Generator,
        apply: Callable[[str, list[Tensor]], None],
        warp_updates: int,
    ) -> dict[str, float]:
        if not tasks:
            raise ValueError("meta_step needs at least one task")
        theta0, phi = self.parameters_by_role()
        phi_list = list(phi.values())
        buffer = ReservoirBuffer(scaled_budget(self.buffer_size))  # this process's share of it
        online_sum = [torch.zeros_like(p) for p in phi_list]
        online_loss, online_count = 0.0, 0
        paths: list[LeapPath] = []
        final_losses = []

        for i, task in enumerate(tasks):
            path = LeapPath(**self.leap_options) if self.init == "leap" else None

            def on_step(k: int, theta: Params, state: State, loss: Tensor, grad: Params) -> None:
                nonlocal online_loss, online_count
                point = TrajectoryPoint(i, theta, state)
                if self.algorithm == "offline":
                    buffer.add(point, generator)
                else:
                    with torch.enable_grad():
                        loss_k = self.warp_loss([point], tasks, generator)
                        grads = torch.autograd.grad(loss_k, phi_list)
                    for acc, g in zip(online_sum, grads):
                        acc += g
                    online_loss += float(loss_k.detach())
                    online_count += 1

            _, final_loss = run_trajectory(
                self.model, self.inner_optimizer, theta0, phi, task, self.inner_steps, generator, path, on_step
            )
            final_losses.append(final_loss)
            if path is not None:
                paths.append(path)

        metrics: dict[str, float] = {"task_loss": sum(final_losses) / len(final_losses)}
        init_grad = self._init_gradient(tasks, paths, theta0, phi, generator, metrics)

        if self.algorithm == "offline":
            warp_losses = []
            for _ in range(warp_updates):
                points = buffer.sample(scaled_budget(self.warp_batch) if self.warp_batch else len(buffer), generator)
                with torch.enable_grad():
                    loss = self.warp_loss(points, tasks, generator)
                    grads = torch.autograd.grad(loss, phi_list)
                apply("warp", list(grads))
                warp_losses.append(float(loss.detach()))
            metrics["warp_loss"] = sum(warp_losses) / len(warp_losses)
        elif online_count:
            apply("warp", [g / online_count for g in online_sum])
            metrics["warp_loss"] = online_loss / online_count

        if init_grad is not None:
            apply("init", [self.init_weight * init_grad[k] for k in theta0])
        return metrics

    def _init_gradient(self, tasks, paths, theta0, phi, generator, metrics) -> Params | None:
        if self.init == "leap":
            grads = [p.gradient for p in paths if p.gradient is not None]
            metrics["path_length"] = sum(p.length for p in paths) / len(paths)
            if not grads:
                return None
            return {k: sum(g[k] for g in grads) / len(paths) for k in theta0}
        if self.init == "maml":
            grad, loss = maml_gradient(
                self.model, self.inner_optimizer, theta0, phi, tasks, self.maml_steps, generator, batched=self.batched
            )
            metrics["maml_loss"] = loss
            return grad
        return None

    def _apply(self, role: str, grads: list[Tensor]) -> None:
        """Hand ``grads`` to the meta-optimiser of ``role`` (``warp``: φ, ``init``: θ₀) and step."""
        theta0, phi = self.parameters_by_role()
        optimizer, params = (
            (self.warp_optimizer, phi.values()) if role == "warp" else (self.init_optimizer, theta0.values())
        )
        apply_gradients(optimizer, list(params), grads)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        state = {"model": self.model.state_dict(), "warp_optimizer": self.warp_optimizer.state_dict()}
        if self.init_optimizer is not None:
            state["init_optimizer"] = self.init_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.warp_optimizer.load_state_dict(state["warp_optimizer"])
        if self.init_optimizer is not None:
            self.init_optimizer.load_state_dict(state["init_optimizer"])


def _stack_states(states: list[State]) -> State:
    if not states[0]:
        return {}
    first = states[0]

    def stack(path: tuple[str, ...]) -> Any:
        def get(s: Any) -> Any:
            for key in path:
                s = s[key]
            return s

        node = get(first)
        if isinstance(node, Tensor):
            return torch.stack([get(s) for s in states])
        return {k: stack(path + (k,)) for k in node}

    return stack(())


__all__ = ["WarpGrad", "warp_objective", "ReservoirBuffer", "TrajectoryPoint"]
