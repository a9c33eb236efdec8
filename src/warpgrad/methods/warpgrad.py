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

* ``offline`` (Algorithm 2, :func:`algorithm_2_offline`): for a meta-batch of tasks, run K inner
  steps each and offer every visited point (θ_k with its optimiser state) to a bounded
  reservoir-sampled replay buffer (memory independent of K); then take ``warp_updates``
  meta-steps on φ, each on the mean objective over ``warp_batch`` points drawn from the buffer.
* ``online`` (Algorithm 1, :func:`algorithm_1_online`): accumulate ∇_φ of the objective at every
  point as the trajectories are run (O(1) memory in K) and take one meta-step on φ with the mean.

Initialisation (``init=``), combined as J = L(φ) + λ C(θ₀) with λ = ``init_weight``:

* ``none``: θ₀ stays fixed; ``leap`` (Warp-Leap): C is Leap's expected path length of the task
  trajectories (see :mod:`warpgrad.methods.leap`), accumulated along the same trajectories;
* ``maml`` (Warp-MAML): C is the MAML loss (post-adaptation test loss, second order through
  ``maml_steps`` inner steps) with φ held fixed; φ learns from the warp objective only.

φ and θ₀ have their own meta-optimisers (``meta_optimizer`` at ``warp_lr`` and ``init_lr``).

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

from warpgrad.core.batching import batching_allowed
from warpgrad.core.lockstep import Step
from warpgrad.core.optim import InnerOptimizer
from warpgrad.core.replay import PointBuffer, Points, last_writers
from warpgrad.core.shell import LOCAL, META_OPTIMIZERS, MetaGradients, Reduction
from warpgrad.core.tree import Params
from warpgrad.errors import UsageError
from warpgrad.methods.base import MetaLearner
from warpgrad.methods.leap import LeapPaths, trajectories
from warpgrad.methods.maml import maml_gradient
from warpgrad.methods.registry import check_choice, register
from warpgrad.methods.warp_objective import warp_objective, warp_objectives
from warpgrad.tasks.base import Task

OBJECTIVES = ("exact", "first_order", "approx")
ALGORITHMS = ("offline", "online")
INITS = ("none", "leap", "maml")
META_LOSS_DATA = ("train", "test")
BUFFER_DTYPES = {"same": None, "bfloat16": torch.bfloat16, "float16": torch.float16}

Apply = Callable[[str, list[Tensor]], None]


# ---------------------------------------------------------------------------------- algorithms


def algorithm_2_offline(
    learner: WarpGrad,
    tasks: list[Task],
    generator: torch.Generator,
    reduction: Reduction,
    apply: Apply,
    warp_updates: int,
) -> dict[str, float]:
    """Algorithm 2 (offline meta-training of warps), one meta-batch:

    1. for every task τ: run K inner steps from θ₀; offer each visited point (θ_k, s_k) to the
       replay buffer (and to τ's Leap path for Warp-Leap);
    2. compute the initialisation's meta-gradient (Warp-Leap's path gradient or Warp-MAML's);
    3. ``warp_updates`` times: draw ``warp_batch`` points; step φ along ∇φ of the mean objective;
    4. step θ₀ along λ × its meta-gradient.

    The tasks run in lockstep; the buffer's slots are drawn first, as if the points were offered
    task after task (θ_0^1 … θ_{K-1}^1, θ_0^2 …), and each point is stored when it is reached.
    """
    buffer = PointBuffer(reduction.budget(learner.buffer_size), learner.buffer_dtype)  # this process's share
    steps = learner.inner_steps
    kept = last_writers(buffer.plan(len(tasks) * steps, generator))  # offer i·K + k: task i's θ_k

    def offer(step: Step) -> None:
        rows = [(i, kept[i * steps + step.k]) for i in range(len(tasks)) if i * steps + step.k in kept]
        if rows:
            points = Points(torch.arange(len(tasks)), step.theta, step.state)
            buffer.store(torch.tensor([slot for _, slot in rows]), points.rows(torch.tensor([i for i, _ in rows])))

    metrics, paths = learner.run_trajectories(tasks, generator, offer)
    init_grad = learner.init_gradient(tasks, paths, generator, metrics)
    warp_losses = []
    for _ in range(warp_updates):
        points = buffer.sample(reduction.budget(learner.warp_batch) if learner.warp_batch else len(buffer), generator)
        loss, grads = learner.warp_gradient(points, tasks, generator)
        apply("warp", grads)
        warp_losses.append(loss)
    metrics["warp_loss"] = sum(warp_losses) / len(warp_losses)
    if init_grad is not None:
        apply("init", init_grad)
    return metrics


def algorithm_1_online(
    learner: WarpGrad, tasks: list[Task], generator: torch.Generator, reduction: Reduction, apply: Apply
) -> dict[str, float]:
    """Algorithm 1 (online meta-training of warps), one meta-batch:

    1. for every task τ and inner step k: accumulate ∇φ of the objective at θ_k, then take the
       inner step (and extend τ's Leap path);
    2. step φ along the mean accumulated gradient;
    3. step θ₀ along λ × its meta-gradient.
    """
    _, phi = learner.parameters_by_role()
    total = [torch.zeros_like(p) for p in phi.values()]
    summed = {"loss": 0.0, "points": 0}

    def accumulate(step: Step) -> None:
        points = Points(torch.arange(len(tasks)), step.theta, step.state)
        loss, grads = learner.warp_gradient(points, tasks, generator)  # of the mean over the points
        for acc, g in zip(total, grads):
            acc += len(points) * g
        summed["loss"] += len(points) * loss
        summed["points"] += len(points)

    metrics, paths = learner.run_trajectories(tasks, generator, accumulate)
    init_grad = learner.init_gradient(tasks, paths, generator, metrics)
    if summed["points"]:
        apply("warp", [g / summed["points"] for g in total])
        metrics["warp_loss"] = summed["loss"] / summed["points"]
    if init_grad is not None:
        apply("init", init_grad)
    return metrics


# ---------------------------------------------------------------------------------- the learner


@dataclass
class WarpGradConfig:
    """WarpGrad's options (the module docstring says what each computes).

    Attributes:
        objective: ``exact``, ``first_order`` or ``approx``.
        algorithm: ``offline`` (Algorithm 2) or ``online`` (Algorithm 1).
        init: ``none``, ``leap`` (Warp-Leap) or ``maml`` (Warp-MAML).
        init_weight: λ, the weight of the initialisation's meta-gradient.
        meta_optimizer: ``sgd`` or ``adam``, for φ and θ₀.
        warp_lr: φ's meta learning rate.
        init_lr: θ₀'s meta learning rate.
        buffer_size: the replay buffer's capacity (offline).
        buffer_dtype: what the buffer stores points in: ``same`` (as visited), ``bfloat16`` or
            ``float16`` (half the memory; the points are rounded, see docs/benchmarks.md).
        warp_batch: trajectory points per warp update (``None``: every buffered point).
        warp_updates: warp updates per meta-step (offline).
        meta_loss_data: each point's meta batch: a fresh ``train`` batch or the task's ``test`` batch.
        maml_steps: Warp-MAML's inner steps (``None``: the experiment's inner steps).
        leap_norm, leap_loss_term, leap_stabilizer: Warp-Leap's path options (see Leap).
        batched: run the tasks' trajectories in lockstep and the objective over trajectory points
            with ``vmap`` when their batches have equal shapes (else one at a time, same values).
        compile: compile the trajectories' batched step with ``torch.compile`` (seconds once per
            process; then much faster steps on small, overhead-bound models; float rounding differs).
    """

    objective: str = "exact"
    algorithm: str = "offline"
    init: str = "leap"
    init_weight: float = 1.0
    meta_optimizer: str = "sgd"
    warp_lr: float = 0.1
    init_lr: float = 0.1
    buffer_size: int = 256
    buffer_dtype: str = "same"
    warp_batch: int | None = None
    warp_updates: int = 1
    meta_loss_data: str = "train"
    maml_steps: int | None = None
    leap_norm: bool = True
    leap_loss_term: bool = True
    leap_stabilizer: bool = True
    batched: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        """Refuse options no run can use as soon as the config is made (``warpgrad show`` too)."""
        for name, allowed in (
            ("objective", OBJECTIVES),
            ("algorithm", ALGORITHMS),
            ("init", INITS),
            ("meta_optimizer", META_OPTIMIZERS),
            ("meta_loss_data", META_LOSS_DATA),
            ("buffer_dtype", tuple(BUFFER_DTYPES)),
        ):
            check_choice(f"warpgrad.{name}", getattr(self, name), allowed)
        for label, value in (("buffer_size", self.buffer_size), ("warp_updates", self.warp_updates)):
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"{label} must be an integer >= 1, got {value!r}")
        if self.warp_batch is not None and (not isinstance(self.warp_batch, int) or self.warp_batch < 1):
            raise UsageError(f"warp_batch must be none (every buffered point) or >= 1, got {self.warp_batch!r}")


class WarpGrad(MetaLearner):
    """The WarpGrad meta-learner (see the module docstring for what each option computes)."""

    name = "warpgrad"

    def __init__(self, model: nn.Module, inner_optimizer: InnerOptimizer, inner_steps: int, **options: Any):
        """``options``: the fields of :class:`WarpGradConfig` (the defaults for the others)."""
        c = WarpGradConfig(**options)
        super().__init__(model, inner_optimizer, inner_steps)
        theta0, phi = self.parameters_by_role()
        if not phi:
            raise UsageError("WarpGrad needs a model with at least one warpgrad.Warp layer; found none")
        self.objective, self.algorithm, self.init, self.init_weight = c.objective, c.algorithm, c.init, c.init_weight
        self.buffer_size, self.warp_batch, self.warp_updates = c.buffer_size, c.warp_batch, c.warp_updates
        self.meta_loss_data = c.meta_loss_data
        self.buffer_dtype = BUFFER_DTYPES[c.buffer_dtype]
        self.maml_steps = inner_steps if c.maml_steps is None else c.maml_steps
        self.leap_options = {"norm": c.leap_norm, "loss_term": c.leap_loss_term, "stabilizer": c.leap_stabilizer}
        self.batched = batching_allowed(model, c.batched)
        self.compile = c.compile
        self.shell.add_group("warp", phi, c.meta_optimizer, c.warp_lr)
        if c.init != "none":
            self.shell.add_group("init", theta0, c.meta_optimizer, c.init_lr)

    # ------------------------------------------------------------------ pieces of the algorithms
    def run_trajectories(
        self, tasks: list[Task], generator: torch.Generator, visit: Callable[[Step], None]
    ) -> tuple[dict[str, float], LeapPaths | None]:
        """K inner steps of every task from θ₀ in lockstep, calling ``visit`` with every task's
        point at each step; returns the mean final task loss and the tasks' Leap paths (Warp-Leap)."""
        paths = LeapPaths(**self.leap_options) if self.init == "leap" else None
        _, final_losses = trajectories(self, tasks, generator, paths, visit)
        return {"task_loss": float(final_losses.mean())}, paths

    def init_gradient(
        self, tasks: list[Task], paths: LeapPaths | None, generator: torch.Generator, metrics: dict[str, float]
    ) -> list[Tensor] | None:
        """λ × the initialisation's meta-gradient (``None`` when there is nothing to step)."""
        theta0, phi = self.parameters_by_role()
        grad: Params | None = None
        if self.init == "leap" and paths is not None:
            metrics["path_length"] = paths.mean_length()
            if paths.gradient is not None:
                grad = paths.mean_gradient(theta0)
        elif self.init == "maml":
            grad, metrics["maml_loss"] = maml_gradient(
                self.model, self.inner_optimizer, theta0, phi, tasks, self.maml_steps, generator, batched=self.batched
            )
        return None if grad is None else [self.init_weight * grad[k] for k in theta0]

    def warp_loss(self, points: Points, tasks: list[Task], generator: torch.Generator) -> Tensor:
        """Mean warp objective over ``points`` (differentiable w.r.t. the warp parameters).

        Each point draws its inner and meta batch (in point order). Uses ``torch.func.vmap`` over
        points when ``batched`` and all batches have equal shapes, else a loop; same value.
        """
        _, phi = self.parameters_by_role()
        point_tasks = [tasks[i] for i in points.task.tolist()]
        batches = [
            (
                task.train_batch(generator),
                task.train_batch(generator) if self.meta_loss_data == "train" else task.test_batch(),
            )
            for task in point_tasks
        ]
        return warp_objectives(
            self.model, point_tasks, self.inner_optimizer, points.theta, points.state, phi, batches, self.objective,
            self.batched,
        ).mean()  # fmt: skip

    def warp_gradient(
        self, points: Points, tasks: list[Task], generator: torch.Generator
    ) -> tuple[float, list[Tensor]]:
        """The mean warp objective over ``points`` and its gradient w.r.t. φ."""
        _, phi = self.parameters_by_role()
        with torch.enable_grad():
            loss = self.warp_loss(points, tasks, generator)
            grads = torch.autograd.grad(loss, list(phi.values()))
        return float(loss.detach()), list(grads)

    # ------------------------------------------------------------------ meta-step
    def meta_step(
        self, tasks: list[Task], generator: torch.Generator, reduction: Reduction = LOCAL
    ) -> dict[str, float]:
        if not tasks:
            raise UsageError("meta_step needs at least one task")

        def apply(group: str, grads: list[Tensor]) -> None:
            self.shell.apply(group, grads, reduction)

        return self._run_algorithm(tasks, generator, reduction, apply, self.warp_updates)

    def meta_gradients(
        self, tasks: list[Task], generator: torch.Generator, reduction: Reduction = LOCAL
    ) -> MetaGradients:
        """The meta-gradients of one meta-step (one warp update) without applying them:
        ``{"warp": ∇φ, "init": λ∇θ₀}`` (the latter only when ``init`` is not ``none``)."""
        if not tasks:
            raise UsageError("meta_step needs at least one task")
        captured = MetaGradients()

        def capture(group: str, grads: list[Tensor]) -> None:
            names = list(self.shell.parameters(group))
            captured[group] = {n: g.detach().clone() for n, g in zip(names, grads)}

        captured.metrics = self._run_algorithm(tasks, generator, reduction, capture, warp_updates=1)
        return captured

    def _run_algorithm(self, tasks, generator, reduction, apply: Apply, warp_updates: int) -> dict[str, float]:
        if self.algorithm == "offline":
            return algorithm_2_offline(self, tasks, generator, reduction, apply, warp_updates)
        return algorithm_1_online(self, tasks, generator, reduction, apply)


register(
    "warpgrad",
    WarpGrad,
    WarpGradConfig,
    "WarpGrad: meta-learned warp layers (+ Warp-MAML or Warp-Leap initialisation)",
    uses_warps=True,
)

__all__ = [
    "WarpGrad",
    "WarpGradConfig",
    "warp_objective",
    "PointBuffer",
    "Points",
    "algorithm_1_online",
    "algorithm_2_offline",
]
