"""WarpGrad's replay buffer of trajectory points (Algorithm 2): bounded, reservoir-sampled, compact.

Every point offered is kept with equal probability (reservoir sampling), so the buffer's memory
is independent of the number of inner steps K and of the meta-batch. Points are stored in
preallocated stacked tensors (one ``[capacity, ...]`` tensor per parameter and optimiser-state
entry, optionally in a narrower ``dtype`` such as bfloat16), so filling the buffer allocates
nothing after the first point and a sample is a gather, ready for ``vmap``.

Which slot an offered point takes depends only on how many points were offered before it and on
the generator, never on the point: :meth:`PointBuffer.plan` draws the slots of the next ``n``
offers up front (exactly the draws ``n`` single offers would make), and :meth:`PointBuffer.store`
writes the points when they exist. That lets T tasks advance in lockstep while the buffer ends
up as if their points had been offered task after task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from warpgrad.core.tree import Params, State, tree_map
from warpgrad.errors import UsageError

__all__ = ["Points", "PointBuffer", "last_writers"]


@dataclass
class Points:
    """Trajectory points stacked along dim 0: point j is ``(task[j], θ_j, s_j)``."""

    task: Tensor
    theta: Params
    state: State

    def __len__(self) -> int:
        return len(self.task)

    def rows(self, index: Tensor) -> Points:
        """The points at ``index`` (a 1-D index tensor), stacked in that order."""
        return Points(
            self.task[index], tree_map(lambda v: v[index], self.theta), tree_map(lambda v: v[index], self.state)
        )


class PointBuffer:
    """A bounded replay buffer of trajectory points, kept by reservoir sampling.

    Args:
        capacity: the most points held.
        dtype: the floating-point dtype points are stored in (``None``: as offered); points are
            returned in the dtype they were offered in.
    """

    def __init__(self, capacity: int, dtype: torch.dtype | None = None):
        if capacity < 1:
            raise UsageError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity, self.dtype = capacity, dtype
        self.offered = 0
        self.size = 0
        self._storage: dict | None = None
        self._dtypes: dict | None = None

    def plan(self, n: int, generator: torch.Generator) -> list[int]:
        """The slots of the next ``n`` offers in order (``-1``: not kept), drawn up front."""
        slots = []
        for _ in range(n):
            if self.offered < self.capacity:
                slots.append(self.offered)
            else:
                j = int(torch.randint(self.offered + 1, (), generator=generator))
                slots.append(j if j < self.capacity else -1)
            self.offered += 1
        self.size = min(self.offered, self.capacity)
        return slots

    def store(self, slots: Tensor, points: Points) -> None:
        """Write ``points`` into ``slots`` (one slot per point, each taken from :meth:`plan`)."""
        if len(slots) == 0:
            return
        tree = _tree(points)
        if self._storage is None:
            self._dtypes = tree_map(lambda v: v.dtype, tree)
            self._storage = tree_map(
                lambda v: v.new_empty((self.capacity, *v.shape[1:]), dtype=self._compact(v.dtype)), tree
            )
        slots = slots.to(points.task.device)
        tree_map(lambda store, v: store.index_copy_(0, slots, v.detach().to(store.dtype)), self._storage, tree)

    def sample(self, n: int, generator: torch.Generator) -> Points:
        """``min(n, len)`` distinct points chosen uniformly at random, in slot order (so taking
        every point gives the same points however the buffer was filled)."""
        if self._storage is None or self.size == 0:
            raise UsageError("the replay buffer is empty: nothing was stored")
        chosen = torch.randperm(self.size, generator=generator)[:n].sort().values
        chosen = chosen.to(self._storage["task"].device)
        return Points(**tree_map(lambda store, dtype: store[chosen].to(dtype), self._storage, self._dtypes))

    def _compact(self, dtype: torch.dtype) -> torch.dtype:
        return self.dtype if self.dtype is not None and dtype.is_floating_point else dtype

    def __len__(self) -> int:
        return self.size


def _tree(points: Points) -> dict:
    return {"task": points.task, "theta": points.theta, "state": points.state}


def last_writers(slots: list[int]) -> dict[int, int]:
    """``{offer index: slot}`` for the offers whose point is still in its slot after all of them
    (a later offer to the same slot overwrites an earlier one)."""
    final: dict[int, int] = {}
    for n, slot in enumerate(slots):
        if slot >= 0:
            final[slot] = n
    return {n: slot for slot, n in final.items()}
