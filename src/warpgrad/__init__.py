"""warpgrad: meta-learned update rules in PyTorch.

WarpGrad (Flennerhag et al., ICLR 2020) and the methods it is compared with, over a functional
core of parameter dicts. See ``docs/`` for what each method computes.
"""

from warpgrad.functional import (
    InnerOptimizer,
    adam,
    combine,
    functional_apply,
    momentum,
    partition,
    sgd,
)
from warpgrad.layers import MLP, Conv4, Warp, conv_warp, linear_warp
from warpgrad.methods.base import MetaLearner, NoMetaLearning

__version__ = "0.1.0"

__all__ = [
    "InnerOptimizer",
    "adam",
    "combine",
    "functional_apply",
    "momentum",
    "partition",
    "sgd",
    "MLP",
    "Conv4",
    "Warp",
    "conv_warp",
    "linear_warp",
    "MetaLearner",
    "NoMetaLearning",
]
