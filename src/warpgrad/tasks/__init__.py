"""Task families: a task gives training batches, a held-out test batch, a loss and a metric."""

from warpgrad.tasks.base import Task, TaskFamily, family_split, sample_tasks
from warpgrad.tasks.classification import Episode, EpisodeFamily, MultiShotFamily, MultiShotTask
from warpgrad.tasks.sine import SineFamily, SineTask

__all__ = [
    "Task",
    "TaskFamily",
    "family_split",
    "sample_tasks",
    "Episode",
    "EpisodeFamily",
    "MultiShotFamily",
    "MultiShotTask",
    "SineFamily",
    "SineTask",
]
