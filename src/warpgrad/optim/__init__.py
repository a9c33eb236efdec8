"""``torch.optim`` optimisers: :class:`FOP` (first-order preconditioning, :mod:`warpgrad.optim.fop`)."""

from warpgrad.optim.fop import FOP

__all__ = ["FOP"]
