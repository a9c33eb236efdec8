"""OML: meta-learning a representation for online continual learning (Javed & White, 2019).

The network is split into a representation network (RLN) f_ψ, meta-learned and fixed in the
inner loop, and a prediction network (PLN, here a head g_W, linear by default). A meta-training
sample is a *trajectory* (x_1, y_1), …, (x_T, y_T) of images from one class (or a short run of
classes) and a *remember* batch (X_r, Y_r) of images from other classes. The inner loop is
sequential SGD on the head only, one image at a time (batch size 1):

    W_0 = W (the meta-learned initial head),    W_i = W_{i-1} − α ∇_W ℓ(g_{W_{i-1}}(f_ψ(x_i)), y_i),

and the meta-loss is the loss of the head after the trajectory on the trajectory images plus
the remember batch:

    L(ψ, W) = ℓ(g_{W_T}(f_ψ([x_{1..T}; X_r])), [y_{1..T}; Y_r]).

The meta-gradient w.r.t. ψ *and* W is second order through the sequential inner loop (the inner
gradients come from ``torch.func.grad`` and stay differentiable; ``first_order=True`` treats them
as constants). The RLN is applied to the trajectory in one batched pass: identical to one image
at a time when the RLN has no batch-dependent layer (the defaults have none).

Meta-test (:func:`continual_meta_test`): freeze the RLN, reset the head, and train it with one
SGD step per image in a single pass over the classes one after another; after each class report
the accuracy on all classes seen so far.

Example:
    >>> rln, width = conv_representation(widths=(8, 8, 8))
    >>> oml = OML(rln, nn.Linear(width, 5), inner_lr=0.03, meta_lr=1e-3)
    >>> metrics = oml.meta_step(tx, ty, rx, ry)            # doctest: +SKIP
    >>> curve = oml.meta_test(stream_x_per_class)["accuracy"]  # doctest: +SKIP

References:
    Javed, White. Meta-Learning Representations for Continual Learning. NeurIPS 2019.
    arXiv:1905.12588.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from warpgrad.core.optim import sgd
from warpgrad.core.shell import MetaShell
from warpgrad.core.unroll import unroll
from warpgrad.errors import UsageError
from warpgrad.functional import Params, functional_apply
from warpgrad.layers import BatchNorm
from warpgrad.methods.base import check_no_running_statistics

Loss = Callable[[Tensor, Tensor], Tensor]

__all__ = ["OML", "conv_representation", "sequential_sgd", "continual_meta_test", "HEAD_RESETS"]

HEAD_RESETS = ("zeros", "meta")


def conv_representation(
    in_channels: int = 1, widths: Sequence[int] = (64, 64, 64), image_size: int = 28, norm: bool = False
) -> tuple[nn.Module, int]:
    """A small conv stack for ``[N, in_channels, image_size, image_size]`` images, flattened.

    Each layer is conv 3×3 (stride 2, padding 1) → [:class:`warpgrad.layers.BatchNorm`] → ReLU;
    28×28 inputs with three layers give 4×4 maps. Returns the module and its output width.
    ``norm=True`` makes features depend on the batch (see the module docstring).
    """
    if not widths or any(int(w) < 1 for w in widths):
        raise UsageError(f"widths must be a non-empty sequence of positive ints, got {widths!r}")
    layers: list[nn.Module] = []
    channels, size = in_channels, image_size
    for width in widths:
        layers.append(nn.Conv2d(channels, width, 3, stride=2, padding=1))
        if norm:
            layers.append(BatchNorm(width))
        layers.append(nn.ReLU())
        channels, size = width, (size + 1) // 2
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), channels * size * size


def sequential_sgd(
    loss_at: Callable[[Params, int], Tensor], fast: Params, steps: int, lr: float, first_order: bool = False
) -> Params:
    """``steps`` differentiable SGD steps θ ← θ − lr ∇ loss_at(θ, i), i = 0 … steps−1.

    The gradient is taken with ``torch.func.grad``, so the result stays differentiable w.r.t.
    ``fast`` and any tensor ``loss_at`` closes over (second order); ``first_order`` detaches it.
    """
    fast, _ = unroll(loss_at, fast, sgd(lr), range(steps), differentiable=True, first_order=first_order)
    return fast


@torch.no_grad()
def continual_meta_test(
    features: Callable[[Tensor], Tensor],
    head: nn.Module,
    head_params: Params,
    stream_x_per_class: Sequence[Tensor],
    lr: float,
    eval_x_per_class: Sequence[Tensor] | None = None,
    labels: Sequence[int] | None = None,
    loss_fn: Loss = F.cross_entropy,
    after_class: Callable[[int, Params], None] | None = None,
) -> dict[str, Any]:
    """Train ``head`` online (one SGD step per image, one pass, class after class) on frozen features.

    Args:
        features: x ↦ frozen representation (called without gradient).
        head: the head module; applied functionally with the evolving parameters.
        head_params: its parameters after the reset.
        stream_x_per_class: images of class c (label ``labels[c]``, default c) in stream order.
        lr: the head's SGD learning rate.
        eval_x_per_class: images to evaluate on per class (default: the stream itself, i.e. the
            papers' "train accuracy"; pass held-out images for test accuracy).
        after_class: called after class c with ``(c, head parameters)`` (e.g. to probe).

    Returns:
        ``accuracy``: tensor ``[n_classes]``, entry c = accuracy over all evaluation images of
        classes 0..c after training on class c; ``per_class``: list whose entry c is a tensor of
        the c+1 per-class accuracies at that point.
    """
    if not stream_x_per_class:
        raise UsageError("meta-test needs at least one class")
    evals = stream_x_per_class if eval_x_per_class is None else eval_x_per_class
    if len(evals) != len(stream_x_per_class):
        raise UsageError(f"{len(evals)} evaluation classes for {len(stream_x_per_class)} stream classes")
    labels = list(range(len(stream_x_per_class))) if labels is None else list(labels)
    params = {k: v.detach().clone() for k, v in head_params.items()}
    eval_features = [features(x) for x in evals]

    def loss(p: Params, example: tuple[Tensor, Tensor]) -> Tensor:
        return loss_fn(functional_apply(head, p, example[0]), example[1])

    accuracy, per_class = [], []
    for c, x in enumerate(stream_x_per_class):
        feats = features(x)
        y = torch.tensor([labels[c]], device=feats.device)
        examples = ((feats[i : i + 1], y) for i in range(feats.shape[0]))
        params, _ = unroll(loss, params, sgd(lr), examples, differentiable=True)
        if after_class is not None:
            after_class(c, params)
        correct = [
            (functional_apply(head, params, f).argmax(-1) == labels[j]).to(f.dtype)
            for j, f in enumerate(eval_features[: c + 1])
        ]
        per_class.append(torch.stack([v.mean() for v in correct]))
        accuracy.append(torch.cat(correct).mean())
    return {"accuracy": torch.stack(accuracy), "per_class": per_class}


def reset_head(head: nn.Module, how: str) -> Params:
    """The head's parameters for meta-test: ``zeros`` or ``meta`` (the meta-learned initial head)."""
    if how not in HEAD_RESETS:
        raise UsageError(f"unknown head reset {how!r}; allowed: {', '.join(HEAD_RESETS)}")
    params = {k: v.detach().clone() for k, v in head.named_parameters()}
    if how == "zeros":
        params = {k: torch.zeros_like(v) for k, v in params.items()}
    return params


class TrajectoryMetaLearner:
    """What OML, ANML and the pre-training baseline share: ``meta_loss`` on one (trajectory,
    remember) sample is differentiated w.r.t. ``meta_parameters()``; a
    :class:`~warpgrad.core.shell.MetaShell` (built by :meth:`init_shell`) applies the gradient
    and holds the checkpoint state."""

    model: nn.Module
    head: nn.Module
    shell: MetaShell
    inner_lr: float
    loss_fn: Loss

    def init_shell(self, meta_optimizer: str, meta_lr: float) -> None:
        """The meta-shell over ``self.model``, with one group of :meth:`meta_parameters`."""
        self.shell = MetaShell(self.model)
        self.shell.add_group("meta", {str(i): p for i, p in enumerate(self.meta_parameters())}, meta_optimizer, meta_lr)

    @property
    def meta_optimizer(self) -> torch.optim.Optimizer:
        return self.shell.optimizer("meta")

    def meta_parameters(self) -> list[Tensor]:
        raise NotImplementedError

    def meta_loss(self, trajectory_x: Tensor, trajectory_y: Tensor, remember_x: Tensor, remember_y: Tensor) -> Tensor:
        raise NotImplementedError

    def meta_gradient(self, *batch: Tensor) -> tuple[list[Tensor], Tensor]:
        """Gradients of :meth:`meta_loss` w.r.t. :meth:`meta_parameters` (in that order), and the loss."""
        params = self.meta_parameters()
        with torch.enable_grad():
            loss = self.meta_loss(*batch)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)], loss.detach()

    def meta_step(
        self, trajectory_x: Tensor, trajectory_y: Tensor, remember_x: Tensor, remember_y: Tensor
    ) -> dict[str, float]:
        """One meta-update (Adam by default) on one (trajectory, remember) sample."""
        grads, loss = self.meta_gradient(trajectory_x, trajectory_y, remember_x, remember_y)
        self.shell.apply("meta", grads)
        return {"meta_loss": float(loss)}

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
        """Meta-test protocol: the representation (``frozen_features``: OML's RLN; ANML's NM network
        and body) frozen; head reset (``zeros`` default, or ``meta``: the learned initial head) and
        trained one SGD step (``lr``, default ``inner_lr``) per image in one pass over the classes in
        order. See :func:`continual_meta_test` for the result. ``after_class(c, represent, head)``,
        when given, is called after class ``c`` with ``frozen_features`` and the current head
        (features ↦ logits), as :mod:`warpgrad.engine.sequential.probes` expects."""
        hook = None
        if after_class is not None:
            hook = lambda c, p: after_class(c, self.frozen_features, lambda f: functional_apply(self.head, p, f))  # noqa: E731
        return continual_meta_test(
            self.frozen_features,
            self.head,
            reset_head(self.head, head_reset),
            stream_x_per_class,
            self.inner_lr if lr is None else lr,
            eval_x_per_class,
            labels,
            self.loss_fn,
            hook,
        )

    def frozen_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return self.shell.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shell.load_state_dict(state)


class OML(TrajectoryMetaLearner):
    """OML meta-learner: meta-learns the RLN and the initial head through sequential head SGD.

    Args:
        rln: representation network x ↦ features (meta-learned, frozen in the inner loop).
        head: prediction network on the features (``nn.Linear`` in the paper).
        inner_lr: α, the head's SGD learning rate (inner loop and meta-test).
        meta_lr: Adam (or ``meta_optimizer``) learning rate.
        first_order: treat the inner gradients as constants.
        learn_head_init: meta-learn the initial head too (default True).
        loss_fn: classification loss on logits (cross-entropy).
    """

    name = "oml"
    resets_class_row = True  # meta-training zeroes the trajectory class's head row first (both papers' code)

    def __init__(
        self,
        rln: nn.Module,
        head: nn.Module,
        inner_lr: float = 0.03,
        meta_lr: float = 1e-4,
        *,
        first_order: bool = False,
        learn_head_init: bool = True,
        meta_optimizer: str = "adam",
        loss_fn: Loss = F.cross_entropy,
    ):
        if inner_lr <= 0:
            raise UsageError(f"inner_lr must be > 0, got {inner_lr!r}")
        self.model = nn.ModuleDict({"rln": rln, "head": head})
        check_no_running_statistics(self.model)
        self.rln, self.head = rln, head
        self.inner_lr, self.first_order, self.learn_head_init = inner_lr, first_order, learn_head_init
        self.loss_fn = loss_fn
        self.init_shell(meta_optimizer, meta_lr)

    def meta_parameters(self) -> list[Tensor]:
        """ψ (RLN) and, with ``learn_head_init``, the initial head W."""
        params = list(self.rln.parameters())
        return params + list(self.head.parameters()) if self.learn_head_init else params

    def features(self, x: Tensor, rln_params: Params | None = None) -> Tensor:
        return functional_apply(self.rln, dict(self.rln.named_parameters()) if rln_params is None else rln_params, x)

    def meta_loss(self, trajectory_x: Tensor, trajectory_y: Tensor, remember_x: Tensor, remember_y: Tensor) -> Tensor:
        """ℓ of the head after sequential SGD over the trajectory, on trajectory + remember images."""
        x = torch.cat([trajectory_x, remember_x])
        y = torch.cat([trajectory_y, remember_y])
        feats = self.features(x)
        traj = feats[: trajectory_x.shape[0]]
        head0 = dict(self.head.named_parameters())
        if not self.learn_head_init:
            head0 = {k: v.detach() for k, v in head0.items()}

        def loss_at(p: Params, i: int) -> Tensor:
            return self.loss_fn(functional_apply(self.head, p, traj[i : i + 1]), trajectory_y[i : i + 1])

        head_t = sequential_sgd(loss_at, head0, trajectory_x.shape[0], self.inner_lr, self.first_order)
        return self.loss_fn(functional_apply(self.head, head_t, feats), y)

    def frozen_features(self, x: Tensor) -> Tensor:
        """The representation used at meta-test (no gradient)."""
        with torch.no_grad():
            return self.features(x)

    # ---------------------------------------------------------------- checkpoints
