"""ES-MAML: meta-learning an initialisation with Evolution Strategies, no Hessians and no backprop.

Song, Gao, Yang, Choromanski, Pacchiano, Tang, "ES-MAML: Simple Hessian-Free Meta Learning",
ICLR 2020, arXiv:1910.01215.

MAML maximises f(θ) = E_T f_T(U(θ, T)), the reward f_T after adapting θ to task T with an operator
U. ES-MAML maximises its Gaussian smoothing E_ε E_T f_T(U(θ + σε, T)) and estimates that gradient
from values alone, so U may be any black box (it need not be differentiable) and f_T any return.

Zero-order ES-MAML, one meta-step (:func:`zero_order_estimate` then the update in :class:`ESMAML`):

    1. sample tasks T_1..T_m                                               (m = task_batch)
    2. draw ε_1..ε_n ~ N(0, I)                                             (n = population)
    3. v_j^± = 1/m Σ_i f_{T_i}(U(θ ± σε_j, T_i)): each member adapted, then evaluated
    4. ĝ = 1/(2nσ) Σ_j (ṽ_j^+ − ṽ_j^−) ε_j, with ṽ the z-scored values
    5. θ ← θ + η ĝ

Steps 2–4 are the antithetic :class:`~warpgrad.estimators.es.ES` with ``maximize=True``, which
returns the gradient of the loss −f, so step 5 is the descent step θ ← θ − η·grad.

Adaptation operators U(θ, T) (each returns the adapted parameters and the queries it used):

- :class:`ESGradient`, the paper's Monte Carlo ES gradient: K antithetic pairs δ_k at scale σ_a,
  θ' = θ + α/(2Kσ_a) Σ_k (f̃_T(θ + σ_aδ_k) − f̃_T(θ − σ_aδ_k)) δ_k with z-scored values f̃;
  2K queries. It is the ES estimator again, with θ' = θ − α·grad.
- :class:`HillClimbing`: θ* = θ, v* = f_T(θ); for k = 1..K: if f_T(θ* + σ_aδ_k) > v* then
  θ* = θ* + σ_aδ_k and v* is its value; returns θ*. K + 1 queries; f_T(θ*) never falls below f_T(θ).
- :class:`GradientStep`, MAML's own U for a differentiable f_T: θ' = θ + α∇f_T(θ); 1 query.

First-order ES-MAML (:func:`first_order_estimate`), for each task: θ'_i = U(θ, T_i) (the ES gradient
above), then an antithetic ES estimate ∇̃f_{T_i}(θ'_i); θ ← θ + η/m Σ_i ∇̃f_{T_i}(θ'_i). It drops
U's Jacobian, as first-order MAML does.

A *query* is one evaluation of some f_T (one rollout on the navigation tasks). A zero-order step
costs 2n·m·(q_U + 1) queries, the 1 evaluating the adapted member; a first-order step costs
m·(q_U + 2n). Each estimate reports its count, to compare methods at equal queries.

Common random numbers: in step 3 every member adapts with the same adaptation noise (drawn once
per meta-step and task), so v_j^+ − v_j^− reflects ε_j rather than luck in the adaptation. With
the noise drawn up front every adaptation is deterministic, and the 2n members (each adapting
and evaluating on every task) run side by side under ``torch.func.vmap``.
The noise is independent of ε, so the estimate of the smoothed gradient stays unbiased. The
members share the task batch too (the paper's Algorithm 1 draws a task per perturbation).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from warpgrad.core.tree import Params
from warpgrad.errors import TrainingDiverged, UsageError
from warpgrad.estimators._common import check_count, check_generator, check_params, check_sigma
from warpgrad.estimators.es import ES, FITNESS_SHAPINGS
from warpgrad.methods.es_adaptations import (
    ADAPTATIONS,
    Adaptation,
    Adapted,
    ESGradient,
    GradientStep,
    HillClimbing,
    ReturnFn,
    _shift,
)

__all__ = [
    "ADAPTATIONS",
    "VARIANTS",
    "Adaptation",
    "Adapted",
    "ESGradient",
    "HillClimbing",
    "GradientStep",
    "MetaEstimate",
    "zero_order_estimate",
    "evaluate_adaptation",
    "first_order_estimate",
    "ESMAMLConfig",
    "ESMAML",
]

VARIANTS = ("zero-order", "first-order")


@dataclass(frozen=True, eq=False)
class MetaEstimate:
    """One ES-MAML meta-gradient estimate.

    Attributes:
        grad: the estimate of the gradient of −f (θ ← θ − η·grad ascends the meta-objective).
        values: the post-adaptation returns it saw: per member (zero-order), per task (first-order).
        queries: evaluations of any f_T, adaptation included.
        mean_value: the mean of ``values``, an estimate of the smoothed meta-objective.
    """

    grad: Params
    values: Tensor
    queries: int
    mean_value: float


def _check_estimate_args(objectives: Sequence[ReturnFn], es: ES, generator: torch.Generator) -> None:
    if not isinstance(objectives, Sequence) or not objectives or not all(callable(f) for f in objectives):
        raise UsageError(f"objectives must be a non-empty sequence of callables f_T(params), got {objectives!r}")
    if not isinstance(es, ES) or not es.maximize:
        raise UsageError(f"es must be an ES with maximize=True (returns are maximised), got {es!r}")
    check_generator(generator)


def zero_order_estimate(
    theta: Params,
    objectives: Sequence[ReturnFn],
    adaptation: Adaptation,
    es: ES,
    generator: torch.Generator,
    vectorized: bool | None = None,
) -> MetaEstimate:
    """Steps 2–4 of zero-order ES-MAML on the tasks whose returns are ``objectives``; the members
    are evaluated under vmap, in a loop, or (None) under vmap if the objectives allow it."""
    _check_estimate_args(objectives, es, generator)
    noises = [adaptation.noise(theta, generator) for _ in objectives]  # common to every member

    def member_value(params: Params) -> Tensor:
        adapted = [f(adaptation.apply(params, f, noise).params) for f, noise in zip(objectives, noises)]
        return torch.stack(adapted).mean()

    estimate = es.estimate(member_value, theta, generator, vectorized)
    queries = estimate.evaluations * len(objectives) * (adaptation.queries + 1)
    return MetaEstimate(estimate.grad, estimate.values, queries, estimate.mean_value)


def first_order_estimate(
    theta: Params, objectives: Sequence[ReturnFn], adaptation: Adaptation, es: ES, generator: torch.Generator
) -> MetaEstimate:
    """First-order ES-MAML: the mean over tasks of the ES gradient of f_T at θ' = U(θ, T)."""
    _check_estimate_args(objectives, es, generator)
    grads, values, queries = [], [], 0
    for f in objectives:
        adapted = adaptation(theta, f, generator)
        estimate = es.estimate(f, adapted.params, generator)
        grads.append(estimate.grad)
        values.append(estimate.mean_value)
        queries += adapted.queries + estimate.evaluations
    grad = {k: torch.stack([g[k] for g in grads]).mean(0) for k in grads[0]}
    return MetaEstimate(grad, torch.tensor(values), queries, sum(values) / len(values))


def evaluate_adaptation(learner: Any, tasks: Sequence[Any], generator: torch.Generator) -> dict[str, Any]:
    """The return of ``learner.theta`` before (``pre``) and after (``post``) ``learner.adapt`` on each
    of ``tasks``, their means, and the queries made (each task: its adaptation's and two more)."""
    if not tasks:
        raise UsageError("evaluate needs at least one task, got none")
    before, after, queries = [], [], 0
    for task in tasks:
        adapted = learner.adapt(learner.theta, task, generator)
        with torch.no_grad():
            before.append(float(task.rollout_return(learner.theta)))
            after.append(float(task.rollout_return(adapted.params)))
        queries += adapted.queries + 2
    return {
        "pre_return": sum(before) / len(before),
        "post_return": sum(after) / len(after),
        "pre": before,
        "post": after,
        "queries": queries,
    }


@dataclass(frozen=True)
class ESMAMLConfig:
    """ES-MAML's settings. The defaults are those of the paper's released code for the navigation
    tasks (google-research ``es_maml/config.py``): σ 0.1, η 0.01, 150 antithetic perturbations,
    one task per meta-step, normalised values (here z-scores), ES-gradient adaptation with
    K = 20, σ_a 0.1, α 0.05. Here K counts antithetic pairs, so one adaptation makes 2K queries.
    Tests use smaller settings (e.g. population 8, K 5).

    Attributes:
        sigma: σ, the scale of the meta-perturbations.
        meta_lr: η, the meta step size.
        population: n, antithetic pairs per meta-gradient estimate.
        task_batch: m, tasks per meta-step.
        adaptation: ``es-gradient`` or ``hill-climbing``.
        adaptation_queries: K: antithetic pairs (es-gradient) or proposals (hill-climbing).
        adaptation_sigma: σ_a, the scale of the adaptation's perturbations.
        adaptation_lr: α, the ES-gradient adaptation's step size (hill climbing has none).
        fitness_shaping: how the meta-estimate shapes the values (see :class:`ES`).
        variant: ``zero-order`` or ``first-order``.
    """

    sigma: float = 0.1
    meta_lr: float = 0.01
    population: int = 150
    task_batch: int = 1
    adaptation: str = "es-gradient"
    adaptation_queries: int = 20
    adaptation_sigma: float = 0.1
    adaptation_lr: float = 0.05
    fitness_shaping: str = "z-score"
    variant: str = "zero-order"

    def __post_init__(self) -> None:
        check_sigma(self.meta_lr, "meta_lr")
        check_count(self.task_batch, "task_batch")
        if self.adaptation not in ADAPTATIONS:
            raise UsageError(f"unknown adaptation {self.adaptation!r}; allowed: {', '.join(ADAPTATIONS)}")
        if self.variant not in VARIANTS:
            raise UsageError(f"unknown variant {self.variant!r}; allowed: {', '.join(VARIANTS)}")
        if self.fitness_shaping not in FITNESS_SHAPINGS:
            raise UsageError(
                f"unknown fitness_shaping {self.fitness_shaping!r}; allowed: {', '.join(FITNESS_SHAPINGS)}"
            )
        self.make_adaptation()
        self.make_estimator()

    @property
    def queries_per_step(self) -> int:
        """The queries of one meta-step (module docstring): 2n·m·(q_U + 1) or m·(q_U + 2n)."""
        q_u = self.make_adaptation().queries
        if self.variant == "zero-order":
            return 2 * self.population * self.task_batch * (q_u + 1)
        return self.task_batch * (q_u + 2 * self.population)

    def make_adaptation(self) -> Adaptation:
        if self.adaptation == "hill-climbing":
            return HillClimbing(self.adaptation_queries, self.adaptation_sigma)
        return ESGradient(self.adaptation_queries, self.adaptation_sigma, self.adaptation_lr)

    def make_estimator(self) -> ES:
        return ES(self.sigma, self.population, self.fitness_shaping, maximize=True)


class ESMAML:
    """ES-MAML on a task family whose tasks have ``rollout_return(params) -> scalar return``
    (e.g. :mod:`warpgrad.tasks.rl.navigation`); ``theta`` holds the meta-learned initialisation."""

    def __init__(self, family: Any, theta: Params, config: ESMAMLConfig | None = None) -> None:
        if not callable(getattr(family, "sample", None)):
            raise UsageError(f"family must have sample(generator), got {type(family).__name__}")
        self.config = ESMAMLConfig() if config is None else config
        if not isinstance(self.config, ESMAMLConfig):
            raise UsageError(f"config must be an ESMAMLConfig, got {type(self.config).__name__}")
        self.family = family
        self.theta = check_params(theta)
        self.adaptation = self.config.make_adaptation()
        self.estimator = self.config.make_estimator()
        self.step = 0
        self.queries = 0

    def meta_step(self, generator: torch.Generator) -> dict[str, float | int]:
        """One meta-step (steps 1–5 of the module docstring); its metrics, ``queries`` included."""
        check_generator(generator)
        tasks = [self.family.sample(generator) for _ in range(self.config.task_batch)]
        objectives = [task.rollout_return for task in tasks]
        estimate_fn = zero_order_estimate if self.config.variant == "zero-order" else first_order_estimate
        estimate = estimate_fn(self.theta, objectives, self.adaptation, self.estimator, generator)
        grad_norm = float(torch.sqrt(sum(g.pow(2).sum() for g in estimate.grad.values())))
        if not torch.isfinite(torch.tensor([grad_norm, estimate.mean_value])).all():
            raise TrainingDiverged(
                f"es-maml step {self.step}: non-finite meta-gradient norm {grad_norm} or value {estimate.mean_value}"
            )
        self.theta = _shift(self.theta, estimate.grad, -self.config.meta_lr)
        self.step += 1
        self.queries += estimate.queries
        return {
            "step": self.step,
            "mean_value": estimate.mean_value,
            "queries": estimate.queries,
            "total_queries": self.queries,
            "grad_norm": grad_norm,
        }

    def adapt(self, theta: Params, task: Any, generator: torch.Generator) -> Adapted:
        """U(θ, T) with the configured operator."""
        check_generator(generator)
        return self.adaptation(check_params(theta), task.rollout_return, generator)

    def evaluate(self, tasks: Sequence[Any], generator: torch.Generator) -> dict[str, Any]:
        """Return of θ before and after adaptation on ``tasks``: see :func:`evaluate_adaptation`."""
        return evaluate_adaptation(self, tasks, generator)

    def state_dict(self) -> dict[str, Any]:
        return {
            "theta": {k: v.clone() for k, v in self.theta.items()},
            "step": self.step,
            "queries": self.queries,
            "config": dataclasses.asdict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or not {"theta", "step", "queries", "config"} <= set(state):
            raise UsageError("an ES-MAML state must be a dict with theta, step, queries and config")
        mine = dataclasses.asdict(self.config)
        if state.get("config") != mine:
            raise UsageError(f"the state was saved with config {state.get('config')!r}, this ES-MAML has {mine!r}")
        theta = check_params(state["theta"])
        shapes = {k: tuple(v.shape) for k, v in theta.items()}
        if shapes != {k: tuple(v.shape) for k, v in self.theta.items()}:
            raise UsageError(f"the state's parameters {shapes} do not match this ES-MAML's")
        self.theta, self.step, self.queries = theta, int(state["step"]), int(state["queries"])
