"""Batch normalisation with batch statistics as two autograd Functions: fast, exact under vmap, precise.

:func:`batch_norm` computes what ``torch.nn.functional.batch_norm(x, None, None, weight, bias,
training=True)`` computes. It exists because second-order meta-gradients through batch norm (MAML
through Conv4) are dominated by batch norm's double backward, and because PyTorch's batching rule
for that double backward is wrong under ``vmap`` (pytorch/functorch#534):

* ``_BatchNorm``: the forward; its backward is ``_BatchNormBackward``, itself an autograd Function.
* ``_BatchNormBackward``: the first-order gradients ``(dx, dw, db)`` in closed form; its own
  backward is the closed-form double backward (about ten full-size tensor operations, fewer than
  autograd runs through torch's composite double backward or through elementwise batch norm).

Both take ``lead``, the number of leading batch dims of ``x`` ``[*B, N, C, ...]`` (each index of B
its own batch norm). Their ``vmap`` rules move the vmapped dim first and call themselves with one
more leading dim: plain tensor operations, the same values as batching them op by op
(``generate_vmap_rule``), without its per-call Python (half the time of a small vmapped step).

Precision: the statistics use the corrected two-pass algorithm (mean, then the mean of the
centred values folded back in: Chan, Golub, LeVeque 1983), so float32 keeps its accuracy when a
channel's mean is large against its spread, where subtracting a float32 mean loses digits (and
torch's own kernel, which folds the mean into a per-channel shift, loses them too); gradients are
projected elementwise (:func:`_project`), not as differences of sums.

A third derivative needs the saved statistics to be differentiable: when the double backward is
itself recorded (grad mode on inside it), it recomputes them from ``x`` with differentiable
operations, so every order is exact; the fast path only runs when nothing differentiates it.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["batch_norm"]


def _layout(x: Tensor, lead: int = 0) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """For ``x`` ``[*B, N, C, ...]`` with ``lead`` = len(B) batch dims (each its own batch norm):
    the reduced dims (N and the trailing ones), the shape that broadcasts a ``[*B, C]`` vector, and
    the elements per channel."""
    dims = (lead, *range(lead + 2, x.dim()))
    shape = (*x.shape[:lead], 1, x.shape[lead + 1]) + (1,) * (x.dim() - lead - 2)
    return dims, shape, math.prod(x.shape[lead:]) // x.shape[lead + 1]


def _normalise(x: Tensor, eps: float, lead: int = 0) -> tuple[Tensor, Tensor]:
    """``(x̂, 1/σ)``: x standardised per channel with the biased variance, by the corrected two-pass algorithm."""
    dims, _, _ = _layout(x, lead)
    centred = x - x.mean(dims, keepdim=True)
    residual = centred.mean(dims, keepdim=True)  # the rounding error of the first mean, recovered
    invstd = torch.rsqrt((centred * centred).mean(dims, keepdim=True) - residual * residual + eps)
    return (centred - residual) * invstd, invstd


def _batch_first(info: Any, in_dims: tuple[int | None, ...], *tensors: Tensor) -> list[Tensor]:
    """``tensors`` under ``vmap`` with the vmapped dim moved first (broadcast where one has none)."""
    return [
        t if d == 0 else t.expand(info.batch_size, *t.shape) if d is None else t.movedim(d, 0)
        for t, d in zip(tensors, in_dims)
    ]


class _BatchNorm(torch.autograd.Function):
    """``(x, w, b) ↦ (y, x̂, 1/σ)`` for ``x`` ``[*B, N, C, ...]`` with ``lead`` = len(B) batch dims.
    Under ``vmap`` it calls itself with one more explicit batch dim (plain tensors, no vmap)."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor, eps: float, lead: int) -> tuple[Tensor, Tensor, Tensor]:
        _, shape, _ = _layout(x, lead)
        xhat, invstd = _normalise(x, eps, lead)
        return xhat * weight.view(shape) + bias.view(shape), xhat, invstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _, eps, lead = inputs
        _, xhat, invstd = output
        ctx.mark_non_differentiable(xhat, invstd)
        ctx.set_materialize_grads(False)
        ctx.eps, ctx.lead = eps, lead
        ctx.save_for_backward(x, weight, xhat, invstd)

    @staticmethod
    def backward(ctx, grad_y, _grad_xhat, _grad_invstd):
        if grad_y is None:
            return None, None, None, None, None
        x, weight, xhat, invstd = ctx.saved_tensors
        dx, dw, db, _ = _BatchNormBackward.apply(grad_y, x, weight, xhat, invstd, ctx.eps, ctx.lead)
        return dx, dw, db, None, None

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, eps, lead):
        return _BatchNorm.apply(*_batch_first(info, in_dims, x, weight, bias), eps, lead + 1), (0, 0, 0)


def _project(t: Tensor, xhat: Tensor, lead: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(t − mean(t) − x̂ mean(t x̂), mean(t), mean(t x̂))`` per channel: t without its components
    along 1 and x̂, formed elementwise so that a large component cancels element by element rather
    than in a difference of sums."""
    dims, _, _ = _layout(t, lead)
    t_mean = t.mean(dims, keepdim=True)
    centred = t - t_mean
    t_xhat = (centred * xhat).mean(dims, keepdim=True)
    return torch.addcmul(centred, xhat, -t_xhat), t_mean, t_xhat


class _BatchNormBackward(torch.autograd.Function):
    """``(g, x, w) ↦ (dx, dw, db)``, with x̂ and 1/σ passed in (computed from x by the forward).

    With s = w/σ, ḡ = mean(g), q = mean(g x̂) (per channel) and M elements per channel:
    dx = s (g − ḡ − x̂ q),  dw = M q,  db = M ḡ. The fourth output, g − ḡ − x̂ q, is kept for the
    double backward.
    """

    @staticmethod
    def forward(g: Tensor, x: Tensor, weight: Tensor, xhat: Tensor, invstd: Tensor, eps: float, lead: int):
        _, shape, count = _layout(g, lead)
        centred, g_mean, q = _project(g, xhat, lead)
        dx = centred * (weight.view(shape) * invstd)
        return dx, (q * count).reshape(weight.shape), (g_mean * count).reshape(weight.shape), centred

    @staticmethod
    def setup_context(ctx, inputs, output):
        g, x, weight, xhat, invstd, eps, lead = inputs
        _, dw, _, centred = output
        ctx.mark_non_differentiable(centred)
        ctx.set_materialize_grads(False)
        ctx.eps, ctx.lead = eps, lead
        ctx.save_for_backward(g, x, weight, xhat, invstd, dw, centred)

    @staticmethod
    def backward(ctx, a, alpha, beta, _grad_centred):
        g, x, weight, xhat, invstd, dw, centred = ctx.saved_tensors
        lead = ctx.lead
        _, shape, count = _layout(g, lead)
        if torch.is_grad_enabled():  # the double backward is being differentiated: all from x and g
            xhat, invstd = _normalise(x, ctx.eps, lead)
            centred, _, q = _project(g, xhat, lead)
        else:
            q = dw.view(shape) / count
        grads = _double_backward(centred, q, weight, xhat, invstd, a, alpha, beta, lead, ctx.needs_input_grad[:3])
        return (*grads, None, None, None, None)

    @staticmethod
    def vmap(info, in_dims, g, x, weight, xhat, invstd, eps, lead):
        tensors = _batch_first(info, in_dims, g, x, weight, xhat, invstd)
        return _BatchNormBackward.apply(*tensors, eps, lead + 1), (0, 0, 0, 0)


def _double_backward(
    centred: Tensor,
    q: Tensor,
    weight: Tensor,
    xhat: Tensor,
    invstd: Tensor,
    a: Tensor | None,
    alpha: Tensor | None,
    beta: Tensor | None,
    lead: int,
    needed: tuple[bool, bool, bool] = (True, True, True),
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients w.r.t. ``(g, x, w)`` of ⟨a, dx⟩ + ⟨α, dw⟩ + ⟨β, db⟩ (``None``: zero), each only
    where ``needed`` (else ``None``: in WarpGrad's objective the first layer's input is a constant,
    and its gradient would be the largest tensors' work).

    With r = 1/σ, s = w r, q = mean(g x̂), g_c = g − ḡ − x̂ q (``centred``), a_c = a − ā − x̂ m with
    m = mean(a x̂), and R = mean(a g_c):
    ∂/∂g = s a_c + α x̂ + β;  ∂/∂w = M r R;  ∂/∂x = r (−s q a_c + (α − s m) g_c) − w R r² x̂.
    The last is r (G − mean(G) − x̂ mean(G x̂)) for G = −s q a + (α − s m) g, the explicit
    gradient w.r.t. x̂, plus r's own dependence on x (−w R r² x̂).
    """
    dims, shape, count = _layout(centred, lead)
    w = weight.view(shape)
    s = w * invstd
    alpha = torch.zeros_like(s) if alpha is None else alpha.view(shape)
    beta = torch.zeros_like(s) if beta is None else beta.view(shape)
    need_g, need_x, need_w = needed
    if a is None:
        grad_g = xhat * alpha + beta if need_g else None
        return grad_g, centred * (invstd * alpha) if need_x else None, torch.zeros_like(weight) if need_w else None
    a_centred, _, a_xhat = _project(a, xhat, lead)
    r_mean = (a * centred).mean(dims, keepdim=True) if need_x or need_w else None
    grad_g = torch.addcmul(a_centred * s, xhat, alpha) + beta if need_g else None
    grad_x = None
    if need_x:
        grad_x = torch.addcmul(a_centred * (-invstd * s * q), centred, invstd * (alpha - s * a_xhat))
        grad_x = torch.addcmul(grad_x, xhat, -w * r_mean * invstd * invstd)
    return grad_g, grad_x, (invstd * r_mean * count).reshape(weight.shape) if need_w else None


# Function.apply binds its arguments to forward's signature on every call; a stored signature
# spares inspect from rebuilding it (a fifth of these Functions' Python time).
for _function in (_BatchNorm, _BatchNormBackward):
    _function.forward.__signature__ = inspect.signature(_function.forward)


def batch_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5) -> Tensor:
    """Batch norm of ``x`` ``[N, C, ...]`` over every dim but 1, with batch statistics only.

    Under ``torch.compile`` it is the same statistics as plain differentiable operations, which
    the compiler fuses (and which it can trace under ``vmap``, where these Functions stop it).
    """
    channels = x.shape[1]
    if weight is None:
        weight = torch.ones(channels, dtype=x.dtype, device=x.device)
    if bias is None:
        bias = torch.zeros(channels, dtype=x.dtype, device=x.device)
    if _compiling():
        _, shape, _ = _layout(x)
        return _normalise(x, eps)[0] * weight.view(shape) + bias.view(shape)
    return _BatchNorm.apply(x, weight, bias, eps, 0)[0]


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return compiler.is_compiling()
    return torch._dynamo.is_compiling()  # torch < 2.3
