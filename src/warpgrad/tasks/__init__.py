"""Task families: a task gives training batches, a held-out test batch, a loss and a metric."""

from warpgrad.tasks.base import Task, TaskFamily
from warpgrad.tasks.sine import SineFamily, SineTask

__all__ = ["Task", "TaskFamily", "SineFamily", "SineTask"]
