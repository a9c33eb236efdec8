"""How far a measured time is from the hardware: counted FLOPs ÷ this machine's measured rate.

``counted_flops(fn)`` runs ``fn`` once under :class:`torch.utils.flop_counter.FlopCounterMode`,
which counts the matrix products and convolutions actually dispatched (also under ``vmap`` and
inside autograd's backward). ``gemm_rate`` and ``conv_rate`` time a large matrix product and a
large convolution with the current thread count, so ``flops / rate`` is the time the work would
take at the rate this CPU reaches on big, well-shaped kernels: the FLOP bound.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def counted_flops(fn: Callable[[], object]) -> int:
    """Matrix-product and convolution FLOPs of one call of ``fn``."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _rate(flops: int, fn: Callable[[], object], repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return flops / best


def gemm_rate(n: int = 1024) -> float:
    """FLOP/s of an ``n × n`` by ``n × n`` float32 matrix product on this machine."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return _rate(2 * n**3, lambda: a @ b)


def conv_rate(batch: int = 64, channels: int = 64, size: int = 28) -> float:
    """FLOP/s of a 3×3, ``channels``→``channels`` float32 convolution on ``batch`` images."""
    x = torch.randn(batch, channels, size, size)
    w = torch.randn(channels, channels, 3, 3)
    flops = 2 * batch * channels * channels * 9 * size * size
    return _rate(flops, lambda: torch.nn.functional.conv2d(x, w, padding=1))
