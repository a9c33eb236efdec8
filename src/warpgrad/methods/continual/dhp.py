"""DHP Softmax: a differentiable-Hebbian-plasticity output layer for continual learning.

The output layer has slow weights W (and bias b), learned by gradient, plus a fast Hebbian trace
``Hebb`` of the same shape [n_classes, features] gated element-wise by learned plasticity
coefficients α (Miconi et al. 2018):

    logits = h · (W + α ⊙ Hebb)ᵀ + b

where h are the features entering the layer. The trace rate η ∈ (0, 1) is one learned scalar,
parameterised as η = sigmoid(η_logit).

Trace update (Thangarasa, Miconi & Taylor 2020), after each training batch, from the batch's
class-conditional feature means: for every class c present in the batch,

    Hebb[c] ← (1 − η) Hebb[c] + η · mean_{i: y_i = c} h_i

and rows of absent classes are unchanged (:func:`hebbian_update`, a pure function). ``Hebb`` is a
buffer, never reset across tasks: a compressed episodic memory of the class means.

How η gets a gradient (this implementation's choice): in a training step the trace is first
updated from the batch, differentiably in η and h, and the batch's logits use the *updated* trace
(so the loss sees η); the incoming trace is a constant (gradients are truncated at the batch
boundary) and the buffer is then overwritten with the detached updated trace. Note that a
training example's own features thus enter its class row of the trace. At prediction the
stored trace is used as is.

:class:`DHPLearner` trains a feature network + :class:`DHPSoftmax` with the continual protocol
and, with ``ewc_lambda > 0``, adds EWC's penalty on every learned parameter (W, b, α, η_logit and
the feature network; the Hebb buffer is not a parameter and is never penalised).

Example:
    >>> learner = DHPLearner(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU()), 16, 4, lr=0.1)
    >>> learner.train_experience(x, y, torch.Generator().manual_seed(0))
    >>> logits = learner.predict(x)

References:
    Miconi, Clune & Stanley, "Differentiable plasticity: training plastic neural networks with
    backpropagation", ICML 2018.
    Thangarasa, Miconi & Taylor, "Enabling continual learning with differentiable Hebbian
    plasticity", IJCNN 2020.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from warpgrad.errors import UsageError
from warpgrad.methods.continual.base import select_outputs
from warpgrad.methods.continual.ewc import EWC

__all__ = ["hebbian_update", "plastic_logits", "DHPSoftmax", "DHPNet", "DHPLearner"]


def hebbian_update(hebb: Tensor, h: Tensor, y: Tensor, eta: Tensor | float) -> Tensor:
    """New trace: rows of classes in ``y`` move towards their mean feature by η; others unchanged.

    Args:
        hebb: [n_classes, features] current trace.
        h: [batch, features] features entering the layer.
        y: [batch] integer labels.
        eta: the trace rate η (a scalar tensor keeps the result differentiable in it).
    """
    onehot = F.one_hot(y, hebb.shape[0]).to(h.dtype)  # [B, C]
    counts = onehot.sum(0)  # [C]
    means = (onehot.T @ h) / counts.clamp(min=1).unsqueeze(1)  # [C, D]
    present = (counts > 0).unsqueeze(1)
    return torch.where(present, (1 - eta) * hebb + eta * means, hebb)


def plastic_logits(h: Tensor, weight: Tensor, alpha: Tensor, bias: Tensor | None, hebb: Tensor) -> Tensor:
    """logits = h · (W + α ⊙ Hebb)ᵀ + b."""
    out = h @ (weight + alpha * hebb).T
    return out if bias is None else out + bias


class DHPSoftmax(nn.Module):
    """Plastic output layer: parameters ``weight``, ``bias``, ``alpha``, ``eta_logit``; buffer ``hebb``.

    Args:
        in_features, n_classes: the layer's shape.
        eta_init: initial η (in (0, 1)).
        alpha_init: initial value of every α.
    """

    def __init__(self, in_features: int, n_classes: int, eta_init: float = 0.1, alpha_init: float = 0.01) -> None:
        super().__init__()
        if not 0 < eta_init < 1:
            raise UsageError(f"eta_init must be in (0, 1), got {eta_init}")
        linear = nn.Linear(in_features, n_classes)
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = nn.Parameter(linear.bias.detach().clone())
        self.alpha = nn.Parameter(torch.full((n_classes, in_features), float(alpha_init)))
        self.eta_logit = nn.Parameter(torch.tensor(math.log(eta_init / (1 - eta_init))))
        self.register_buffer("hebb", torch.zeros(n_classes, in_features))

    @property
    def eta(self) -> Tensor:
        return torch.sigmoid(self.eta_logit)

    def forward(self, h: Tensor, hebb: Tensor | None = None) -> Tensor:
        """Plastic logits with ``hebb`` (the stored trace when None)."""
        return plastic_logits(h, self.weight, self.alpha, self.bias, self.hebb if hebb is None else hebb)

    @torch.no_grad()
    def update_trace(self, h: Tensor, y: Tensor) -> None:
        """Overwrite the stored trace with :func:`hebbian_update` of ``(h, y)``."""
        self.hebb.copy_(hebbian_update(self.hebb, h, y, self.eta))


class DHPNet(nn.Module):
    """``features`` followed by a :class:`DHPSoftmax` ``head``."""

    def __init__(self, features: nn.Module, head: DHPSoftmax) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class DHPLearner(EWC):
    """Continual learner with a DHP Softmax head, optionally with EWC on the slow weights.

    Args:
        features: the feature network (its output has ``in_features`` features).
        in_features, n_classes: the head's shape.
        lr, momentum, optimizer: the optimiser of all learned parameters (W, b, α, η_logit,
            features; SGD by default, see :class:`~warpgrad.methods.continual.base.ContinualLearner`).
        ewc_lambda: λ of the EWC penalty (paper's convention, see :mod:`.ewc`); 0 disables EWC.
        fisher, online, gamma, fisher_batch_size: as for :class:`~warpgrad.methods.continual.ewc.EWC`.
        eta_init, alpha_init: the head's initial η and α.
    """

    name = "dhp"

    def __init__(
        self,
        features: nn.Module,
        in_features: int,
        n_classes: int,
        lr: float,
        ewc_lambda: float = 0.0,
        fisher: str = "exact",
        online: bool = False,
        gamma: float = 1.0,
        fisher_batch_size: int | None = None,
        momentum: float = 0.0,
        eta_init: float = 0.1,
        alpha_init: float = 0.01,
        optimizer: str = "sgd",
    ) -> None:
        model = DHPNet(features, DHPSoftmax(in_features, n_classes, eta_init=eta_init, alpha_init=alpha_init))
        super().__init__(
            model,
            lr,
            ewc_lambda,
            fisher=fisher,
            online=online,
            gamma=gamma,
            fisher_batch_size=fisher_batch_size,
            momentum=momentum,
            loss_fn=F.cross_entropy,
            optimizer=optimizer,
        )

    def train_step(self, x: Tensor, y: Tensor, classes: Sequence[int] | Tensor | None = None) -> dict[str, float]:
        """Update the trace from the batch (differentiably), step on CE + EWC, store the trace.

        With ``classes`` (labels are positions in it) the trace rows updated are the output
        units ``classes[y]`` and the loss uses the logits of ``classes`` only.
        """
        self.model.train()
        head: DHPSoftmax = self.model.head
        self.optimizer.zero_grad(set_to_none=True)
        h = self.model.features(x)
        units = y if classes is None else torch.as_tensor(classes, dtype=torch.long)[y]
        hebb = hebbian_update(head.hebb, h, units, head.eta)
        loss = F.cross_entropy(select_outputs(head(h, hebb), classes), y)
        loss.backward()
        penalty = self.penalty_backward()
        self.optimizer.step()
        with torch.no_grad():
            head.hebb.copy_(hebb.detach())
        return {"loss": float(loss.detach()), "penalty": penalty, "eta": float(head.eta.detach())}

    def end_experience(
        self, x: Tensor, y: Tensor, generator: torch.Generator, classes: Sequence[int] | Tensor | None = None
    ) -> None:
        """EWC's Fisher and anchor when ``ewc_lambda > 0``; otherwise only counts the experience."""
        if self.lam > 0:
            super().end_experience(x, y, generator, classes)
        else:
            self.experiences_seen += 1
