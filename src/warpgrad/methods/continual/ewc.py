"""Elastic weight consolidation (EWC) and online EWC.

After an experience A, EWC anchors the parameters at θ*_A and penalises moving the ones that
mattered for A, as measured by the diagonal of the Fisher information F_A:

    L(θ) = L_B(θ) + Σ_i (λ/2) F_A,i (θ_i − θ*_A,i)²          (Kirkpatrick et al. 2017, eq. 3)

This is the paper's convention, with the ½. Avalanche's ``EWCPlugin`` computes
``λ Σ F (θ − θ*)²`` without the ½, so its ``ewc_lambda`` equals this module's ``λ/2``.

*Standard* EWC keeps one (F_k, θ*_k) pair per past experience and sums their penalties.
*Online* EWC (Schwarz et al. 2018; Huszár 2018) keeps one running Fisher F* ← γF* + F_k and a
single anchor at the latest parameters θ*_k.

Training uses the sum in closed form, at the cost of one pair whatever the number of
experiences: Σ_k F_k (θ − θ*_k)² = F̄ (θ − θ̄)² + C with F̄ = Σ_k F_k, θ̄ = Σ_k F_k θ*_k / F̄
(any value where F̄ = 0) and C = Σ_k F_k (θ*_k − θ̄)², so the step adds λ F̄ ⊙ (θ − θ̄) to the
gradients directly (no autograd graph; :meth:`EWC.penalty_backward`). :meth:`EWC.penalty` is
the literal sum, the definition the closed form is tested against.

The Fisher variants (``exact``, ``sampled``, ``empirical``, ``batched``) and how they are computed
are described in :mod:`.fisher` (:func:`fisher_diagonal`, re-exported here).

Example:
    >>> learner = EWC(torch.nn.Linear(4, 3), lr=0.1, lam=100.0, fisher="exact")
    >>> learner.train_experience(xa, ya, generator)
    >>> learner.end_experience(xa, ya, generator)      # Fisher and anchor for task A
    >>> learner.train_experience(xb, yb, generator)    # now penalised

References:
    Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", PNAS 2017.
    Schwarz et al., "Progress & Compress: A scalable framework for continual learning", ICML 2018.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from warpgrad.errors import UsageError
from warpgrad.functional import Params, detach
from warpgrad.methods.continual.base import ContinualLearner
from warpgrad.methods.continual.fisher import FISHER_KINDS, fisher_diagonal

__all__ = ["FISHER_KINDS", "fisher_diagonal", "ewc_penalty", "EWC"]


def ewc_penalty(params: Params, fisher: Params, anchor: Params, lam: float) -> Tensor:
    """Ω(θ) = Σ_i (λ/2) F_i (θ_i − θ*_i)² over the names in ``fisher`` (paper's convention).

    Its gradient is λ F ⊙ (θ − θ*).
    """
    terms = [(fisher[k] * (params[k] - anchor[k]) ** 2).sum() for k in fisher]
    return 0.5 * lam * torch.stack(terms).sum()


class EWC(ContinualLearner):
    """EWC (``online=False``) or online EWC (``online=True``) on top of SGD.

    Args:
        model: the classifier.
        lr, momentum, optimizer: the optimiser (see :class:`~.base.ContinualLearner`; SGD by default).
        lam: λ of the penalty Σ (λ/2) F (θ − θ*)² (paper's convention; Avalanche's λ is λ/2).
        fisher: the Fisher kind (``exact``, ``sampled``, ``empirical``, ``batched``).
        online: keep one running Fisher F* ← γF* + F and one anchor (the latest parameters).
        gamma: the decay γ of online EWC (ignored otherwise).
        fisher_batch_size: ``batch_size`` of :func:`fisher_diagonal` (needed for ``batched``).
    """

    name = "ewc"

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        lam: float,
        fisher: str = "exact",
        online: bool = False,
        gamma: float = 1.0,
        fisher_batch_size: int | None = None,
        momentum: float = 0.0,
        loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
        optimizer: str = "sgd",
    ) -> None:
        if fisher not in FISHER_KINDS:
            raise UsageError(f"unknown Fisher kind {fisher!r}; allowed: {', '.join(FISHER_KINDS)}")
        if fisher == "batched" and fisher_batch_size is None:
            raise UsageError("fisher='batched' needs fisher_batch_size")
        if lam < 0:
            raise UsageError(f"lam must be >= 0, got {lam}")
        if not 0 <= gamma <= 1:
            raise UsageError(f"gamma must be in [0, 1], got {gamma}")
        super().__init__(model, lr, momentum=momentum, loss_fn=loss_fn, optimizer=optimizer)
        self.lam = lam
        self.fisher_kind = fisher
        self.online = online
        self.gamma = gamma
        self.fisher_batch_size = fisher_batch_size
        self.fishers: list[Params] = []
        self.anchors: list[Params] = []
        self._merged: tuple[Params, Params, Tensor] | None = None  # (F̄, θ̄, C), see the module docstring

    def penalty(self, params: Params) -> Tensor:
        """Σ over stored (F, θ*) pairs of Σ_i (λ/2) F_i (θ_i − θ*_i)²."""
        total = super().penalty(params)
        if self.lam == 0:
            return total
        for fisher, anchor in zip(self.fishers, self.anchors):
            total = total + ewc_penalty(params, fisher, anchor, self.lam)
        return total

    def penalty_backward(self) -> float:
        """Add λ F̄ ⊙ (θ − θ̄) to each parameter's ``.grad``; return the penalty (λ/2)(Σ F̄ (θ − θ̄)² + C)."""
        if self.lam == 0 or not self.fishers:
            return 0.0
        if self._merged is None:
            self._merged = _merge(self.fishers, self.anchors)
        fisher, centre, constant = self._merged
        total = constant.clone()
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if name not in fisher:
                    continue
                diff = param - centre[name]
                weighted = fisher[name] * diff
                if param.grad is None:
                    param.grad = self.lam * weighted
                else:
                    param.grad.add_(weighted, alpha=self.lam)
                total += (weighted * diff).sum()
        return float(0.5 * self.lam * total)

    def end_experience(
        self, x: Tensor, y: Tensor, generator: torch.Generator, classes: Sequence[int] | Tensor | None = None
    ) -> None:
        """Fisher at the current parameters on ``(x, y)`` (over the outputs ``classes`` when given);
        store it with the anchor θ* = θ."""
        super().end_experience(x, y, generator, classes)
        self.model.eval()
        params = detach(dict(self.model.named_parameters()))
        fisher = fisher_diagonal(
            self.model,
            params,
            x,
            y,
            self.fisher_kind,
            generator=generator,
            batch_size=self.fisher_batch_size,
            classes=classes,
        )
        if self.online:
            if self.fishers:
                fisher = {k: self.gamma * self.fishers[0][k] + fisher[k] for k in fisher}
            self.fishers, self.anchors = [fisher], [params]
        else:
            self.fishers.append(fisher)
            self.anchors.append(params)
        self._merged = None

    def extra_state(self) -> dict[str, Any]:
        return {"fishers": [dict(f) for f in self.fishers], "anchors": [dict(a) for a in self.anchors]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.fishers = [dict(f) for f in state["fishers"]]
        self.anchors = [dict(a) for a in state["anchors"]]
        self._merged = None


def _merge(fishers: list[Params], anchors: list[Params]) -> tuple[Params, Params, Tensor]:
    """(F̄, θ̄, C) of the module docstring: Σ_k F_k (θ − θ*_k)² = Σ F̄ (θ − θ̄)² + C."""
    total: Params = {}
    centre: Params = {}
    constant = torch.zeros((), dtype=next(iter(fishers[0].values())).dtype)
    for name in fishers[0]:
        f_sum = torch.stack([f[name] for f in fishers]).sum(0)
        weighted = torch.stack([f[name] * a[name] for f, a in zip(fishers, anchors)]).sum(0)
        theta = torch.where(f_sum > 0, weighted / torch.where(f_sum > 0, f_sum, 1), anchors[-1][name])
        total[name], centre[name] = f_sum, theta
        constant = constant + sum((f[name] * (a[name] - theta) ** 2).sum() for f, a in zip(fishers, anchors))
    return total, centre, constant
