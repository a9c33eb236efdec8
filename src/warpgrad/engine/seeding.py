"""Where the meta-training loop's randomness comes from: the seed offsets of each stream of tasks
(see :mod:`warpgrad.engine.loop` for the scheme), per-task seeds, seeded task sampling, and the
background sampling of the next meta-batch."""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from warpgrad.errors import UsageError
from warpgrad.tasks.base import Task, TaskFamily, with_own_seed

TASK_SEED_OFFSET = 0
STEP_SEED_OFFSET = 1
VAL_SEED_OFFSET = 1_000_000
TEST_SEED_OFFSET = 2_000_000
EVAL_SEED_OFFSET = 3_000_000
MAX_SEED = 2**32 - 1
TASK_SEED_BOUND = 2**62


def check_seed(seed: int) -> None:
    """Raise ValueError unless ``seed`` is an integer in ``[0, 2**32 - 1]``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UsageError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, TASK_SEED_BOUND, (), generator=generator))


def _task_seeds(generator: torch.Generator, n: int) -> list[tuple[int, int]]:
    """``(sample seed, batch seed)`` for each of ``n`` tasks."""
    return [(int(a), int(b)) for a, b in torch.randint(0, TASK_SEED_BOUND, (n, 2), generator=generator)]


def _sample_tasks(family: TaskFamily, seeds: list[tuple[int, int]], indices: range) -> list[Task]:
    """Tasks ``indices`` of a list whose task ``i`` is sampled from its own seed ``seeds[i][0]``."""
    return [family.sample(_generator(seeds[i][0])) for i in indices]


def spare_core() -> bool:
    """Whether this machine has a core that no process of this run uses for torch's threads."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return cores > torch.get_num_threads() * processes


class _TaskPrefetcher:
    """Samples the next meta-batch's tasks in a background thread while the current meta-step runs.

    The next seeds are read from a copy of the task generator, so the generator itself (and what
    a checkpoint stores) advances exactly as without prefetching, and the tasks are the same.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="warpgrad-tasks")
        self._pending: tuple[list[tuple[int, int]], Future] | None = None

    def request(self, family: TaskFamily, generator: torch.Generator, n: int, indices: range) -> None:
        peek = torch.Generator()
        peek.set_state(generator.get_state())
        seeds = _task_seeds(peek, n)
        self._pending = (seeds, self._pool.submit(_sample_tasks, family, seeds, indices))

    def take(self, seeds: list[tuple[int, int]]) -> list[Task] | None:
        """The prefetched tasks if they were sampled from ``seeds``, else ``None``."""
        pending, self._pending = self._pending, None
        if pending is None or pending[0] != seeds:
            return None
        return pending[1].result()

    def close(self) -> None:
        self._pending = None
        self._pool.shutdown(wait=True, cancel_futures=True)


def _seeded(tasks: list[Task], batch_seeds: list[int], device: torch.device) -> list[Task]:
    """Each task drawing its batches from a fresh generator of its own seed, on ``device``."""
    return [with_own_seed(t, _generator(s), device) for t, s in zip(tasks, batch_seeds, strict=True)]
