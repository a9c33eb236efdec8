"""``torch.optim`` optimisers: :class:`FOP` (first-order preconditioning, :mod:`warpgrad.optim.fop`)."""

from warpgrad.optim.fop import FOP
from warpgrad.optim.learned import LearnedOptimizer

__all__ = ["FOP", "LearnedOptimizer"]
