"""Checkpoints and atomic file writes.

Every file the engine writes goes through :func:`atomic_write`: the content is written to a
temporary file in the destination's directory, flushed and ``fsync``-ed, then moved over the
destination with :func:`os.replace`. A crash or an exception mid-write leaves the previous file
intact and no temporary file behind.

A checkpoint is a plain dict (tensors, ints, floats, strings, lists, dicts) saved with
:func:`torch.save` and loaded with ``torch.load(..., weights_only=True)``, so loading never
runs pickled code.

Example:
    >>> save_checkpoint(path, {"step": 3, "config": {"seed": 0}})
    >>> load_checkpoint(path)["step"]
    3
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

import torch

CONFIG_FIELDS = ("experiment", "method", "profile", "seed", "settings")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` atomically: ``write(file)`` fills a temporary file that replaces ``path``.

    The temporary file lives in the same directory (so :func:`os.replace` is atomic), is
    flushed and ``fsync``-ed before the replace, and is removed if ``write`` raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` for UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Save ``checkpoint`` to ``path`` atomically with :func:`torch.save`."""
    atomic_write(path, lambda f: torch.save(checkpoint, f))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        ValueError: naming the file, if it is missing or cannot be read as a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint to resume from: {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same message
        raise ValueError(f"cannot read checkpoint {path}: {error}") from None
    if not isinstance(checkpoint, dict) or "config" not in checkpoint or "step" not in checkpoint:
        raise ValueError(f"{path} is not a warpgrad checkpoint (no 'config' or 'step')")
    return checkpoint


def check_config(checkpoint: dict[str, Any], expected: dict[str, Any], path: str | os.PathLike) -> None:
    """Raise ValueError naming the first field where ``checkpoint['config']`` differs from ``expected``."""
    config = checkpoint.get("config", {})
    for name in CONFIG_FIELDS:
        if config.get(name) != expected[name]:
            raise ValueError(
                f"checkpoint {path} was written with {name}={config.get(name)!r}, "
                f"not {name}={expected[name]!r}; resume with the same settings or use another --out"
            )
