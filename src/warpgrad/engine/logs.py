"""Optional metrics logging: every history row of a training run, written as scalars.

``--log none`` (the default) writes nothing beyond ``metrics.csv``. ``--log tensorboard`` also
writes each row to a TensorBoard event directory, ``<out>/tensorboard/<run_name>/``, one scalar
per numeric column (``val_accuracy``, ``val_loss``, ``time_s``, ...) at the row's ``step``. It
needs the optional ``tensorboard`` package (``pip install 'warpgrad[tensorboard]'``); call
:func:`check_logger` before training so that a missing package is reported at once, not after
the first validation.

Resumed runs: the training loop rewrites the whole history from the checkpoint, so the logger
is handed the full history each time (:meth:`MetricsLogger.log_history`) and writes only the rows
whose step is greater than the last step it wrote in this process. A resumed run continues the
same event directory; the new process starts a second event file there, and TensorBoard reads
all the files of a directory as one run. So that the points the crashed process wrote (the
checkpoint's history, and any rows past the checkpoint that the resumed run will recompute) do
not show twice, every logger opens its event file with ``SummaryWriter(purge_step=0)``: it starts
with a restart marker at step 0, which tells TensorBoard to drop every point of the earlier files,
and then writes the full history it is given. After a resume the directory therefore shows
exactly the checkpoint's history followed by the new rows.

Example::

    >>> check_logger("none")
    >>> with open_logger("none", Path("out"), "maml-seed0") as logger:
    ...     logger.log_history([{"step": 0, "val_loss": 2.3}, {"step": 5, "val_loss": 1.9}])
    ...     logger.log_history([{"step": 0, "val_loss": 2.3}, {"step": 5, "val_loss": 1.9}])
    2
    0
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from warpgrad.errors import UsageError

__all__ = ["LOGGERS", "MetricsLogger", "TensorBoardLogger", "check_logger", "open_logger", "row_scalars"]

LOGGERS = ("none", "tensorboard")
"""The values ``--log`` accepts."""

TENSORBOARD_DIR = "tensorboard"
"""Subdirectory of the output directory that holds one event directory per run."""

_INSTALL_HINT = "--log tensorboard needs the tensorboard package: pip install 'warpgrad[tensorboard]'"


def _summary_writer_class() -> type:
    """Import and return :class:`torch.utils.tensorboard.SummaryWriter`, or raise the install hint.

    ``tensorboard`` is imported first and by name: ``torch.utils.tensorboard`` may already sit in
    ``sys.modules`` while ``tensorboard`` itself is gone or broken.
    """
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise UsageError(_INSTALL_HINT) from error
    return SummaryWriter


def check_logger(kind: str) -> None:
    """Raise :class:`UsageError` unless ``kind`` is in :data:`LOGGERS` and usable here.

    Cheap and side-effect free (it creates no files), so the command line can call it while
    validating its options, before any training starts.
    """
    if kind not in LOGGERS:
        allowed = ", ".join(repr(k) for k in LOGGERS)
        raise UsageError(f"unknown logger {kind!r}: choose one of {allowed}")
    if kind == "tensorboard":
        _summary_writer_class()


def row_scalars(row: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """Split a history row into its step and the scalars to log.

    ``row["step"]`` must be an ``int`` (a :class:`ValueError` otherwise). Every other value that
    is a real number (not a ``bool``) and finite becomes a scalar under its key; strings, lists,
    ``None``, ``nan`` and infinities are skipped.
    """
    step = row.get("step")
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise ValueError(f"a metrics row needs an int 'step', got {step!r}")
    scalars = {}
    for key, value in row.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        value = float(value)
        if math.isfinite(value):
            scalars[str(key)] = value
    return int(step), scalars


class MetricsLogger:
    """Writes history rows somewhere; this base class writes nothing (``--log none``).

    Subclasses override :meth:`_write` and :meth:`close`. Use it as a context manager, or call
    :meth:`close` when the run ends.
    """

    def __init__(self) -> None:
        self.last_step: int | None = None
        """The largest step written in this process, or ``None`` before the first row."""

    def log(self, row: dict[str, Any]) -> None:
        """Write one row: each numeric, finite value other than ``step`` as a scalar at ``step``.

        Writes unconditionally (use :meth:`log_history` to skip steps already written).
        """
        step, scalars = row_scalars(row)
        self._write(step, scalars)
        self.last_step = step if self.last_step is None else max(self.last_step, step)

    def log_history(self, rows: Iterable[dict[str, Any]]) -> int:
        """Write the rows whose step is greater than :attr:`last_step`; return how many were written.

        Give it the full history every time: rows already written by this logger are skipped,
        so rewriting the history (as a resumed run does) adds no duplicate points.
        """
        written = 0
        for row in rows:
            step, _ = row_scalars(row)
            if self.last_step is not None and step <= self.last_step:
                continue  # written before, or out of order within these rows
            self.log(row)
            written += 1
        return written

    def _write(self, step: int, scalars: dict[str, float]) -> None:
        """Write the scalars of one row; the no-op logger does nothing."""

    def flush(self) -> None:
        """Push buffered points to disk; the no-op logger does nothing."""

    def close(self) -> None:
        """Flush and release the output; the no-op logger does nothing. Safe to call twice."""

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class TensorBoardLogger(MetricsLogger):
    """Writes rows to a TensorBoard event directory with :class:`torch.utils.tensorboard.SummaryWriter`.

    The directory is created on construction, with an event file that starts with a restart
    marker at step 0, so TensorBoard hides what earlier processes wrote there. Each row is
    flushed at once, so a killed run loses at most the row being written and TensorBoard shows
    progress while it trains.
    """

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        writer_class = _summary_writer_class()
        self.log_dir = Path(log_dir)
        # purge_step=0: hide every point of earlier event files in this directory (see the module docs).
        self._writer: Any = writer_class(log_dir=str(self.log_dir), purge_step=0)

    def _write(self, step: int, scalars: dict[str, float]) -> None:
        if self._writer is None:
            raise RuntimeError(f"the TensorBoard logger for {self.log_dir} is closed")
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, global_step=step)
        self._writer.flush()

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def open_logger(kind: str, directory: Path, run_name: str) -> MetricsLogger:
    """Open the logger ``kind`` for the run ``run_name`` of the output directory ``directory``.

    ``"none"`` returns a :class:`MetricsLogger` that writes nothing; ``"tensorboard"`` a
    :class:`TensorBoardLogger` writing to ``directory / "tensorboard" / run_name``. Raises
    :class:`UsageError` as :func:`check_logger` does. In a distributed run open it on the main
    process only.
    """
    check_logger(kind)
    if kind == "none":
        return MetricsLogger()
    if not run_name or Path(run_name).name != run_name or run_name in (".", ".."):
        raise UsageError(f"run name {run_name!r} cannot name a TensorBoard directory: use one path component")
    return TensorBoardLogger(Path(directory) / TENSORBOARD_DIR / run_name)
