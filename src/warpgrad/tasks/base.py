"""The task protocol every method and the engine rely on.

A **task** provides ``train_batch(generator) -> (x, y)`` (a batch of its training data; few-shot
tasks return their support set), ``test_batch() -> (x, y)`` (held-out data: the query set),
``loss(prediction, target)`` (what the inner loop minimises) and ``metric(prediction, target)``
(what is reported; ``metric_name`` says which, ``lower_is_better`` which way is good).

A **task family** samples tasks from a ``torch.Generator``: the same generator state gives the
same tasks.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Task(Protocol):
    metric_name: str
    lower_is_better: bool

    def train_batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]: ...

    def test_batch(self) -> tuple[Tensor, Tensor]: ...

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor: ...

    def metric(self, prediction: Tensor, target: Tensor) -> Tensor: ...


class TaskFamily(Protocol):
    metric_name: str
    lower_is_better: bool

    def sample(self, generator: torch.Generator) -> Task: ...


def family_split(family: TaskFamily, split: str) -> TaskFamily:
    """The family's tasks for ``split`` (``train``/``val``/``test``): ``family.split(split)`` when
    the family has disjoint splits (e.g. held-out classes), else the family itself (sine)."""
    splitter = getattr(family, "split", None)
    return splitter(split) if callable(splitter) else family


def sample_tasks(family: TaskFamily, n: int, generator: torch.Generator) -> list[Task]:
    """``n`` tasks drawn in order from ``family`` with ``generator``."""
    return [family.sample(generator) for _ in range(n)]
