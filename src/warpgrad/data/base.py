"""The class → images protocol every image dataset implements, and an in-memory implementation.

Task samplers (``warpgrad.tasks.episodes``, ``warpgrad.tasks.multishot``) only use this
protocol, so any dataset that implements it gets every few-shot and multi-shot protocol:

* ``name``: dataset name; ``image_shape``: ``(C, H, W)`` of the images it returns;
* ``classes``: class names; ``groups``: a group name per class (Omniglot's alphabet, a KanjiVG
  radical, tieredImageNet's super-class; the class name itself when there is none);
* ``splits``: class indices per split (``"train"``, ``"val"``, ``"test"``), disjoint;
* ``count(c)``: number of images of class ``c``;
* ``images(c, index)``: float32 tensor ``[len(index), C, H, W]`` in [0, 1] (all images of the
  class when ``index`` is None). The same ``(c, index)`` always returns the same pixels.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from warpgrad.errors import UsageError


@runtime_checkable
class ClassDataset(Protocol):
    name: str
    image_shape: tuple[int, int, int]
    classes: list[str]
    groups: list[str]
    splits: dict[str, list[int]]

    def count(self, c: int) -> int: ...

    def images(self, c: int, index: Tensor | Sequence[int] | None = None) -> Tensor: ...


class InMemoryClassDataset:
    """A :class:`ClassDataset` over per-class uint8 (0–255) or float (0–1) image tensors."""

    def __init__(
        self,
        name: str,
        images: list[Tensor],
        classes: list[str],
        splits: dict[str, list[int]],
        groups: list[str] | None = None,
    ):
        if len(images) != len(classes):
            raise UsageError(f"{name}: {len(images)} image tensors for {len(classes)} classes")
        if not images:
            raise UsageError(f"{name}: no classes")
        shapes = {tuple(t.shape[1:]) for t in images}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3:
            raise UsageError(f"{name}: images must all be [n, C, H, W] of one shape, got {sorted(shapes)}")
        check_splits(name, splits, len(classes))
        self.name = name
        self._images = images
        self.classes = list(classes)
        self.groups = list(groups) if groups is not None else list(classes)
        self.splits = {k: list(v) for k, v in splits.items()}
        self.image_shape = next(iter(shapes))  # type: ignore[assignment]

    def count(self, c: int) -> int:
        return int(self._images[c].shape[0])

    def images(self, c: int, index: Tensor | Sequence[int] | None = None) -> Tensor:
        data = self._images[c] if index is None else self._images[c][torch.as_tensor(index, dtype=torch.long)]
        return data.float() / 255.0 if data.dtype == torch.uint8 else data.float()


def check_splits(name: str, splits: dict[str, list[int]], n_classes: int) -> None:
    """Raise unless the splits are disjoint sets of valid class indices."""
    seen: dict[int, str] = {}
    for split, indices in splits.items():
        for c in indices:
            if not 0 <= c < n_classes:
                raise UsageError(f"{name}: split {split!r} has class index {c}, outside 0..{n_classes - 1}")
            if c in seen:
                raise UsageError(f"{name}: class {c} is in both split {seen[c]!r} and {split!r}")
            seen[c] = split


def split_by_fraction(
    n_classes: int, fractions: dict[str, float], seed: int = 0, groups: list[str] | None = None
) -> dict[str, list[int]]:
    """Deterministic disjoint class splits. With ``groups``, whole groups go to one split."""
    units = sorted(set(groups)) if groups is not None else list(range(n_classes))
    order = torch.randperm(len(units), generator=torch.Generator().manual_seed(seed)).tolist()
    total = sum(fractions.values())
    splits: dict[str, list[int]] = {}
    start = 0
    names = list(fractions)
    for i, split in enumerate(names):
        end = len(units) if i == len(names) - 1 else start + round(len(units) * fractions[split] / total)
        chosen = {units[j] for j in order[start:end]}
        if groups is None:
            splits[split] = sorted(int(c) for c in chosen)
        else:
            splits[split] = [c for c in range(n_classes) if groups[c] in chosen]
        start = end
    return splits
