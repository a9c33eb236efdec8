"""ANML: a neuromodulated meta-learning algorithm (Beaulieu et al., 2020).

A neuromodulatory (NM) network n_ν outputs a sigmoid mask m(x) = σ(n_ν(x)) that gates the
prediction network's features h_θ(x) elementwise before its final linear layer:

    logits = g_W(h_θ(x) ⊙ m(x)).

Gating the forward pass also gates the backward pass: ∂ℓ/∂h = (∂ℓ/∂(h⊙m)) ⊙ m and the head's
gradient sees h ⊙ m, so a feature with mask 0 receives (and gives) no gradient — selective
plasticity decided per input by the NM network.

Meta-training sample: a trajectory (x_1, y_1) … (x_T, y_T) from one class and a remember batch.
Inner loop: sequential SGD (lr 0.1) one image at a time on the prediction network, the NM network
held fixed. **Choice made here:** with ``inner="all"`` (default, the paper's meta-training) every
prediction-network parameter (θ and W) is adapted in the inner loop; ``inner="head"`` adapts only
W (the meta-test regime). Meta-loss: the adapted prediction network on trajectory + remember
images. The meta-gradient w.r.t. ν and the prediction network's initialisation (θ, W) is **truly
second order**: inner gradients come from ``torch.func.grad`` and are differentiated through.
The original code is first order by accident (no ``create_graph``); ``first_order=True`` gives
that for comparison (the inner gradients become constants, so ν is learned only through the
meta-loss forward pass).

The mask is computed for the trajectory in one batched pass (the NM network is fixed in the
inner loop); the defaults have no batch-dependent layers, so this equals one image at a time.

Meta-test: NM and θ frozen, the head reset (zeros by default) and trained one SGD step per image in
one pass over new classes; accuracy on all seen classes after each class
(:func:`warpgrad.methods.continual.oml.continual_meta_test`).

References:
    Beaulieu, Frati, Miconi, Lehman, Stanley, Clune, Cheney. Learning to Continually Learn.
    ECAI 2020. arXiv:2002.09571.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from warpgrad.errors import UsageError
from warpgrad.functional import Params, functional_apply
from warpgrad.methods.base import check_no_running_statistics
from warpgrad.methods.continual.oml import (
    Loss,
    TrajectoryMetaLearner,
    conv_representation,
    sequential_sgd,
)

__all__ = ["ANML", "anml_networks", "INNER_CHOICES"]

INNER_CHOICES = ("all", "head")


def anml_networks(
    n_classes: int,
    in_channels: int = 1,
    nm_widths: Sequence[int] = (32, 32, 32),
    pn_widths: Sequence[int] = (64, 64, 64),
    image_size: int = 28,
    norm: bool = False,
) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Default ``(nm, features, head)`` for small grey images.

    ``features``: conv stack (:func:`~warpgrad.methods.continual.oml.conv_representation`) of
    width D; ``nm``: its own conv stack followed by a linear layer to D mask logits; ``head``:
    linear D → ``n_classes``.
    """
    features, dim = conv_representation(in_channels, pn_widths, image_size, norm)
    nm_body, nm_dim = conv_representation(in_channels, nm_widths, image_size, norm)
    return nn.Sequential(nm_body, nn.Linear(nm_dim, dim)), features, nn.Linear(dim, n_classes)


class ANML(TrajectoryMetaLearner):
    """ANML meta-learner.

    Args:
        nm: x ↦ mask logits of the feature width (the sigmoid is applied here).
        features: prediction network body x ↦ h(x), flattened ``[N, D]``.
        head: prediction network head on h ⊙ m.
        inner_lr: inner-loop (and meta-test) SGD learning rate (0.1 in the paper).
        meta_lr: Adam learning rate (1e-3 in the paper).
        inner: ``"all"`` (θ and W adapted in the inner loop) or ``"head"`` (W only).
        first_order: treat inner gradients as constants (the original code's behaviour).
    """

    name = "anml"
    resets_class_row = True  # meta-training zeroes the trajectory class's head row first (both papers' code)

    def __init__(
        self,
        nm: nn.Module,
        features: nn.Module,
        head: nn.Module,
        inner_lr: float = 0.1,
        meta_lr: float = 1e-3,
        *,
        inner: str = "all",
        first_order: bool = False,
        meta_optimizer: str = "adam",
        loss_fn: Loss = F.cross_entropy,
    ):
        if inner not in INNER_CHOICES:
            raise UsageError(f"unknown inner {inner!r}; allowed: {', '.join(INNER_CHOICES)}")
        if inner_lr <= 0:
            raise UsageError(f"inner_lr must be > 0, got {inner_lr!r}")
        self.model = nn.ModuleDict({"nm": nm, "features": features, "head": head})
        check_no_running_statistics(self.model)
        self.nm, self.feature_net, self.head = nm, features, head
        self.inner_lr, self.inner, self.first_order, self.loss_fn = inner_lr, inner, first_order, loss_fn
        self.init_shell(meta_optimizer, meta_lr)

    def meta_parameters(self) -> list[Tensor]:
        """ν (NM), then the prediction network's initialisation θ (features) and W (head)."""
        return list(self.model.parameters())

    # ---------------------------------------------------------------- forward pieces
    def mask(self, x: Tensor, nm_params: Params | None = None) -> Tensor:
        """m(x) = σ(n_ν(x)) in (0, 1), shape ``[N, D]``."""
        params = dict(self.nm.named_parameters()) if nm_params is None else nm_params
        return torch.sigmoid(functional_apply(self.nm, params, x))

    def _logits(self, feature_params: Params, head_params: Params, x: Tensor, mask: Tensor) -> Tensor:
        h = functional_apply(self.feature_net, feature_params, x)
        return functional_apply(self.head, head_params, h * mask)

    def inner_gradient(self, params: Params, x: Tensor, y: Tensor, mask: Tensor) -> Params:
        """∇ of ℓ(g_W(h_θ(x) ⊙ mask), y) w.r.t. ``params`` (keys ``features.*``/``head.*``)."""

        def loss(p: Params) -> Tensor:
            feature_params = dict(self.feature_net.named_parameters())
            feature_params.update({k[9:]: v for k, v in p.items() if k.startswith("features.")})
            head_params = dict(self.head.named_parameters())
            head_params.update({k[5:]: v for k, v in p.items() if k.startswith("head.")})
            return self.loss_fn(self._logits(feature_params, head_params, x, mask), y)

        return torch.func.grad(loss)(params)

    def meta_loss(self, trajectory_x: Tensor, trajectory_y: Tensor, remember_x: Tensor, remember_y: Tensor) -> Tensor:
        """Loss of the prediction network after sequential SGD on the trajectory (trajectory + remember)."""
        x = torch.cat([trajectory_x, remember_x])
        y = torch.cat([trajectory_y, remember_y])
        mask = self.mask(x)
        t = trajectory_x.shape[0]
        features0 = dict(self.feature_net.named_parameters())
        head0 = dict(self.head.named_parameters())
        if self.inner == "head":
            feats = functional_apply(self.feature_net, features0, x) * mask

            def head_loss(p: Params, i: int) -> Tensor:
                return self.loss_fn(functional_apply(self.head, p, feats[i : i + 1]), trajectory_y[i : i + 1])

            head_t = sequential_sgd(head_loss, head0, t, self.inner_lr, self.first_order)
            return self.loss_fn(functional_apply(self.head, head_t, feats), y)

        fast = {**{f"features.{k}": v for k, v in features0.items()}, **{f"head.{k}": v for k, v in head0.items()}}

        def split(p: Params) -> tuple[Params, Params]:
            return (
                {k[9:]: v for k, v in p.items() if k.startswith("features.")},
                {k[5:]: v for k, v in p.items() if k.startswith("head.")},
            )

        def loss_at(p: Params, i: int) -> Tensor:
            fp, hp = split(p)
            return self.loss_fn(self._logits(fp, hp, trajectory_x[i : i + 1], mask[i : i + 1]), trajectory_y[i : i + 1])

        fast = sequential_sgd(loss_at, fast, t, self.inner_lr, self.first_order)
        fp, hp = split(fast)
        return self.loss_fn(self._logits(fp, hp, x, mask), y)

    # ---------------------------------------------------------------- meta-test
    def frozen_features(self, x: Tensor) -> Tensor:
        """h(x) ⊙ m(x) with the meta-learned NM and prediction-network body (no gradient)."""
        with torch.no_grad():
            return functional_apply(self.feature_net, dict(self.feature_net.named_parameters()), x) * self.mask(x)

    # ---------------------------------------------------------------- checkpoints
