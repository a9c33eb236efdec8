"""Meta-learners: one module per method."""

from warpgrad.methods.base import MetaLearner, NoMetaLearning, inner_loop

__all__ = ["MetaLearner", "NoMetaLearning", "inner_loop"]
