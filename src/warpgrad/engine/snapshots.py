"""Snapshots of a learner during meta-training (``--set snapshot_every=N``).

A run keeps one checkpoint per method, overwritten as training goes on. With ``snapshot_every=N``
(N > 0; default 0, off) training also writes the learner's state at meta-step 0 and at every N-th
meta-step to ``OUT/METHOD/snapshots/step-SSSSSS.pt``, in the checkpoint format
(:func:`~warpgrad.engine.checkpoint.save_checkpoint`: atomic, digest-checked), for
``warpgrad analyze`` to compare representations across meta-training.

A snapshot holds ``step``, ``learner`` (its ``state_dict()``) and the run's ``config``. Writing one
draws no random numbers and changes no state, so training gives the same results with or without
snapshots; the snapshot of step ``s`` is written before the checkpoint of step ``s``, so a resumed
run rewrites, identically, only snapshots after its checkpoint.

Example:
    >>> run("sine", "maml", "smoke", out_dir="runs/demo", settings={"snapshot_every": "2"})
    >>> sorted(list_snapshots("runs/demo", "maml"))
    [0, 2, 4]
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from warpgrad.engine.checkpoint import check_config, load_checkpoint, save_checkpoint

SNAPSHOT_DIR = "snapshots"
SNAPSHOT_KEYS = ("step", "learner", "config")
_NAME = re.compile(r"step-([0-9]{6,})\.pt")


def snapshot_dir(out_dir: str | Path, method: str) -> Path:
    """Where ``method``'s snapshots live in a run's output directory."""
    return Path(out_dir) / method / SNAPSHOT_DIR


def snapshot_path(out_dir: str | Path, method: str, step: int) -> Path:
    """The snapshot of meta-step ``step``: ``OUT/METHOD/snapshots/step-SSSSSS.pt``."""
    return snapshot_dir(out_dir, method) / f"step-{step:06d}.pt"


def snapshot_due(step: int, every: int) -> bool:
    """Whether meta-step ``step`` gets a snapshot with ``snapshot_every=every`` (0: never)."""
    return every > 0 and step % every == 0


def save_snapshot(out_dir: str | Path, method: str, step: int, learner_state: dict[str, Any], config: dict) -> Path:
    """Write the snapshot of ``step`` (atomically) and return its path."""
    path = snapshot_path(out_dir, method, step)
    save_checkpoint(path, {"step": step, "learner": learner_state, "config": config})
    return path


def clear_snapshots(out_dir: str | Path, method: str) -> None:
    """Remove ``method``'s snapshots (a run started afresh must not keep an earlier run's)."""
    shutil.rmtree(snapshot_dir(out_dir, method), ignore_errors=True)


def list_snapshots(out_dir: str | Path, method: str) -> dict[int, Path]:
    """``{meta-step: path}`` of ``method``'s snapshots, sorted by step (empty when there are none)."""
    directory = snapshot_dir(out_dir, method)
    if not directory.is_dir():
        return {}
    found = {}
    for path in directory.iterdir():
        match = _NAME.fullmatch(path.name)
        if match is not None:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def load_snapshot(path: str | Path, expected_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a snapshot (digest-checked); with ``expected_config``, refuse one from another run.

    Raises:
        FileFormatError: naming the file: unreadable, corrupted, incomplete, or written by a run
            with another experiment, method, profile, seed or settings.
    """
    snapshot = load_checkpoint(path, keys=SNAPSHOT_KEYS)
    if expected_config is not None:
        check_config(snapshot, expected_config, path)
    return snapshot
