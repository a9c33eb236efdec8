"""How meta-training stops early: on a non-finite metric (:class:`TrainingDiverged`) or on Ctrl-C,
deferred to the end of the current meta-step (:class:`TrainingInterrupted`)."""

from __future__ import annotations

import math
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from warpgrad.errors import TrainingDiverged


def check_finite(method: str, where: int | str, metrics: dict[str, float]) -> None:
    """Raise :class:`TrainingDiverged` naming ``method``, where it happened (a meta-step number,
    or a phrase) and the first non-finite metric."""
    for name, value in metrics.items():
        if not math.isfinite(value):
            at = f"meta-step {where}" if isinstance(where, int) else where
            raise TrainingDiverged(f"{method} diverged at {at} ({name} = {value}); lower its learning rates")


class TrainingInterrupted(KeyboardInterrupt):
    """Raised when Ctrl-C stopped training after a checkpoint of the last completed step."""

    def __init__(self, method: str, step: int, total: int, checkpoint: Path):
        self.method = method
        self.step = step
        self.total = total
        self.checkpoint = checkpoint
        super().__init__(f"interrupted {method} after meta-step {step} of {total}; checkpoint saved to {checkpoint}")


class _DeferredInterrupt:
    """Turns the first Ctrl-C into a request to stop after the current meta-step.

    A second Ctrl-C raises KeyboardInterrupt at once. Only active in the main thread.
    """

    def __init__(self, bar: Any, announce: bool = True):
        self.requested = False
        self._bar = bar
        self._announce = announce
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self._announce:
            self._bar.write(
                "warpgrad: finishing this meta-step, then saving a checkpoint (Ctrl-C again to abort)",
                file=sys.stderr,
            )

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
