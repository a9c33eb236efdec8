"""Antithetic Evolution Strategies: a zero-order estimate of the gradient of a smoothed objective.

For an objective f and σ > 0, the Gaussian smoothing f_σ(θ) = E_{ε~N(0,I)} f(θ + σε) is
differentiable with ∇f_σ(θ) = E[f(θ + σε) ε] / σ (Nesterov & Spokoiny 2017). With n antithetic
pairs (ε_i, −ε_i) (Salimans et al. 2017),

    ĝ = 1/(2nσ) Σ_i (f(θ + σε_i) − f(θ − σε_i)) ε_i

is an unbiased estimate of ∇f_σ(θ) from 2n evaluations of f and no derivatives of f. Where f is
quadratic, ∇f_σ = ∇f; elsewhere smoothing moves the gradient (for f = cos, ∇f_σ = −e^{−σ²/2} sin).

Fitness shaping replaces the 2n values by shaped values s before the same sum: centered ranks in
[−0.5, 0.5] (Salimans et al. 2017) or z-scores. A shaped estimate is invariant to monotone
(ranks) or affine (z-score) transformations of f and robust to outliers, but it is no longer an
unbiased estimate of ∇f_σ: it only points in a similar direction.

Sign convention: ``grad`` is always the gradient of the *loss*, the quantity being minimised:
f itself, or −f when ``maximize`` is set. Minimising and maximising are both the descent step
θ ← θ − lr·ĝ, so ``grad`` can be put in ``p.grad`` for any torch optimiser. ``values`` and
``mean_value`` are f's own values, never negated.

Common random numbers: the perturbations depend only on the generator's state and the parameters'
names, shapes and dtypes, never on their values, so two parameter settings estimated with generators
in the same state see the same ε. For common random numbers over tasks as well, draw the task (batch)
once from a generator the caller seeds and let the objective capture it in a closure; an objective
that draws inside each call gives each perturbation its own task.

References:
    Salimans, Ho, Chen, Sidor, Sutskever. Evolution Strategies as a Scalable Alternative to
    Reinforcement Learning. 2017. arXiv:1703.03864.
    Nesterov, Spokoiny. Random Gradient-Free Minimization of Convex Functions. Foundations of
    Computational Mathematics 17, 2017.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from warpgrad.core.tree import Params
from warpgrad.errors import UsageError
from warpgrad.estimators._common import check_count, check_generator, check_params, check_sigma, draw_noise

__all__ = ["ES", "ESEstimate", "FITNESS_SHAPINGS", "centered_ranks", "z_scores"]

FITNESS_SHAPINGS = ("none", "centered-ranks", "z-score")

Objective = Callable[[Params], Tensor]


def centered_ranks(values: Tensor) -> Tensor:
    """Ranks of ``values`` scaled to [−0.5, 0.5]: the smallest gets −0.5, the largest 0.5. Tied
    values share their mean rank, so ``centered_ranks(-v) == -centered_ranks(v)``."""
    below = (values[None, :] < values[:, None]).sum(1)
    tied = (values[None, :] == values[:, None]).sum(1)
    ranks = below + (tied - 1) / 2
    return ranks.to(values.dtype) / (values.numel() - 1) - 0.5


def z_scores(values: Tensor) -> Tensor:
    """``values`` minus their mean, over their standard deviation; all zeros if they are all equal."""
    centered = values - values.mean()
    std = values.std(correction=0)
    return torch.where(std > 0, centered / torch.where(std > 0, std, 1.0), 0.0)  # a where: runs under vmap


@dataclass(frozen=True, eq=False)
class ESEstimate:
    """One ES estimate.

    Attributes:
        grad: the estimate of the gradient of the loss (f, or −f with ``maximize``), per parameter.
        values: f at the 2n perturbed parameters, raw: first θ + σε_1..θ + σε_n, then θ − σε_1..θ − σε_n.
        evaluations: calls of f, 2n: compare estimators at equal budgets with it.
        mean_value: the mean of ``values``, an estimate of the smoothed f_σ(θ).
        vectorized: whether the population was evaluated with ``torch.func.vmap`` (else a loop).
    """

    grad: Params
    values: Tensor
    evaluations: int
    mean_value: float
    vectorized: bool


@dataclass(frozen=True)
class ES:
    """Antithetic ES with ``population`` pairs at smoothing scale ``sigma``.

    Attributes:
        sigma: the scale of the perturbations θ ± σε, ε ~ N(0, I).
        population: the number of antithetic pairs n; an estimate costs 2n objective calls.
        fitness_shaping: ``none`` (unbiased for ∇f_σ), ``centered-ranks`` or ``z-score``.
        maximize: the objective is to be maximised; ``grad`` is then the gradient of −f.
    """

    sigma: float = 0.1
    population: int = 32
    fitness_shaping: str = "none"
    maximize: bool = False

    def __post_init__(self) -> None:
        check_sigma(self.sigma)
        check_count(self.population, "population")
        if self.fitness_shaping not in FITNESS_SHAPINGS:
            raise UsageError(
                f"unknown fitness_shaping {self.fitness_shaping!r}; allowed: {', '.join(FITNESS_SHAPINGS)}"
            )
        if not isinstance(self.maximize, bool):
            raise UsageError(f"maximize must be True or False, got {self.maximize!r}")

    def estimate(
        self, objective: Objective, params: Params, generator: torch.Generator, vectorized: bool | None = None
    ) -> ESEstimate:
        """Estimate the gradient of the smoothed loss at ``params`` from 2n calls of ``objective``.

        Args:
            objective: parameter dict → scalar tensor, the f to minimise (or maximise).
            params: θ; detached, so the estimate builds no autograd graph.
            generator: the only source of the perturbations (see the module's note on common
                random numbers).
            vectorized: True evaluates the population with ``torch.func.vmap``, False in a loop;
                None tries vmap and falls back to the loop if the objective fails under it (for
                example, it draws random numbers or calls ``.item()``). Both give the same numbers.
        """
        theta = check_params(params)
        check_generator(generator)
        if vectorized not in (None, True, False):
            raise UsageError(f"vectorized must be True, False or None, got {vectorized!r}")
        return self.estimate_from_noise(objective, theta, draw_noise(theta, self.population, generator), vectorized)

    def estimate_from_noise(
        self, objective: Objective, params: Params, eps: Params, vectorized: bool | None = None
    ) -> ESEstimate:
        """:meth:`estimate` with the perturbation directions ``eps`` (one tensor of shape
        ``(population, *p.shape)`` per parameter) given rather than drawn."""
        grad, values, used_vmap = self.grad_from_noise(objective, params, eps, vectorized)
        return ESEstimate(grad, values, 2 * self.population, float(values.mean()), used_vmap)

    def grad_from_noise(
        self, objective: Objective, params: Params, eps: Params, vectorized: bool | None = None
    ) -> tuple[Params, Tensor, bool]:
        """The gradient estimate, the 2n values and whether vmap evaluated them: tensors only, so
        that it runs under an outer ``torch.func.vmap`` too."""
        theta, n = params, self.population
        perturbed = {k: torch.cat([theta[k] + self.sigma * eps[k], theta[k] - self.sigma * eps[k]]) for k in theta}

        with torch.no_grad():
            values, used_vmap = self._evaluate(objective, perturbed, 2 * n, vectorized)

        losses = -values if self.maximize else values
        shaped = self._shape(losses)
        diff = shaped[:n] - shaped[n:]
        grad = {k: torch.tensordot(diff.to(e.dtype), e, dims=1) / (2 * n * self.sigma) for k, e in eps.items()}
        return grad, values, used_vmap

    def _evaluate(
        self, objective: Objective, perturbed: Params, count: int, vectorized: bool | None
    ) -> tuple[Tensor, bool]:
        """f at each of the ``count`` stacked parameter dicts, and whether vmap evaluated them."""
        if vectorized is not False:
            try:
                return _as_values(torch.func.vmap(objective)(perturbed), count), True
            except Exception:
                if vectorized:
                    raise
        outputs = [objective({k: v[i] for k, v in perturbed.items()}) for i in range(count)]
        return _as_values(torch.stack([_as_scalar(out) for out in outputs]), count), False

    def _shape(self, losses: Tensor) -> Tensor:
        if self.fitness_shaping == "centered-ranks":
            return centered_ranks(losses)
        if self.fitness_shaping == "z-score":
            return z_scores(losses)
        return losses


def _as_scalar(output: object) -> Tensor:
    value = torch.as_tensor(output)
    if value.numel() != 1:
        raise UsageError(f"the objective must return a scalar, got a tensor of shape {tuple(value.shape)}")
    return value.reshape(())


def _as_values(outputs: Tensor, count: int) -> Tensor:
    if not isinstance(outputs, Tensor) or outputs.numel() != count:
        shape = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise UsageError(f"the objective must return a scalar per parameter dict, got {shape} for {count} dicts")
    return outputs.reshape(count).detach()
