"""Checkpoints (and, re-exported from :mod:`warpgrad.files`, atomic writes and directory locks).

Every file the engine writes goes through :func:`~warpgrad.files.atomic_write`: a crash or an
exception mid-write leaves the previous file intact.

A checkpoint is a plain dict (tensors, ints, floats, strings, lists, dicts) serialised with
:func:`torch.save` behind a one-line header that carries the SHA-256 digest and the length of
the serialised bytes::

    WARPGRAD-CHECKPOINT 2 sha256=<64 hex digits> bytes=<n>\n<torch.save bytes>

Loading checks the header, the length and the digest before ``torch.load(..., weights_only=True)``
(which never runs pickled code), so a truncated file or any changed byte is refused with a
one-line :class:`~warpgrad.errors.FileFormatError` naming the file.


Example:
    >>> save_checkpoint(path, {"step": 3, "config": {"seed": 0}})
    >>> load_checkpoint(path)["step"]
    3
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import IO, Any

import torch

from warpgrad.errors import FileFormatError, one_line
from warpgrad.files import atomic_write, atomic_write_text, locked, remove_stale_temp_files

__all__ = [
    "CHECKPOINT_FILE",
    "atomic_write",
    "atomic_write_text",
    "check_config",
    "checkpoint_path",
    "load_checkpoint",
    "locked",
    "remove_stale_temp_files",
    "save_checkpoint",
]

CONFIG_FIELDS = ("experiment", "method", "profile", "seed", "settings")


MAGIC = b"WARPGRAD-CHECKPOINT 2 "
_HEADER = re.compile(rb"WARPGRAD-CHECKPOINT 2 sha256=([0-9a-f]{64}) bytes=([0-9]{1,15})\n")
CHECKPOINT_FILE = "checkpoint.pt"
REQUIRED_KEYS = ("config", "step")


def checkpoint_path(out_dir: str | os.PathLike, method: str) -> Path:
    """Where ``method``'s checkpoint lives in a run's output directory."""
    return Path(out_dir) / method / CHECKPOINT_FILE


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Save ``checkpoint`` to ``path`` atomically: the digest header, then :func:`torch.save`'s bytes."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    payload = buffer.getvalue()
    header = MAGIC + f"sha256={hashlib.sha256(payload).hexdigest()} bytes={len(payload)}\n".encode()

    def write(f: IO[bytes]) -> None:
        f.write(header)
        f.write(payload)

    atomic_write(path, write)


def load_checkpoint(path: str | os.PathLike, keys: tuple[str, ...] = REQUIRED_KEYS) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, checking its length and digest.

    Raises:
        FileFormatError: one line naming the file and what is wrong: missing, unreadable,
            not a warpgrad checkpoint, truncated, corrupted, or without one of ``keys``.
    """
    path = Path(path)
    if not path.exists():
        raise FileFormatError(f"no checkpoint to resume from: {path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise FileFormatError(f"cannot read checkpoint {path}: {error.strerror or type(error).__name__}") from None
    header = _HEADER.match(data[:200])
    if header is None:
        raise FileFormatError(f"{path} is not a warpgrad checkpoint (no valid WARPGRAD-CHECKPOINT header)")
    payload = data[header.end() :]
    expected = int(header.group(2))
    if len(payload) != expected:
        raise FileFormatError(f"checkpoint {path} is truncated or padded: {len(payload)} bytes of data, not {expected}")
    if hashlib.sha256(payload).hexdigest() != header.group(1).decode():
        raise FileFormatError(f"checkpoint {path} is corrupted: its data does not match its SHA-256 digest")
    try:
        checkpoint = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a file with a valid digest that torch cannot read
        raise FileFormatError(f"cannot read checkpoint {path}: {one_line(error)[:300]}") from None
    missing = [k for k in keys if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise FileFormatError(f"{path} is not a complete warpgrad checkpoint (no {', '.join(map(repr, missing))})")
    return checkpoint


def check_config(checkpoint: dict[str, Any], expected: dict[str, Any], path: str | os.PathLike) -> None:
    """Raise FileFormatError naming the first field where ``checkpoint['config']`` differs from ``expected``."""
    config = checkpoint.get("config", {})
    for name in CONFIG_FIELDS:
        if config.get(name) != expected[name]:
            raise FileFormatError(
                f"checkpoint {path} was written with {name}={config.get(name)!r}, "
                f"not {name}={expected[name]!r}; resume with the same settings or use another --out"
            )
