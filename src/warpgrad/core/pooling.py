"""2×2 max-pooling with torch's own values and gradients, faster on the CPU.

On the CPU, ``F.max_pool2d`` on a ``[N, C, H, W]`` tensor runs a scalar loop per output (no
vectorisation across the window's stride-2 reads): in a Conv4 lockstep step it costs a sixth of
the trajectories, more than the forward convolutions. Its channels-last kernel vectorises across
channels and is about twice as fast, counting the copy into that layout. But pooling the
channels-last copy with autograd would hand channels-last gradients to the layers below, whose
reductions would then sum in another order.

So :func:`max_pool` asks the channels-last kernel only *which* element of each window is the
maximum (a flat index into each plane; no gradient), and takes the values with ``gather`` from the
input as it is. The choice is the same as the standard kernel's (both keep the first maximum in
row-major order, or a window's last NaN), so the values are the same elements; ``gather``'s
backward writes each output's gradient into its element of a zero tensor, as max-pooling's backward
does, and its own backward is a ``gather`` again: values and gradients of every order are torch's,
bit for bit (tested). Under ``vmap`` the index is one more Function call with the vmapped dim
folded into the images.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from warpgrad.core.batchnorm import _compiling

__all__ = ["max_pool"]


def _window_argmax(x: Tensor) -> Tensor:
    """For ``x`` ``[..., C, H, W]`` (H, W even): each 2×2 window's maximum as a flat index into its
    H×W plane, ``[..., C, H/2, W/2]`` contiguous, chosen as ``F.max_pool2d_with_indices`` chooses."""
    images = x.reshape(-1, *x.shape[-3:])
    index = F.max_pool2d_with_indices(images.contiguous(memory_format=torch.channels_last), 2)[1]
    return index.contiguous().view(*x.shape[:-2], *index.shape[-2:])


class _WindowArgmax(torch.autograd.Function):
    """:func:`_window_argmax` as a Function, for its ``vmap`` rule: the vmapped dim becomes one more
    leading dim of plain tensors (the kernel then sees every task's images at once)."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return _window_argmax(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output)

    @staticmethod
    def backward(ctx, _grad_index):
        return None

    @staticmethod
    def vmap(info, in_dims, x):
        return _WindowArgmax.apply(x.movedim(in_dims[0], 0)), 0


_WindowArgmax.forward.__signature__ = inspect.signature(_WindowArgmax.forward)  # as in core/batchnorm


def _is_2x2(m: nn.MaxPool2d) -> bool:
    pairs = [m.kernel_size, m.stride if m.stride is not None else m.kernel_size, m.padding, m.dilation]
    pairs = [tuple(v) if isinstance(v, (tuple, list)) else (v, v) for v in pairs]
    return pairs == [(2, 2), (2, 2), (0, 0), (1, 1)] and not m.return_indices


# Below these, the copy and the extra calls cost more than the standard kernel (measured on 2
# cores: 2.0x faster at 16 channels of 28x28 on 80 images, 1.15x at 14x14, slower on fewer or
# narrower images, or with only a few channels to vectorise across).
MIN_ELEMENTS = 200_000
MIN_CHANNELS = 8


def max_pool(m: nn.MaxPool2d, x: Tensor) -> Tensor:
    """``m(x)``: for a 2×2, stride-2 pool of a large CPU float tensor ``[N, C, H, W]`` (H, W even)
    through the channels-last index and ``gather`` (same bits, faster); else ``m``'s own pooling."""
    fits = x.device.type == "cpu" and x.is_floating_point() and x.dim() == 4 and x.shape[1] >= MIN_CHANNELS
    large = x.numel() >= MIN_ELEMENTS and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0
    if not (fits and large and _is_2x2(m)) or _compiling():
        return m(x)
    index = _WindowArgmax.apply(x)
    return x.flatten(-2).gather(-1, index.flatten(-2)).view(index.shape)
