"""T copies of a model run at once on stacked parameters: what ``vmap(functional_call)`` computes,
op for op, without functorch's per-operation dispatch.

``vmap`` batches any model, but on a small one it pays for every operation: wrapping, the batching
rule's Python, unwrapping (half of a lockstep step on one-image batches of Conv4-16). For the
layers this library's own models are built from, :func:`stacked_loss` writes the batching out: a
convolution with stacked weights is one grouped convolution over the tasks' channels, a linear
layer a batched matrix product, batch norm its own Function with one leading batch dim, pooling
and activations run on the tasks' images flattened together. Each rule issues the operations
torch's batching rule issues (a stacked convolution adds its bias after the grouped convolution,
as ``vmap`` does), so values and gradients are bit-identical to the ``vmap`` path (tested).

Any module without a rule here (a user's own layer) makes :func:`stacked_loss` return ``None``,
and the caller vmaps as before. The task's loss on the predictions still runs under ``vmap``: it
is a few operations on small tensors, and any loss a task defines works.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from warpgrad.core.batchnorm import _BatchNorm
from warpgrad.core.pooling import max_pool
from warpgrad.core.tree import Params
from warpgrad.layers import MLP, BatchNorm, Conv4, Residual, Warp, pool_before_relu

__all__ = ["stacked_loss", "stacked_forward", "supports"]

_ACTIVATIONS: dict[type[nn.Module], Callable[[nn.Module, Tensor], Tensor]] = {
    nn.ReLU: lambda m, h: torch.relu(h),
    nn.Tanh: lambda m, h: torch.tanh(h),
    nn.Sigmoid: lambda m, h: torch.sigmoid(h),
    nn.LeakyReLU: lambda m, h: F.leaky_relu(h, m.negative_slope),
    nn.Identity: lambda m, h: h,
}


class _Parameters:
    """A model's parameters by name: stacked ``[T, ...]`` (``theta``) or shared (``frozen``, else the
    module's own)."""

    def __init__(self, theta: Params, frozen: Params, count: int):
        self.theta, self.frozen, self.count = theta, frozen, count

    def get(self, module: nn.Module, prefix: str, name: str) -> tuple[Tensor | None, bool]:
        key = prefix + name
        if key in self.theta:
            return self.theta[key], True
        return self.frozen.get(key, getattr(module, name)), False


def _flat(h: Tensor, run: Callable[[Tensor], Tensor], any_order: bool = False) -> Tensor:
    """``run`` on ``h`` ``[T, N, ...]`` with T and N flattened into one batch dim. ``any_order``:
    ``run`` treats each image on its own (no shared weight sums over them), so the images may be
    flattened in the order that needs no copy (N-major after a stacked convolution), bit for bit."""
    if any_order and not h.is_contiguous() and h.transpose(0, 1).is_contiguous():
        out = run(h.transpose(0, 1).flatten(0, 1))
        return out.view(h.shape[1], h.shape[0], *out.shape[1:]).transpose(0, 1)
    out = run(h.flatten(0, 1))
    return out.view(*h.shape[:2], *out.shape[1:])


def _conv2d(m: nn.Conv2d, p: _Parameters, prefix: str, h: Tensor) -> Tensor:
    weight, stacked_w = p.get(m, prefix, "weight")
    bias, stacked_b = p.get(m, prefix, "bias")
    conv = (m.stride, m.padding, m.dilation)
    if not stacked_w and not stacked_b:
        return _flat(h, lambda x: F.conv2d(x, weight, bias, *conv, m.groups))
    if not stacked_w:
        weight = weight.expand(p.count, *weight.shape)
    count, n = h.shape[:2]
    grouped = h.movedim(0, 1).reshape(n, count * h.shape[2], *h.shape[3:])
    out = F.conv2d(grouped, weight.flatten(0, 1), None, *conv, count * m.groups)
    out = out.view(n, count, -1, *out.shape[2:]).movedim(1, 0)
    if bias is None:
        return out
    return out + (bias.view(count, 1, -1, 1, 1) if stacked_b else bias.view(-1, 1, 1))


def _linear(m: nn.Linear, p: _Parameters, prefix: str, h: Tensor) -> Tensor:
    weight, stacked_w = p.get(m, prefix, "weight")
    bias, stacked_b = p.get(m, prefix, "bias")
    if not stacked_w and not stacked_b:
        return F.linear(h, weight, bias)
    if not stacked_w:
        weight = weight.expand(p.count, *weight.shape)
    out = torch.matmul(h, weight.transpose(-1, -2))
    if bias is None:
        return out
    return out + (bias.view(p.count, *(1,) * (h.dim() - 2), -1) if stacked_b else bias)


def _batch_norm(m: BatchNorm, p: _Parameters, prefix: str, h: Tensor) -> Tensor:
    channels = (p.count, m.num_features)
    if m.affine:
        (weight, stacked_w), (bias, stacked_b) = p.get(m, prefix, "weight"), p.get(m, prefix, "bias")
        weight = weight if stacked_w else weight.expand(channels)
        bias = bias if stacked_b else bias.expand(channels)
    else:
        weight, bias = h.new_ones(channels), h.new_zeros(channels)
    return _BatchNorm.apply(h, weight, bias, m.eps, 1)[0]


def _max_pool2d(m: nn.MaxPool2d, p: _Parameters, prefix: str, h: Tensor) -> Tensor:
    return _flat(h, lambda x: max_pool(m, x), any_order=True)


def _sequential(m: nn.Sequential, p: _Parameters, prefix: str, h: Tensor) -> Tensor:
    return pool_before_relu(m, h, lambda name, child, h: _forward(child, p, f"{prefix}{name}.", h))


def _residual(m: Residual, p: _Parameters, prefix: str, h: Tensor) -> Tensor:
    branch = _forward(m.module, p, prefix + "module.", h)
    if m.gate is None:
        return h + branch
    gate, stacked = p.get(m, prefix, "gate")
    return h + (gate.view(p.count, *(1,) * (h.dim() - 1)) if stacked else gate) * branch


def _conv4(m: Conv4, p: _Parameters, prefix: str, h: Tensor) -> Tensor:
    features = _forward(m.features, p, prefix + "features.", h)
    return _linear(m.classifier, p, prefix + "classifier.", features.flatten(2))


_RULES: dict[type[nn.Module], Callable[[Any, _Parameters, str, Tensor], Tensor]] = {
    nn.Conv2d: _conv2d,
    nn.Linear: _linear,
    BatchNorm: _batch_norm,
    nn.MaxPool2d: _max_pool2d,
    nn.Sequential: _sequential,
    Warp: lambda m, p, prefix, h: _forward(m.module, p, prefix + "module.", h),
    Residual: _residual,
    MLP: lambda m, p, prefix, h: _forward(m.layers, p, prefix + "layers.", h),
    Conv4: _conv4,
}


def _forward(module: nn.Module, p: _Parameters, prefix: str, h: Tensor) -> Tensor:
    kind = type(module)
    if kind in _ACTIVATIONS:
        return _ACTIVATIONS[kind](module, h)
    return _RULES[kind](module, p, prefix, h)


def _supported(module: nn.Module) -> bool:
    kind = type(module)
    if module._forward_hooks or module._forward_pre_hooks:  # the stacked rules do not call modules
        return False
    if kind in _ACTIVATIONS or kind is BatchNorm:
        return True
    if kind is nn.MaxPool2d:
        return not module.return_indices
    if kind is nn.Conv2d:
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    return kind in _RULES and all(_supported(child) for child in module.children())


def supports(model: nn.Module) -> bool:
    """Whether every module of ``model`` has a stacked rule here (exact types: a subclass may
    compute something else) and none has forward hooks (they would not run)."""
    return _supported(model)


def stacked_forward(model: nn.Module, theta: Params, frozen: Params, x: Tensor) -> Tensor:
    """``vmap(lambda θ, x: functional_call(model, θ ∪ frozen, x))(theta, x)`` for a supported model:
    ``theta`` stacked ``[T, ...]``, ``frozen`` shared, ``x`` ``[T, N, ...]``."""
    return _forward(model, _Parameters(theta, frozen, x.shape[0]), "", x)


def _autocasting() -> bool:
    try:
        return any(torch.is_autocast_enabled(device) for device in ("cpu", "cuda"))
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


def stacked_loss(model: nn.Module, task: Any, frozen: Params) -> Callable[[Params, Any], Tensor] | None:
    """``(θ [T, ...], (x, y) [T, ...]) -> [T]`` losses, the forward pass stacked and ``task.loss``
    vmapped over the predictions; ``None`` when the model has a module without a stacked rule, the
    task defines its own objective, or autocast is on (under autocast, torch's batching rules cast
    in another order, so the stacked ops would round differently): then vmap the whole scored loss."""
    if callable(getattr(task, "objective", None)) or not supports(model) or _autocasting():
        return None
    per_task = torch.func.vmap(task.loss)
    frozen = dict(frozen)

    def loss(theta: Params, batch: Any) -> Tensor:
        return per_task(stacked_forward(model, theta, frozen, batch[0]), batch[1])

    return loss
