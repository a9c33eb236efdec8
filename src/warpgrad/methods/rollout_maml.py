"""MAML and first-order MAML through a differentiable simulator: ES-MAML's gradient baseline.

Finn, Abbeel, Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks", ICML
2017; compared with ES-MAML (Song et al., ICLR 2020, arXiv:1910.01215) on its navigation tasks.

On the point-mass tasks of :mod:`warpgrad.tasks.rl.navigation` a deterministic policy's return
f_T(θ) is a differentiable function of θ (the dynamics are, almost everywhere), so MAML's inner
step and its meta-gradient are computed exactly by backpropagating through the rollout. The
papers' MAML baselines estimate the same gradients with policy gradients from stochastic
rollouts; exact gradients are the best a gradient-based MAML can do with the same rollouts.
Where the reward is flat (four corners, far from every goal) the exact gradient is zero, and
that is what a gradient method sees.

One meta-step, for tasks T_1..T_m (m = ``task_batch``):

    1. θ'_i = θ + α ∇f_{T_i}(θ)                                  (inner step, ``lr`` = α)
    2. second order: g_i = ∇_θ f_{T_i}(θ'_i(θ)), through step 1
       first order:  g_i = ∇f_{T_i}(θ'_i), step 1's Jacobian dropped
    3. θ ← Adam step ascending 1/m Σ_i g_i                       (``meta_lr``)

Adam (not ES-MAML's plain step on z-scored values) makes the meta step independent of the
returns' scale, as ES-MAML's fitness shaping does for it. The tasks of a batch run side by side
under ``torch.func.vmap`` over their goals.

Queries: a rollout is a query whether or not it is differentiated, so a meta-step costs 2m (the
rollout differentiated for step 1 and the post-adaptation rollout differentiated for step 2),
and an adaptation at test time 1.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from warpgrad.core.tree import Params
from warpgrad.errors import TrainingDiverged, UsageError
from warpgrad.estimators._common import check_count, check_generator, check_params, check_sigma
from warpgrad.methods.es_maml import Adapted, GradientStep, evaluate_adaptation

__all__ = ["RolloutMAMLConfig", "RolloutMAML"]


@dataclass(frozen=True)
class RolloutMAMLConfig:
    """Settings of :class:`RolloutMAML`.

    Attributes:
        lr: α, the inner step size on the raw return's gradient.
        meta_lr: Adam's step size for θ.
        task_batch: m, tasks per meta-step.
        first_order: drop the inner step's Jacobian (FOMAML).
    """

    lr: float = 1e-5
    meta_lr: float = 0.01
    task_batch: int = 10
    first_order: bool = False

    def __post_init__(self) -> None:
        check_sigma(self.lr, "lr")
        check_sigma(self.meta_lr, "meta_lr")
        check_count(self.task_batch, "task_batch")
        if not isinstance(self.first_order, bool):
            raise UsageError(f"first_order must be True or False, got {self.first_order!r}")

    @property
    def queries_per_step(self) -> int:
        return 2 * self.task_batch


class RolloutMAML:
    """(FO)MAML on a task family whose tasks are :class:`~warpgrad.tasks.rl.navigation.PointTask`
    (differentiable ``rollout_return``); ``theta`` holds the meta-learned initialisation."""

    def __init__(self, family: Any, theta: Params, config: RolloutMAMLConfig | None = None) -> None:
        if not callable(getattr(family, "sample", None)):
            raise UsageError(f"family must have sample(generator), got {type(family).__name__}")
        self.config = RolloutMAMLConfig() if config is None else config
        if not isinstance(self.config, RolloutMAMLConfig):
            raise UsageError(f"config must be a RolloutMAMLConfig, got {type(self.config).__name__}")
        self.family = family
        self.theta = check_params(theta)
        self.adaptation = GradientStep(self.config.lr)
        self._init_adam()
        self.step = 0
        self.queries = 0

    def _init_adam(self) -> None:
        self._leaves = {k: v.clone().requires_grad_(True) for k, v in self.theta.items()}
        self._adam = torch.optim.Adam(list(self._leaves.values()), lr=self.config.meta_lr, maximize=True)

    def _post_adaptation_return(self, theta: Params, goal: Tensor, template: Any) -> Tensor:
        task = dataclasses.replace(template, goal=goal)
        inner = torch.func.grad(task.rollout_return)(theta)
        if self.config.first_order:
            inner = {k: g.detach() for k, g in inner.items()}
        adapted = {k: theta[k] + self.config.lr * inner[k] for k in theta}
        return task.rollout_return(adapted)

    def meta_gradient(self, tasks: Sequence[Any]) -> tuple[Params, Tensor]:
        """Step 2 on ``tasks`` (which share everything but their goals): the mean meta-gradient
        (of the return, to ascend) and each task's post-adaptation return."""
        goals = torch.stack([task.goal for task in tasks]).to(next(iter(self.theta.values())).dtype)
        value_and_grad = torch.func.grad_and_value(self._post_adaptation_return)
        grads, values = torch.func.vmap(value_and_grad, in_dims=(None, 0, None))(self.theta, goals, tasks[0])
        return {k: g.mean(0) for k, g in grads.items()}, values

    def meta_step(self, generator: torch.Generator) -> dict[str, float | int]:
        """Steps 1–3 of the module docstring; its metrics, ``queries`` included."""
        check_generator(generator)
        tasks = [self.family.sample(generator) for _ in range(self.config.task_batch)]
        grad, values = self.meta_gradient(tasks)
        grad_norm = float(torch.sqrt(sum(g.pow(2).sum() for g in grad.values())))
        mean_value = float(values.mean())
        if not torch.isfinite(torch.tensor([grad_norm, mean_value])).all():
            raise TrainingDiverged(
                f"maml step {self.step}: non-finite meta-gradient norm {grad_norm} or value {mean_value}"
            )
        for name, leaf in self._leaves.items():
            leaf.grad = grad[name].to(leaf.dtype)
        self._adam.step()
        self.theta = {k: v.detach().clone() for k, v in self._leaves.items()}
        self.step += 1
        self.queries += self.config.queries_per_step
        return {
            "step": self.step,
            "mean_value": mean_value,
            "queries": self.config.queries_per_step,
            "total_queries": self.queries,
            "grad_norm": grad_norm,
        }

    def adapt(self, theta: Params, task: Any, generator: torch.Generator | None = None) -> Adapted:
        """θ' = θ + α∇f_T(θ)."""
        return self.adaptation(check_params(theta), task.rollout_return)

    def evaluate(self, tasks: Sequence[Any], generator: torch.Generator) -> dict[str, Any]:
        """Return of θ before and after adaptation on ``tasks``: see
        :func:`~warpgrad.methods.es_maml.evaluate_adaptation`."""
        return evaluate_adaptation(self, tasks, generator)

    def state_dict(self) -> dict[str, Any]:
        return {
            "theta": {k: v.clone() for k, v in self.theta.items()},
            "adam": copy.deepcopy(self._adam.state_dict()),  # Adam updates its moments in place
            "step": self.step,
            "queries": self.queries,
            "config": dataclasses.asdict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or not {"theta", "adam", "step", "queries", "config"} <= set(state):
            raise UsageError("a RolloutMAML state must be a dict with theta, adam, step, queries and config")
        mine = dataclasses.asdict(self.config)
        if state["config"] != mine:
            raise UsageError(f"the state was saved with config {state['config']!r}, this MAML has {mine!r}")
        theta = check_params(state["theta"])
        if {k: v.shape for k, v in theta.items()} != {k: v.shape for k, v in self.theta.items()}:
            raise UsageError("the state's parameters do not match this MAML's")
        self.theta = {k: v.clone() for k, v in theta.items()}
        self._init_adam()
        self._adam.load_state_dict(state["adam"])
        self.step, self.queries = int(state["step"]), int(state["queries"])
