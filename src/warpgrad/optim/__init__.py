"""``torch.optim`` optimisers: :class:`FOP` (first-order preconditioning, :mod:`warpgrad.optim.fop`) and
:class:`LearnedOptimizer` (a meta-trained per-parameter rule, :mod:`warpgrad.optim.learned`)."""

from warpgrad.optim.fop import FOP
from warpgrad.optim.learned import LearnedOptimizer

__all__ = ["FOP", "LearnedOptimizer"]
