"""The task protocol every method and the engine rely on: a task is an objective.

A **task** provides ``train_batch(generator)`` (a batch of its training data: any tree of
tensors; few-shot tasks return their support set), ``test_batch()`` (held-out data: the query
set), ``metric_name`` and ``lower_is_better``, and says how a model function is scored on a batch,
in one of two ways:

* **supervised** (``(x, y)`` batches): ``loss(prediction, target)`` (what the inner loop
  minimises) and ``metric(prediction, target)`` (what is reported);
* **any objective**: ``objective(forward, batch) -> loss`` and ``evaluation(forward, batch) ->
  (loss, metric)``, where ``forward(*inputs)`` runs the model with the parameters being adapted.
  An RL task rolls out episodes with ``forward`` (its batch is, e.g., the episodes' seeds); an
  online stream feeds one example at a time. Supervised tasks get these two from
  :func:`objective` and :func:`evaluation`.

Methods only ever call :func:`objective` and :func:`evaluation` (plus the batches), so every
method runs on every kind of task.

A **task family** samples tasks from a ``torch.Generator``: the same generator state gives the
same tasks.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import Tensor

from warpgrad.core.tree import tree_map


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


Forward = Callable[..., Any]
Objective = Callable[[Forward, Any], Tensor]


def objective(task: Any) -> Objective:
    """``(forward, batch) -> loss``: the task's own ``objective``, or ``loss(forward(x), y)``."""
    own = getattr(task, "objective", None)
    if callable(own):
        return own
    loss = task.loss
    return lambda forward, batch: loss(forward(batch[0]), batch[1])


def evaluation(task: Any) -> Callable[[Forward, Any], tuple[Tensor, Tensor]]:
    """``(forward, batch) -> (loss, metric)``: the task's own ``evaluation``, or the supervised one
    (one forward pass scored by ``loss`` and ``metric``)."""
    own = getattr(task, "evaluation", None)
    if callable(own):
        return own

    def supervised(forward: Forward, batch: Any) -> tuple[Tensor, Tensor]:
        prediction = forward(batch[0])
        return task.loss(prediction, batch[1]), task.metric(prediction, batch[1])

    return supervised


class _LossTask:
    def __init__(self, loss: Callable[[Tensor, Tensor], Tensor]):
        self.loss = loss


def as_task(task_or_loss: Any) -> Any:
    """A task, or a plain ``loss(prediction, target)`` as a supervised task (for its objective)."""
    if hasattr(task_or_loss, "train_batch") or hasattr(task_or_loss, "objective"):
        return task_or_loss
    return _LossTask(task_or_loss)


def loss_function(task: Any):
    """The function behind the task's objective (tasks that share it can be vmapped together)."""
    own = getattr(task, "objective", None)
    fn = own if callable(own) else task.loss
    return getattr(fn, "__func__", fn)


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

    def _to_device(self, batch: Any) -> Any:
        if self.device is None:
            return batch
        device = self.device
        return tree_map(lambda t: t.to(device, non_blocking=True), batch)

    def train_batch(self, generator: torch.Generator | None = None) -> Any:
        return self._to_device(self.task.train_batch(self.generator))

    def test_batch(self) -> Any:
        return self._to_device(self.task.test_batch())

    @property
    def loss(self):  # the wrapped task's bound method: methods compare ``loss.__func__`` across tasks
        return self.task.loss

    @property
    def metric(self):
        return self.task.metric

    def __getattr__(self, name: str):
        return getattr(self.task, name)


def with_own_seed(task: Any, generator: torch.Generator, device: torch.device | str | None = None) -> Any:
    """``task`` drawing its data from its own ``generator``, on ``device``: the task's own
    ``seeded(generator, device)`` when it defines one, else a :class:`SeededTask`.

    A task whose learner draws its batches itself (a continual sequence: its learner walks the
    experiences) defines ``seeded`` to return itself and ``shardable = False``: the engine then
    refuses to split its meta-batches across processes.
    """
    own = getattr(task, "seeded", None)
    return own(generator, device) if callable(own) else SeededTask(task, generator, device)


def shardable(task: Any) -> bool:
    """Whether a meta-batch of such tasks may be split across processes (default: yes)."""
    return bool(getattr(task, "shardable", True))


def sample_tasks(family: TaskFamily, n: int, generator: torch.Generator) -> list[Task]:
    """``n`` tasks drawn in order from ``family`` with ``generator``."""
    return [family.sample(generator) for _ in range(n)]
