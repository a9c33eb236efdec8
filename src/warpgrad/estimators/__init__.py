"""Zero-order meta-gradient estimators for meta-parameters given as a parameter dict.

- :class:`ES`: antithetic Evolution Strategies on any objective ``f(params) -> scalar``
  (Salimans et al. 2017), with optional fitness shaping and common random numbers.
- :class:`PES`: Persistent Evolution Strategies on a truncated inner unroll, unbiased over the
  whole horizon (Vicol, Metz & Sohl-Dickstein 2021).
- :class:`CMAES`: CMA-ES (Hansen & Ostermeier 2001) through the optional ``cma`` package.

``ES`` and ``PES`` return the gradient of the loss being minimised, ready for ``p.grad``;
each estimate says how many objective evaluations it cost.
"""

from warpgrad.estimators.cma_es import CMAES
from warpgrad.estimators.es import ES, FITNESS_SHAPINGS, ESEstimate, centered_ranks, z_scores
from warpgrad.estimators.pes import PES, PESEstimate

__all__ = ["ES", "ESEstimate", "FITNESS_SHAPINGS", "centered_ranks", "z_scores", "PES", "PESEstimate", "CMAES"]
