"""CMA-ES over a parameter dict, through the maintained ``cma`` package.

CMA-ES (Hansen & Ostermeier 2001) samples a population from N(m, σ²C), ranks it by the objective
and moves the mean m, the step size σ and the covariance C towards the better samples. It needs no
gradient and no smoothing scale to be tuned, but its cost grows with the square of the number of
parameters (C is dense), so it suits small meta-parameter dicts: a few hyperparameters, a learning
rate per layer. Here the dict is flattened (in its order) into the vector CMA-ES works on.

The objective is minimised. ``cma`` draws its samples from a ``numpy.random.Generator`` seeded with
the explicit integer ``seed``, given to ``cma`` as its ``randn`` option: ``cma``'s own ``seed``
option would reseed NumPy's global generator, which the rest of a program shares (anything drawing
from it between ``ask`` and ``tell`` would then change the run).

``cma`` is an optional extra: ``pip install warpgrad[cma]``.

References:
    Hansen, Ostermeier. Completely Derandomized Self-Adaptation in Evolution Strategies.
    Evolutionary Computation 9(2), 2001.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from warpgrad.core.tree import Params
from warpgrad.errors import UsageError
from warpgrad.estimators._common import check_count, check_params, check_sigma, flatten, unflatten

__all__ = ["CMAES"]


def _import_cma() -> Any:
    try:
        import cma
    except ImportError:
        raise UsageError("CMA-ES needs the cma package: pip install warpgrad[cma]") from None
    return cma


class CMAES:
    """CMA-ES started at ``params`` with step size ``sigma``.

    Args:
        params: the start mean; its names, shapes, dtypes and devices are those of every dict
            :meth:`ask` returns.
        sigma: the initial step size σ (in the parameters' units).
        seed: the integer that fixes every sample: the same seed gives the same run.
        population: samples per generation λ (>= 2); None for ``cma``'s default 4 + ⌊3 ln d⌋.
        options: further ``cma`` options (for example ``tolfun``, ``bounds``).
    """

    def __init__(
        self,
        params: Params,
        *,
        sigma: float = 0.5,
        seed: int,
        population: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        cma = _import_cma()
        self._like = check_params(params)
        check_sigma(sigma)
        check_count(seed, "seed", minimum=0)
        rng = np.random.default_rng(seed)
        opts: dict[str, Any] = {
            "randn": lambda *shape: rng.standard_normal(shape),
            "seed": float("nan"),  # cma's "do not seed": the samples come from rng alone
            "verbose": -9,
            "verb_disp": 0,
            "verb_log": 0,
        }
        if population is not None:
            opts["popsize"] = check_count(population, "population", minimum=2)
        opts.update(options or {})
        mean = flatten(self._like).to(torch.float64).cpu().numpy()
        self._es = cma.CMAEvolutionStrategy(mean, float(sigma), opts)
        self.evaluations = 0

    @property
    def population(self) -> int:
        """Samples per generation λ."""
        return int(self._es.popsize)

    def stop(self) -> bool:
        """Whether one of ``cma``'s termination criteria (for example ``tolfun``) is met."""
        return bool(self._es.stop())

    def ask(self) -> list[Params]:
        """The next generation's λ samples, as parameter dicts."""
        return [self._to_params(x) for x in self._es.ask()]

    def tell(self, samples: Sequence[Params], values: Sequence[float] | Tensor) -> None:
        """Update the search distribution with the objective's ``values`` at :meth:`ask`'s ``samples``."""
        values = [float(v) for v in (values.reshape(-1) if isinstance(values, Tensor) else values)]
        if len(values) != len(samples):
            raise UsageError(f"tell needs one value per sample, got {len(values)} values for {len(samples)} samples")
        vectors = [flatten(s).detach().to(torch.float64).cpu().numpy() for s in samples]
        self._es.tell(vectors, values)
        self.evaluations += len(values)

    def best(self) -> Params:
        """The best sample told so far."""
        if self._es.result.xbest is None:
            raise UsageError("best() needs at least one tell()")
        return self._to_params(self._es.result.xbest)

    @property
    def best_value(self) -> float:
        """The objective's value at :meth:`best`."""
        if self._es.result.xbest is None:
            raise UsageError("best_value needs at least one tell()")
        return float(self._es.result.fbest)

    def optimize(self, objective: Callable[[Params], Tensor | float], iterations: int) -> Params:
        """Run up to ``iterations`` generations of ask, evaluate, tell (fewer where :meth:`stop`
        says so) and return the best sample; :attr:`evaluations` counts the objective's calls."""
        check_count(iterations, "iterations")
        for _ in range(iterations):
            if self.stop():
                break
            samples = self.ask()
            with torch.no_grad():
                values = [float(objective(s)) for s in samples]
            self.tell(samples, values)
        return self.best()

    def _to_params(self, vector: np.ndarray) -> Params:
        return unflatten(torch.from_numpy(np.asarray(vector, dtype=np.float64)), self._like)
