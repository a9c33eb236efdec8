"""Persistent Evolution Strategies: unbiased zero-order meta-gradients from truncated unrolls.

An inner problem runs T steps s_{t+1}, ℓ_t = step(s_t, θ) from s_0 = init_state(). Truncated ES
perturbs θ afresh for each window of K steps and is biased, because it ignores how earlier windows'
perturbations shaped the state. PES (Vicol, Metz & Sohl-Dickstein 2021) keeps N particles, each with
its own state s^j and the sum ξ_j of all perturbations it has been unrolled with since the last
reset. Each call:

    1. draws ε_j ~ N(0, σ²I) and sets ξ_j ← ξ_j + ε_j,
    2. unrolls each particle K steps with θ + ε_j from its own state; L_j = the sum of its K losses,
    3. estimates ĝ = 1/(Nσ²) Σ_j ξ_j L_j.

Here the N = 2n particles are antithetic pairs: ε_{i+} = σz_i, ε_{i−} = −σz_i with z_i ~ N(0, I),
so ξ_{i−} = −ξ_{i+} =: −ξ_i and

    ĝ = 1/(2nσ²) Σ_i ξ_i (L_{i+} − L_{i−}).

Over one horizon (T/K calls) the sum of the estimates is an unbiased estimate of the gradient of
the total loss smoothed with an independent perturbation per window, E_{ε_1,ε_2,…} Σ_t ℓ_t(θ + ε_w(t)).
With K = T this is exactly antithetic ES on the total loss: with the same generator state the
estimates are equal. When step T is reached, every particle is reset to init_state() and ξ to 0.

``grad`` is the gradient of the loss (minimised: θ ← θ − lr·ĝ). The noise is drawn from the
caller's generator only; each particle's states are kept, so :meth:`PES.state_dict` and
:meth:`PES.load_state_dict` resume mid-horizon with identical estimates.

References:
    Vicol, Metz, Sohl-Dickstein. Unbiased Gradient Estimation in Unrolled Computation Graphs with
    Persistent Evolution Strategies. ICML 2021.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from warpgrad.core.tree import Params, tree_map
from warpgrad.errors import UsageError
from warpgrad.estimators._common import check_count, check_generator, check_params, check_sigma, draw_noise

__all__ = ["PES", "PESEstimate"]

Step = Callable[[Any, Params], tuple[Any, Tensor]]


@dataclass(frozen=True, eq=False)
class PESEstimate:
    """One PES estimate.

    Attributes:
        grad: the estimate of the gradient of the smoothed total loss, per parameter.
        losses: each particle's loss summed over this call's steps: first the n "+" particles,
            then their n antithetic partners.
        steps: the unroll steps this call ran (K, or fewer where the horizon T ends first).
        evaluations: particle-steps unrolled, 2n·steps: compare estimators at equal budgets with it.
        mean_loss: the mean of ``losses``.
    """

    grad: Params
    losses: Tensor
    steps: int
    evaluations: int
    mean_loss: float


def _copy(tree: Any) -> Any:
    return tree_map(lambda t: t.detach().clone(), tree)


class PES:
    """PES over an inner problem ``step(state, params) -> (state, loss)`` started by ``init_state()``.

    Args:
        step: one inner step with meta-parameters ``params``; ``loss`` a scalar tensor.
        init_state: the start state s_0 (a tensor or a tree of tensors); called once per horizon
            and copied to every particle.
        sigma: the scale σ of the perturbations σz, z ~ N(0, I).
        population: the number of antithetic pairs n (2n particles).
        truncation: the steps K each call unrolls.
        total_steps: the horizon T, after which the particles and ξ are reset.
    """

    def __init__(
        self,
        step: Step,
        init_state: Callable[[], Any],
        *,
        sigma: float = 0.1,
        population: int = 32,
        truncation: int = 10,
        total_steps: int = 100,
    ) -> None:
        if not callable(step) or not callable(init_state):
            raise UsageError("step and init_state must be callables: step(state, params) and init_state()")
        self.step = step
        self.init_state = init_state
        self.sigma = check_sigma(sigma)
        self.population = check_count(population, "population")
        self.truncation = check_count(truncation, "truncation")
        self.total_steps = check_count(total_steps, "total_steps")
        self._states: list[Any] | None = None
        self._xi: Params | None = None
        self._t = 0

    @property
    def t(self) -> int:
        """The inner steps done in the current horizon."""
        return self._t

    def estimate(self, params: Params, generator: torch.Generator) -> PESEstimate:
        """Advance every particle by one truncation and estimate the gradient at ``params``."""
        theta = check_params(params)
        check_generator(generator)
        if self._states is None or self._t >= self.total_steps:
            self._reset(theta)
        self._check_matches(theta)
        n, sigma = self.population, self.sigma

        z = draw_noise(theta, n, generator)
        for k in theta:
            self._xi[k] += sigma * z[k]

        steps = min(self.truncation, self.total_steps - self._t)
        losses = []
        with torch.no_grad():
            for j in range(2 * n):
                sign, i = (1.0, j) if j < n else (-1.0, j - n)
                perturbed = {k: theta[k] + sign * sigma * z[k][i] for k in theta}
                state, total = self._states[j], 0.0
                for _ in range(steps):
                    state, loss = self.step(state, perturbed)
                    total = total + loss
                self._states[j] = state
                losses.append(torch.as_tensor(total).reshape(()))
        self._t += steps

        losses = torch.stack(losses).detach()
        diff = losses[:n] - losses[n:]
        grad = {k: torch.tensordot(diff.to(xi.dtype), xi, dims=1) / (2 * n * sigma**2) for k, xi in self._xi.items()}
        return PESEstimate(grad, losses, steps, 2 * n * steps, float(losses.mean()))

    def _reset(self, theta: Params) -> None:
        start = self.init_state()
        self._states = [_copy(start) for _ in range(2 * self.population)]
        self._xi = {k: p.new_zeros((self.population, *p.shape)) for k, p in theta.items()}
        self._t = 0

    def _check_matches(self, theta: Params) -> None:
        shapes = {k: tuple(p.shape) for k, p in theta.items()}
        kept = {k: tuple(xi.shape[1:]) for k, xi in self._xi.items()}
        if shapes != kept:
            raise UsageError(f"params {shapes} differ from those of the current horizon {kept}")

    def state_dict(self) -> dict[str, Any]:
        """Copies of the particles' states, ξ (per pair, for the "+" particle) and the step counter."""
        return {
            "population": self.population,
            "states": None if self._states is None else [_copy(s) for s in self._states],
            "xi": None if self._xi is None else _copy(self._xi),
            "t": self._t,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`'s output (of a PES with the same population)."""
        if state.get("population") != self.population:
            raise UsageError(f"the state is of a population of {state.get('population')!r}, not {self.population}")
        self._states = None if state["states"] is None else [_copy(s) for s in state["states"]]
        self._xi = None if state["xi"] is None else _copy(state["xi"])
        self._t = int(state["t"])
