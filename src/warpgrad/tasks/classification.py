"""Classification tasks over a :class:`~warpgrad.data.base.ClassDataset`.

* :class:`EpisodeFamily`: N-way K-shot episodes (Vinyals et al. 2016): N classes of one split,
  K support and Q query images per class, labels 0..N−1 in random order. The support set is the
  task's training batch, the query set its test batch.
* :class:`MultiShotFamily`: WarpGrad's multi-shot protocol (Flennerhag et al. 2020, after Leap):
  a task is N characters of one *group* (an Omniglot alphabet), groups with fewer than N classes
  dropped; per class ``train_per_class`` images to train on (minibatches of ``batch_size``,
  randomly affine-augmented) and ``test_per_class`` held-out images.

Both draw every random choice from the generator they are given, so the same generator state
gives the same tasks, and both offer ``split(name)``: the same family on another split's classes
(the engine meta-trains on ``train`` and evaluates on ``val``/``test``, which are disjoint).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torch.nn import functional as F

from warpgrad.data.base import ClassDataset
from warpgrad.errors import UsageError
from warpgrad.tasks.augment import random_affine


class _Classification:
    metric_name = "accuracy"
    lower_is_better = False

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(prediction, target)

    def metric(self, prediction: Tensor, target: Tensor) -> Tensor:
        return (prediction.argmax(-1) == target).float().mean()


@dataclass
class Episode(_Classification):
    """A few-shot task: the support set is its training batch, the query set its test batch."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    classes: list[int]

    def train_batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return self.support_x, self.support_y

    def test_batch(self) -> tuple[Tensor, Tensor]:
        return self.query_x, self.query_y


@dataclass
class MultiShotTask(_Classification):
    """A multi-shot task: minibatches from a training set, optionally affine-augmented."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    batch_size: int
    augment: bool
    classes: list[int]

    def train_batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        index = torch.randperm(self.train_x.shape[0], generator=generator)[: self.batch_size]
        x = self.train_x[index]
        if self.augment:
            x = random_affine(x, generator)
        return x, self.train_y[index]

    def test_batch(self) -> tuple[Tensor, Tensor]:
        return self.test_x, self.test_y


def _split_classes(dataset: ClassDataset, split: str) -> list[int]:
    if split not in dataset.splits:
        raise UsageError(f"{dataset.name} has no split {split!r}; allowed: {', '.join(dataset.splits)}")
    return list(dataset.splits[split])


def _positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class EpisodeFamily:
    """N-way K-shot episodes from the classes of ``dataset.splits[split]``."""

    dataset: ClassDataset
    ways: int
    shots: int
    queries: int = 15
    split_name: str = "train"

    metric_name = "accuracy"
    lower_is_better = False

    def __post_init__(self) -> None:
        _positive(ways=self.ways, shots=self.shots, queries=self.queries)
        classes = _split_classes(self.dataset, self.split_name)
        if self.ways > len(classes):
            raise UsageError(
                f"{self.ways}-way episodes need {self.ways} classes; {self.dataset.name} split "
                f"{self.split_name!r} has {len(classes)}"
            )
        fewest = min(self.dataset.count(c) for c in classes)
        if self.shots + self.queries > fewest:
            raise UsageError(
                f"shots + queries = {self.shots + self.queries} images per class, but a class of "
                f"{self.dataset.name} split {self.split_name!r} has only {fewest}"
            )

    def split(self, name: str) -> EpisodeFamily:
        return replace(self, split_name=name)

    def sample(self, generator: torch.Generator) -> Episode:
        classes = _split_classes(self.dataset, self.split_name)
        chosen = [classes[int(i)] for i in torch.randperm(len(classes), generator=generator)[: self.ways]]
        support, query = [], []
        for c in chosen:
            index = torch.randperm(self.dataset.count(c), generator=generator)[: self.shots + self.queries]
            images = self.dataset.images(c, index)
            support.append(images[: self.shots])
            query.append(images[self.shots :])
        labels = torch.arange(self.ways)
        return Episode(
            torch.cat(support),
            labels.repeat_interleave(self.shots),
            torch.cat(query),
            labels.repeat_interleave(self.queries),
            chosen,
        )


@dataclass(frozen=True)
class MultiShotFamily:
    """WarpGrad's multi-shot protocol: one group's classes per task (see the module docstring)."""

    dataset: ClassDataset
    ways: int = 20
    train_per_class: int = 15
    test_per_class: int = 5
    batch_size: int = 20
    augment: bool = True
    split_name: str = "train"

    metric_name = "accuracy"
    lower_is_better = False

    def __post_init__(self) -> None:
        _positive(
            ways=self.ways,
            train_per_class=self.train_per_class,
            test_per_class=self.test_per_class,
            batch_size=self.batch_size,
        )
        if not self.eligible_groups():
            raise UsageError(
                f"no group of {self.dataset.name} split {self.split_name!r} has {self.ways} classes with "
                f"{self.train_per_class + self.test_per_class} images each"
            )

    def eligible_groups(self) -> dict[str, list[int]]:
        """Groups of the split with at least ``ways`` classes that have enough images."""
        need = self.train_per_class + self.test_per_class
        groups: dict[str, list[int]] = {}
        for c in _split_classes(self.dataset, self.split_name):
            if self.dataset.count(c) >= need:
                groups.setdefault(self.dataset.groups[c], []).append(c)
        return {g: cs for g, cs in sorted(groups.items()) if len(cs) >= self.ways}

    def split(self, name: str) -> MultiShotFamily:
        return replace(self, split_name=name)

    def sample(self, generator: torch.Generator) -> MultiShotTask:
        groups = self.eligible_groups()
        names = list(groups)
        members = groups[names[int(torch.randint(len(names), (), generator=generator))]]
        chosen = [members[int(i)] for i in torch.randperm(len(members), generator=generator)[: self.ways]]
        train, test = [], []
        for c in chosen:
            index = torch.randperm(self.dataset.count(c), generator=generator)
            images = self.dataset.images(c, index[: self.train_per_class + self.test_per_class])
            train.append(images[: self.train_per_class])
            test.append(images[self.train_per_class :])
        labels = torch.arange(self.ways)
        return MultiShotTask(
            torch.cat(train),
            labels.repeat_interleave(self.train_per_class),
            torch.cat(test),
            labels.repeat_interleave(self.test_per_class),
            self.batch_size,
            self.augment,
            chosen,
        )
