"""T-Nets: linear transformation layers meta-learned through the inner loop, MAML-style.

T-Nets (Lee & Choi, ICML 2018) interleave linear transformation layers T with the task
learner's layers. T is fixed during adaptation, so the task gradient is preconditioned by T's
Jacobian; T and θ₀ are meta-learned with the MAML meta-gradient, backpropagating through all K
inner steps. In warpgrad's terms T-Nets is a model with *linear* warp layers (the default
``linear_warp`` / ``conv_warp``) trained by second-order MAML with the warps among the
meta-parameters: the special case of WarpGrad's preconditioning that WarpGrad trains without
backpropagating through the inner loop.

References:
    Lee, Choi. Gradient-Based Meta-Learning with Learned Layerwise Metric and Subspace.
    ICML 2018. arXiv:1801.05558.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from warpgrad.core.optim import InnerOptimizer
from warpgrad.core.params import everything, warp_only
from warpgrad.errors import UsageError
from warpgrad.methods.maml import MAML, MAMLConfig
from warpgrad.methods.registry import register


@dataclass
class TNetsConfig(MAMLConfig):
    """T-Nets' options (as MAML's)."""


class TNets(MAML):
    """MAML whose meta-parameters are θ₀ and the (linear) warp layers' parameters."""

    name = "tnets"

    def __init__(self, model: nn.Module, inner_optimizer: InnerOptimizer, inner_steps: int, **kwargs: Any):
        if not warp_only(model):
            raise UsageError("TNets needs a model with warpgrad.Warp transformation layers; found none")
        super().__init__(model, inner_optimizer, inner_steps, meta_filter=everything, **kwargs)


register("tnets", TNets, TNetsConfig, "T-Nets: linear warp layers and θ₀ learned by second-order MAML", uses_warps=True)
