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


def loss_function(task: Task):
    """The function behind ``task.loss`` (tasks whose losses share it can be vmapped together)."""
    return getattr(task.loss, "__func__", task.loss)


class SeededTask:
    """``task`` drawing its training batches from its own ``generator`` (the one a caller passes is
    ignored), with every batch moved to ``device``.

    The engine gives each task of a meta-batch its own generator so that a task's data does not
    depend on which other tasks are in the same process or in what order a method visits them:
    a meta-batch split across processes (:mod:`warpgrad.distributed`) then draws exactly what one
    process would. Any other attribute is the wrapped task's.
    """

    def __init__(self, task: Task, generator: torch.Generator, device: torch.device | str | None = None):
        self.task = task
        self.generator = generator
        self.device = None if device is None else torch.device(device)

    def _to_device(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        if self.device is None:
            return batch
        return batch[0].to(self.device, non_blocking=True), batch[1].to(self.device, non_blocking=True)

    def train_batch(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        return self._to_device(self.task.train_batch(self.generator))

    def test_batch(self) -> tuple[Tensor, Tensor]:
        return self._to_device(self.task.test_batch())

    @property
    def loss(self):  # the wrapped task's bound method: methods compare ``loss.__func__`` across tasks
        return self.task.loss

    @property
    def metric(self):
        return self.task.metric

    def __getattr__(self, name: str):
        return getattr(self.task, name)


def sample_tasks(family: TaskFamily, n: int, generator: torch.Generator) -> list[Task]:
    """``n`` tasks drawn in order from ``family`` with ``generator``."""
    return [family.sample(generator) for _ in range(n)]
