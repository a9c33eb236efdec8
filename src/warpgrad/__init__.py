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
from warpgrad.methods.finetune import FineTune
from warpgrad.methods.leap import Leap
from warpgrad.methods.maml import MAML, MetaSGD
from warpgrad.methods.reptile import Reptile
from warpgrad.methods.tnets import TNets
from warpgrad.methods.warpgrad import WarpGrad

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
    "WarpGrad",
    "MAML",
    "MetaSGD",
    "Reptile",
    "Leap",
    "TNets",
    "FineTune",
]
