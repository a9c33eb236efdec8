"""The continual-learner protocol and plain fine-tuning (:class:`SGDLearner`).

A continual learner owns an ``nn.Module`` and a ``torch.optim`` optimiser and sees a stream of
*experiences* (one task's data each):

* ``train_experience(x, y, generator, epochs=1, batch_size=32, classes=None) -> metrics`` trains
  on one experience in shuffled minibatches drawn with ``generator``;
* ``end_experience(x, y, generator, classes=None)`` is called once after each experience (EWC
  computes its Fisher and moves its anchor there);
* ``predict(x, classes=None) -> logits``; ``state_dict()`` / ``load_state_dict()``.

``classes`` is the output mask of task-incremental learning (a multi-head network as one masked
head, van de Ven & Tolias 2019): when given, only the logits of those output units are used,
``logits[:, classes]``, and the labels ``y`` are positions in ``classes`` (as in a task-incremental
:func:`~warpgrad.tasks.continual.split_stream`, whose experiences carry ``classes``). ``None``
uses every output and labels are output indices.

Subclasses change one minibatch step through :meth:`ContinualLearner.penalty` (a regulariser on
the parameter dict; :meth:`ContinualLearner.penalty_backward` adds its gradient, by autograd here,
and may be overridden by a closed form, as EWC does) or by overriding
:meth:`ContinualLearner.train_step`.

Example:
    >>> learner = SGDLearner(torch.nn.Linear(4, 3), lr=0.1)
    >>> metrics = learner.train_experience(x, y, torch.Generator().manual_seed(0))
    >>> learner.end_experience(x, y, torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from warpgrad.errors import UsageError
from warpgrad.functional import Params

__all__ = ["ContinualLearner", "SGDLearner", "OPTIMIZERS", "select_outputs"]

OPTIMIZERS = ("sgd", "adam")


def select_outputs(logits: Tensor, classes: Sequence[int] | Tensor | None) -> Tensor:
    """``logits[..., classes]`` (the output mask of task-incremental learning); ``logits`` if None.

    Raises:
        ValueError: naming the bad indices and the number of outputs, if ``classes`` is empty,
            repeats an index or names an output the model does not have.
    """
    if classes is None:
        return logits
    index = torch.as_tensor(classes, dtype=torch.long, device=logits.device).flatten()
    n = logits.shape[-1]
    if index.numel() == 0 or len(set(index.tolist())) != index.numel() or bool(((index < 0) | (index >= n)).any()):
        raise UsageError(f"classes must be distinct output indices in 0..{n - 1}, got {index.tolist()}")
    return logits.index_select(-1, index)


class ContinualLearner:
    """Base shell: a model, an optimiser and the minibatch loop.

    Args:
        model: the classifier (logits).
        lr: the learning rate.
        momentum: SGD's momentum (``optimizer="sgd"`` only).
        loss_fn: the task loss on (logits, labels).
        optimizer: ``"sgd"`` (``torch.optim.SGD``) or ``"adam"`` (``torch.optim.Adam``, default betas).
            Adam's per-parameter step sizes keep EWC's stiff penalty directions stable where plain
            SGD needs ``lr · λ · max F < 2``.
    """

    name = "continual"

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        momentum: float = 0.0,
        loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
        optimizer: str = "sgd",
    ) -> None:
        if lr <= 0:
            raise UsageError(f"lr must be positive, got {lr}")
        if optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
        if optimizer != "sgd" and momentum:
            raise UsageError(f"momentum={momentum} is for optimizer='sgd', not {optimizer!r}")
        self.model = model
        self.loss_fn = loss_fn
        if optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        else:
            self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.experiences_seen = 0

    # ------------------------------------------------------------------ hooks
    def penalty(self, params: Params) -> Tensor:
        """Regulariser added to the task loss (zero here)."""
        first = next(iter(params.values()))
        return first.new_zeros(())

    def penalty_backward(self) -> float:
        """Add ∇ penalty(θ) at the model's parameters to their ``.grad``; return the penalty's value."""
        penalty = self.penalty(dict(self.model.named_parameters()))
        if penalty.requires_grad:
            penalty.backward()
        return float(penalty.detach())

    def train_step(self, x: Tensor, y: Tensor, classes: Sequence[int] | Tensor | None = None) -> dict[str, float]:
        """One optimiser step on ``loss_fn(model(x)[:, classes], y) + penalty(params)``."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(select_outputs(self.model(x), classes), y)
        loss.backward()
        penalty = self.penalty_backward()
        self.optimizer.step()
        return {"loss": float(loss.detach()), "penalty": penalty}

    # ------------------------------------------------------------------ protocol
    def train_experience(
        self,
        x: Tensor,
        y: Tensor,
        generator: torch.Generator,
        epochs: int = 1,
        batch_size: int = 32,
        classes: Sequence[int] | Tensor | None = None,
    ) -> dict[str, float]:
        """Train ``epochs`` passes over ``(x, y)`` in minibatches shuffled by ``generator``
        (on the outputs ``classes`` only, when given; see the module docstring).

        Returns the mean (over steps) of each step metric plus ``steps``.
        """
        if epochs < 1 or batch_size < 1:
            raise UsageError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
        totals: dict[str, float] = {}
        steps = 0
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), batch_size):
                idx = order[start : start + batch_size]
                for k, v in self.train_step(x[idx], y[idx], classes).items():
                    totals[k] = totals.get(k, 0.0) + v
                steps += 1
        out = {k: v / steps for k, v in totals.items()}
        out["steps"] = float(steps)
        return out

    def end_experience(
        self, x: Tensor, y: Tensor, generator: torch.Generator, classes: Sequence[int] | Tensor | None = None
    ) -> None:
        """Called after each experience; counts experiences here."""
        self.experiences_seen += 1

    @torch.no_grad()
    def predict(self, x: Tensor, classes: Sequence[int] | Tensor | None = None) -> Tensor:
        """Logits of the current model (in eval mode), of the outputs ``classes`` when given."""
        self.model.eval()
        return select_outputs(self.model(x), classes)

    def extra_state(self) -> dict[str, Any]:
        """Method-specific state for checkpoints (none here)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "experiences_seen": self.experiences_seen,
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.experiences_seen = int(state["experiences_seen"])
        self.load_extra_state(state["extra"])


class SGDLearner(ContinualLearner):
    """Plain fine-tuning: the optimiser (SGD by default) on each experience in turn, no protection
    against forgetting."""

    name = "sgd"
