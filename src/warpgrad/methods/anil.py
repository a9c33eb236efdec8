"""ANIL: MAML that adapts only the classifier head ("almost no inner loop").

Raghu et al. (2020) found MAML's inner loop changes the body's representation little; ANIL
adapts only the head in the inner loop and meta-learns every parameter (body and head
initialisation) through it:

    θ_head,K = U^K(θ_head,0; body),     C(body, θ_head,0) = E_τ L_τ^test(body, θ_head,K),

second order through the K head steps (``first_order=True`` drops those terms). It is MAML with
the ``head_only`` adapt filter: the body is frozen during adaptation and meta-learned.

References:
    Raghu, Raghu, Bengio, Vinyals. Rapid Learning or Feature Reuse? Towards Understanding the
    Effectiveness of MAML. ICLR 2020. arXiv:1909.09157.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from warpgrad.core.optim import InnerOptimizer
from warpgrad.core.params import head_only
from warpgrad.methods.maml import MAML, MAMLConfig
from warpgrad.methods.registry import register


@dataclass
class ANILConfig(MAMLConfig):
    """ANIL's options: MAML's, and ``head``, the submodule that adapts (``None``: the model's last
    submodule with parameters, e.g. the output layer)."""

    head: str | None = None


class ANIL(MAML):
    """MAML adapting only ``head`` in the inner loop; body and head meta-learned."""

    name = "anil"

    def __init__(
        self,
        model: nn.Module,
        inner_optimizer: InnerOptimizer,
        inner_steps: int,
        *,
        head: str | None = None,
        **options: Any,
    ):
        super().__init__(model, inner_optimizer, inner_steps, adapt=head_only(head), **options)


register("anil", ANIL, ANILConfig, "ANIL: MAML adapting only the classifier head")
