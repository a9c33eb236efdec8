"""Meta-training samples for the sequential (OML/ANML) protocol: :class:`TrajectorySampler`.

A sampler draws, from an explicit ``torch.Generator`` only, one train class, a *trajectory* of its
images in random order and a *remember* batch of images of uniformly drawn classes, which
``learner.meta_step`` takes as one meta-training sample.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from warpgrad.errors import UsageError

# ------------------------------------------------------------------------------ sampling


class TrajectorySampler:
    """Meta-training samples from a :class:`~warpgrad.data.base.ClassDataset`'s train classes.

    ``classes`` (dataset class indices) get labels ``0..len(classes)−1`` in order. Each
    :meth:`sample` draws, with ``generator`` only: a class uniformly; ``trajectory`` distinct
    images of it in random order (the trajectory, all labelled with that class); ``remember``
    images, each of a uniformly drawn class and a uniformly drawn image of it (the remember batch).
    Images are read from the dataset once, when the sampler is built.

    Returns ``(trajectory_x, trajectory_y, remember_x, remember_y, label)``.
    """

    def __init__(
        self, dataset: Any, classes: Sequence[int], trajectory: int, remember: int, generator: torch.Generator
    ):
        if not classes:
            raise UsageError("the trajectory sampler needs at least one class")
        if trajectory < 1 or remember < 0:
            raise UsageError(f"trajectory must be >= 1 and remember >= 0, got {trajectory} and {remember}")
        self.classes = [int(c) for c in classes]
        self.trajectory, self.remember, self.generator = trajectory, remember, generator
        self.images = [dataset.images(c) for c in self.classes]
        short = [c for c, x in zip(self.classes, self.images) if x.shape[0] < trajectory]
        if short:
            raise UsageError(f"trajectory={trajectory} but class(es) {short[:5]} of {dataset.name} have fewer images")
        self.counts = torch.tensor([x.shape[0] for x in self.images])

    def sample(self) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        g = self.generator
        label = int(torch.randint(len(self.classes), (1,), generator=g))
        order = torch.randperm(self.counts[label].item(), generator=g)[: self.trajectory]
        tx = self.images[label][order]
        ty = torch.full((self.trajectory,), label, dtype=torch.long)
        ry = torch.randint(len(self.classes), (self.remember,), generator=g)
        picks = (torch.rand(self.remember, generator=g) * self.counts[ry]).long()
        if self.remember:
            rx = torch.stack([self.images[int(c)][int(i)] for c, i in zip(ry, picks)])
        else:
            rx = tx[:0]
        return tx, ty, rx, ry, label
