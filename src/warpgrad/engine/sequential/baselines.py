"""The two baselines of the sequential protocol: :class:`Scratch` (``sgd``) and :class:`Pretrain`.

``Scratch`` trains the whole randomly initialised OML architecture online at meta-test
(:func:`online_network_meta_test`); ``Pretrain`` trains it by ordinary supervised learning on the
meta-training samples, then meta-tests a reset head on its frozen features like OML.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from warpgrad.core.optim import sgd
from warpgrad.core.unroll import unroll
from warpgrad.engine.threads import torch_threads
from warpgrad.errors import UsageError
from warpgrad.functional import Params, functional_apply
from warpgrad.methods.base import check_no_running_statistics
from warpgrad.methods.continual.oml import Loss, TrajectoryMetaLearner, reset_head

# ------------------------------------------------------------------------------ baselines


class _Classifier(nn.Module):
    """``head(rln(x))``: the OML architecture as one module (parameter names ``rln.*``/``head.*``)."""

    def __init__(self, rln: nn.Module, head: nn.Module):
        super().__init__()
        self.rln, self.head = rln, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.rln(x))


@torch.no_grad()
def online_network_meta_test(
    model: nn.Module,
    params: Params,
    stream_x_per_class: Sequence[Tensor],
    lr: float,
    eval_x_per_class: Sequence[Tensor] | None = None,
    labels: Sequence[int] | None = None,
    loss_fn: Loss = F.cross_entropy,
    after_class: Callable[[int, Params], None] | None = None,
) -> dict[str, Any]:
    """Like :func:`~warpgrad.methods.continual.oml.continual_meta_test`, but every parameter of
    ``model`` (from ``params``) is trained: one SGD step per image, one pass, class after class.
    Same result: ``accuracy`` (after each class, over the evaluation images of all classes seen)
    and ``per_class``. ``after_class(c, params)``, when given, is called after class ``c`` with
    the network's current parameters (e.g. to probe)."""
    if not stream_x_per_class:
        raise UsageError("meta-test needs at least one class")
    evals = stream_x_per_class if eval_x_per_class is None else eval_x_per_class
    if len(evals) != len(stream_x_per_class):
        raise UsageError(f"{len(evals)} evaluation classes for {len(stream_x_per_class)} stream classes")
    labels = list(range(len(stream_x_per_class))) if labels is None else list(labels)
    params = {k: v.detach().clone() for k, v in params.items()}

    def loss(p: Params, example: tuple[Tensor, Tensor]) -> Tensor:
        return loss_fn(functional_apply(model, p, example[0]), example[1])

    accuracy, per_class = [], []
    for c, x in enumerate(stream_x_per_class):
        y = torch.tensor([labels[c]])
        examples = ((x[i : i + 1], y) for i in range(x.shape[0]))
        params, _ = unroll(loss, params, sgd(lr), examples, differentiable=True)
        if after_class is not None:
            after_class(c, params)
        seen = torch.cat(list(evals[: c + 1]))
        predicted = functional_apply(model, params, seen).argmax(-1)
        correct = predicted == torch.cat([torch.full((e.shape[0],), labels[j]) for j, e in enumerate(evals[: c + 1])])
        correct = correct.to(torch.get_default_dtype())
        per_class.append(torch.stack([v.mean() for v in torch.split(correct, [e.shape[0] for e in evals[: c + 1]])]))
        accuracy.append(correct.mean())
    return {"accuracy": torch.stack(accuracy), "per_class": per_class}


class Scratch:
    """The ``sgd`` baseline (the papers' "scratch"): a randomly initialised network of OML's
    architecture (representation ``rln`` and linear ``head``), no meta-training; at meta-test the
    head is reset like the other methods' and the *whole* network is trained online, one SGD step
    per image (:func:`online_network_meta_test`). Every meta-test starts from the same random
    initialisation (the one built with the run seed)."""

    name = "sgd"
    meta_trains = False

    def __init__(self, rln: nn.Module, head: nn.Module, lr: float = 0.01, loss_fn: Loss = F.cross_entropy):
        self.model = _Classifier(rln, head)
        check_no_running_statistics(self.model)
        self.head, self.inner_lr, self.loss_fn = head, lr, loss_fn

    def meta_step(self, *batch: Tensor) -> dict[str, float]:
        """Nothing to learn before the meta-test: the baseline has no meta-training."""
        return {}

    def meta_test(
        self,
        stream_x_per_class: Sequence[Tensor],
        eval_x_per_class: Sequence[Tensor] | None = None,
        *,
        labels: Sequence[int] | None = None,
        head_reset: str = "zeros",
        lr: float | None = None,
        after_class: Callable[[int, Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]], None] | None = None,
    ) -> dict[str, Any]:
        """The whole network trained online (:func:`online_network_meta_test`) from the seeded
        initialisation with the head reset. ``after_class(c, represent, head)``, when given, is
        called after class ``c`` with the current body (images ↦ the head's input) and head
        (that input ↦ logits), as :mod:`warpgrad.engine.sequential.probes` expects."""
        params = {f"rln.{k}": v.detach() for k, v in self.model.rln.named_parameters()}
        params.update({f"head.{k}": v for k, v in reset_head(self.head, head_reset).items()})
        hook = None
        if after_class is not None:

            def hook(c: int, p: Params) -> None:
                part = {
                    name: {k[len(name) + 1 :]: v for k, v in p.items() if k.startswith(f"{name}.")}
                    for name in ("rln", "head")
                }
                after_class(
                    c,
                    lambda x: functional_apply(self.model.rln, part["rln"], x),
                    lambda f: functional_apply(self.model.head, part["head"], f),
                )

        with torch_threads(1):  # one-image steps gain nothing from more threads and lose much on a busy machine
            return online_network_meta_test(
                self.model,
                params,
                stream_x_per_class,
                self.inner_lr if lr is None else lr,
                eval_x_per_class,
                labels,
                self.loss_fn,
                hook,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])


class Pretrain(TrajectoryMetaLearner):
    """The ``pretrain`` baseline: OML's architecture trained by ordinary supervised learning.

    Each :meth:`meta_step` is one optimiser step (Adam by default) on the cross-entropy of the
    whole network on the meta-training sample's trajectory and remember images pooled into one
    mini-batch — the same images, and as many steps, as the meta-learners get. At meta-test the
    representation is frozen and the head reset and trained online, like OML.
    """

    name = "pretrain"

    def __init__(
        self,
        rln: nn.Module,
        head: nn.Module,
        lr: float = 1e-3,
        *,
        test_lr: float = 0.01,
        optimizer: str = "adam",
        loss_fn: Loss = F.cross_entropy,
    ):
        self.model = _Classifier(rln, head)
        check_no_running_statistics(self.model)
        self.rln, self.head, self.inner_lr, self.loss_fn = rln, head, test_lr, loss_fn
        self.init_shell(optimizer, lr)

    def meta_parameters(self) -> list[Tensor]:
        return list(self.model.parameters())

    def meta_loss(self, trajectory_x: Tensor, trajectory_y: Tensor, remember_x: Tensor, remember_y: Tensor) -> Tensor:
        x = torch.cat([trajectory_x, remember_x])
        return self.loss_fn(self.model(x), torch.cat([trajectory_y, remember_y]))

    def frozen_features(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.rln(x)
