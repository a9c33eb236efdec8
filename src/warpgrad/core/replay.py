"""WarpGrad's replay buffer of trajectory points (Algorithm 2): bounded, reservoir-sampled.

Every point offered is kept with equal probability, so the buffer's memory is independent of the
number of inner steps K and of the meta-batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from warpgrad.core.tree import Params, State
from warpgrad.errors import UsageError

__all__ = ["TrajectoryPoint", "ReservoirBuffer"]


@dataclass
class TrajectoryPoint:
    task: int
    theta: Params
    state: State


class ReservoirBuffer:
    """A bounded replay buffer: every offered item is kept with equal probability (reservoir)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise UsageError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.items: list[Any] = []
        self.offered = 0

    def add(self, item: Any, generator: torch.Generator) -> None:
        if len(self.items) < self.capacity:
            self.items.append(item)
        else:
            j = int(torch.randint(self.offered + 1, (), generator=generator))
            if j < self.capacity:
                self.items[j] = item
        self.offered += 1

    def sample(self, n: int, generator: torch.Generator) -> list[Any]:
        """``min(n, len)`` distinct items chosen uniformly at random, in buffer order (so that
        taking every item gives the same list however the buffer was filled)."""
        chosen = torch.randperm(len(self.items), generator=generator)[:n].sort().values
        return [self.items[int(i)] for i in chosen]

    def __len__(self) -> int:
        return len(self.items)
