"""ES-MAML's adaptation operators U(θ, T): each returns the adapted parameters and the queries it
used (see :mod:`warpgrad.methods.es_maml` for the paper and the meta-gradient estimators).

- :class:`ESGradient`: K antithetic pairs δ_k at scale σ_a, θ' = θ − α·ĝ with ĝ the z-scored ES
  estimate of the gradient of −f_T; 2K queries.
- :class:`HillClimbing`: K sequential proposals θ* + σ_aδ_k, each kept if it raises f_T; K + 1.
- :class:`GradientStep`: MAML's θ' = θ + α∇f_T(θ) with the exact gradient; 1 query.

Every random number an operator uses is drawn by ``noise(theta, generator)``; ``apply(theta,
objective, noise)`` is then deterministic and runs under ``torch.func.vmap``, which is how a
population of ES-MAML members adapts side by side with common random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import Tensor

from warpgrad.core.tree import Params
from warpgrad.estimators._common import check_count, check_params, check_sigma, draw_noise
from warpgrad.estimators.es import ES

__all__ = ["ADAPTATIONS", "Adaptation", "Adapted", "ESGradient", "GradientStep", "HillClimbing", "ReturnFn"]

ReturnFn = Callable[[Params], Tensor]  # f_T: policy parameters -> scalar return, to be maximised


@dataclass(frozen=True, eq=False)
class Adapted:
    """U(θ, T): the adapted parameters and the number of queries of f_T it took."""

    params: Params
    queries: int


class Adaptation(Protocol):
    """U(θ, T). ``noise`` draws every random number one call uses; ``apply`` is then deterministic
    (and runs under ``torch.func.vmap``); calling the operator does both."""

    queries: int  # the queries one call uses

    def noise(self, theta: Params, generator: torch.Generator) -> Params: ...

    def apply(self, theta: Params, objective: ReturnFn, noise: Params) -> Adapted: ...

    def __call__(self, theta: Params, objective: ReturnFn, generator: torch.Generator) -> Adapted: ...


class _DrawsThenApplies:
    def __call__(self, theta: Params, objective: ReturnFn, generator: torch.Generator) -> Adapted:
        theta = check_params(theta)
        return self.apply(theta, objective, self.noise(theta, generator))  # type: ignore[attr-defined]


def _shift(theta: Params, direction: Params, scale: float) -> Params:
    return {k: theta[k] + scale * direction[k] for k in theta}


@dataclass(frozen=True)
class ESGradient(_DrawsThenApplies):
    """θ' = θ − α·ĝ with ĝ the antithetic ES estimate (K pairs, scale σ_a, shaped values) of the
    gradient of −f_T: the paper's Monte Carlo ES-gradient adaptation."""

    pairs: int = 20
    sigma: float = 0.1
    lr: float = 0.05
    fitness_shaping: str = "z-score"

    def __post_init__(self) -> None:
        check_count(self.pairs, "pairs")
        check_sigma(self.lr, "lr")
        ES(self.sigma, self.pairs, self.fitness_shaping)  # checks sigma and fitness_shaping

    @property
    def queries(self) -> int:
        return 2 * self.pairs

    def noise(self, theta: Params, generator: torch.Generator) -> Params:
        return draw_noise(theta, self.pairs, generator)

    def apply(self, theta: Params, objective: ReturnFn, noise: Params) -> Adapted:
        es = ES(self.sigma, self.pairs, self.fitness_shaping, maximize=True)
        grad, _, _ = es.grad_from_noise(objective, theta, noise)
        return Adapted(_shift(theta, grad, -self.lr), self.queries)


@dataclass(frozen=True)
class HillClimbing(_DrawsThenApplies):
    """K sequential proposals θ* + σ_aδ_k, each accepted if it raises the return (a ``where``, not
    an ``if``, so that members adapt side by side under vmap)."""

    proposals: int = 20
    sigma: float = 0.1

    def __post_init__(self) -> None:
        check_count(self.proposals, "proposals")
        check_sigma(self.sigma)

    @property
    def queries(self) -> int:
        return self.proposals + 1

    def noise(self, theta: Params, generator: torch.Generator) -> Params:
        return draw_noise(theta, self.proposals, generator)

    def apply(self, theta: Params, objective: ReturnFn, noise: Params) -> Adapted:
        best = theta
        with torch.no_grad():
            best_value = objective(best)
            for k in range(self.proposals):
                proposal = _shift(best, {name: e[k] for name, e in noise.items()}, self.sigma)
                value = objective(proposal)
                better = value > best_value
                best = {name: torch.where(better, proposal[name], best[name]) for name in best}
                best_value = torch.where(better, value, best_value)
        return Adapted(best, self.queries)


@dataclass(frozen=True)
class GradientStep:
    """θ' = θ + α∇f_T(θ) with the exact gradient (``torch.func.grad``): MAML's adaptation, for a
    differentiable f_T. Under ES-MAML it is still differentiated through by ES, never by autograd."""

    lr: float = 0.05
    queries = 1

    def __post_init__(self) -> None:
        check_sigma(self.lr, "lr")

    def noise(self, theta: Params, generator: torch.Generator | None = None) -> Params:
        return {}

    def apply(self, theta: Params, objective: ReturnFn, noise: Params | None = None) -> Adapted:
        return Adapted(_shift(theta, torch.func.grad(objective)(theta), self.lr), self.queries)

    def __call__(self, theta: Params, objective: ReturnFn, generator: torch.Generator | None = None) -> Adapted:
        return self.apply(theta, objective)


#: the adaptation operators :class:`ESMAMLConfig` can name
ADAPTATIONS = {"es-gradient": ESGradient, "hill-climbing": HillClimbing}
