"""torch's intra-op thread count for the length of a block."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from warpgrad.errors import UsageError


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside (unchanged when None), restored afterwards."""
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"threads must be a positive int, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
