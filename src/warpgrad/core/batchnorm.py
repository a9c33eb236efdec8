"""Batch normalisation with batch statistics as two autograd Functions: fast, exact under vmap, precise.

:func:`batch_norm` computes what ``torch.nn.functional.batch_norm(x, None, None, weight, bias,
training=True)`` computes. It exists because second-order meta-gradients through batch norm (MAML
through Conv4) are dominated by batch norm's double backward, and because PyTorch's batching rule
for that double backward is wrong under ``vmap`` (pytorch/functorch#534):

* ``_BatchNorm``: the forward; its backward is ``_BatchNormBackward``, itself an autograd Function.
* ``_BatchNormBackward``: the first-order gradients ``(dx, dw, db)`` in closed form; its own
  backward is the closed-form double backward (about ten full-size tensor operations, fewer than
  autograd runs through torch's composite double backward or through elementwise batch norm).
  Both are plain tensor operations, so ``generate_vmap_rule`` batches them exactly.

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

import torch
from torch import Tensor

__all__ = ["batch_norm"]


def _layout(x: Tensor) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """Reduced dims (all but 1), the shape that broadcasts a per-channel vector, elements per channel."""
    dims = (0, *range(2, x.dim()))
    return dims, (1, -1) + (1,) * (x.dim() - 2), x.numel() // x.shape[1]


def _normalise(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``(x̂, 1/σ)``: x standardised per channel with the biased variance, by the corrected two-pass algorithm."""
    dims, _, _ = _layout(x)
    centred = x - x.mean(dims, keepdim=True)
    residual = centred.mean(dims, keepdim=True)  # the rounding error of the first mean, recovered
    invstd = torch.rsqrt((centred * centred).mean(dims, keepdim=True) - residual * residual + eps)
    return (centred - residual) * invstd, invstd


class _BatchNorm(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
        _, shape, _ = _layout(x)
        xhat, invstd = _normalise(x, eps)
        return xhat * weight.view(shape) + bias.view(shape), xhat, invstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _, eps = inputs
        _, xhat, invstd = output
        ctx.mark_non_differentiable(xhat, invstd)
        ctx.set_materialize_grads(False)
        ctx.eps = eps
        ctx.save_for_backward(x, weight, xhat, invstd)

    @staticmethod
    def backward(ctx, grad_y, _grad_xhat, _grad_invstd):
        if grad_y is None:
            return None, None, None, None
        x, weight, xhat, invstd = ctx.saved_tensors
        dx, dw, db, _ = _BatchNormBackward.apply(grad_y, x, weight, xhat, invstd, ctx.eps)
        return dx, dw, db, None


def _project(t: Tensor, xhat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(t − mean(t) − x̂ mean(t x̂), mean(t), mean(t x̂))`` per channel: t without its components
    along 1 and x̂, formed elementwise so that a large component cancels element by element rather
    than in a difference of sums."""
    dims, _, _ = _layout(t)
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

    generate_vmap_rule = True

    @staticmethod
    def forward(g: Tensor, x: Tensor, weight: Tensor, xhat: Tensor, invstd: Tensor, eps: float):
        _, shape, count = _layout(g)
        centred, g_mean, q = _project(g, xhat)
        dx = centred * (weight.view(shape) * invstd)
        return dx, (q * count).reshape(weight.shape), (g_mean * count).reshape(weight.shape), centred

    @staticmethod
    def setup_context(ctx, inputs, output):
        g, x, weight, xhat, invstd, eps = inputs
        _, dw, _, centred = output
        ctx.mark_non_differentiable(centred)
        ctx.set_materialize_grads(False)
        ctx.eps = eps
        ctx.save_for_backward(g, x, weight, xhat, invstd, dw, centred)

    @staticmethod
    def backward(ctx, a, alpha, beta, _grad_centred):
        g, x, weight, xhat, invstd, dw, centred = ctx.saved_tensors
        _, shape, count = _layout(g)
        if torch.is_grad_enabled():  # the double backward is being differentiated: all from x and g
            xhat, invstd = _normalise(x, ctx.eps)
            centred, _, q = _project(g, xhat)
        else:
            q = dw.view(shape) / count
        grads = _double_backward(centred, q, weight, xhat, invstd, a, alpha, beta)
        return (*grads, None, None, None)


def _double_backward(
    centred: Tensor,
    q: Tensor,
    weight: Tensor,
    xhat: Tensor,
    invstd: Tensor,
    a: Tensor | None,
    alpha: Tensor | None,
    beta: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients w.r.t. ``(g, x, w)`` of ⟨a, dx⟩ + ⟨α, dw⟩ + ⟨β, db⟩ (``None``: zero).

    With r = 1/σ, s = w r, q = mean(g x̂), g_c = g − ḡ − x̂ q (``centred``), a_c = a − ā − x̂ m with
    m = mean(a x̂), and R = mean(a g_c):
    ∂/∂g = s a_c + α x̂ + β;  ∂/∂w = M r R;  ∂/∂x = r (−s q a_c + (α − s m) g_c) − w R r² x̂.
    The last is r (G − mean(G) − x̂ mean(G x̂)) for G = −s q a + (α − s m) g, the explicit
    gradient w.r.t. x̂, plus r's own dependence on x (−w R r² x̂).
    """
    dims, shape, count = _layout(centred)
    w = weight.view(shape)
    s = w * invstd
    alpha = torch.zeros_like(s) if alpha is None else alpha.view(shape)
    beta = torch.zeros_like(s) if beta is None else beta.view(shape)
    if a is None:
        return xhat * alpha + beta, centred * (invstd * alpha), torch.zeros_like(weight)
    a_centred, _, a_xhat = _project(a, xhat)
    r_mean = (a * centred).mean(dims, keepdim=True)
    grad_g = torch.addcmul(a_centred * s, xhat, alpha) + beta
    grad_x = torch.addcmul(a_centred * (-invstd * s * q), centred, invstd * (alpha - s * a_xhat))
    grad_x = torch.addcmul(grad_x, xhat, -w * r_mean * invstd * invstd)
    return grad_g, grad_x, (invstd * r_mean * count).reshape(weight.shape)


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
    return _BatchNorm.apply(x, weight, bias, eps)[0]


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return compiler.is_compiling()
    return torch._dynamo.is_compiling()  # torch < 2.3
