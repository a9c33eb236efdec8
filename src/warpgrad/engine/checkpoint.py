"""Checkpoints and atomic file writes.

Every file the engine writes goes through :func:`atomic_write`: the content is written to a
temporary file in the destination's directory, flushed and ``fsync``-ed, then moved over the
destination with :func:`os.replace`. A crash or an exception mid-write leaves the previous file
intact and no temporary file behind.

A checkpoint is a plain dict (tensors, ints, floats, strings, lists, dicts) serialised with
:func:`torch.save` behind a one-line header that carries the SHA-256 digest and the length of
the serialised bytes::

    WARPGRAD-CHECKPOINT 2 sha256=<64 hex digits> bytes=<n>\n<torch.save bytes>

Loading checks the header, the length and the digest before ``torch.load(..., weights_only=True)``
(which never runs pickled code), so a truncated file or any changed byte is refused with a
one-line :class:`~warpgrad.errors.FileFormatError` naming the file.

Temporary files are named ``.NAME.PID.XXXX.tmp``; :func:`remove_stale_temp_files` deletes those
whose process is gone (a writer killed mid-write).

:func:`locked` serialises read-merge-write cycles of processes sharing an output directory.

Example:
    >>> save_checkpoint(path, {"step": 3, "config": {"seed": 0}})
    >>> load_checkpoint(path)["step"]
    3
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import torch

from warpgrad.errors import FileFormatError, one_line

CONFIG_FIELDS = ("experiment", "method", "profile", "seed", "settings")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` atomically: ``write(file)`` fills a temporary file that replaces ``path``.

    The temporary file lives in the same directory (so :func:`os.replace` is atomic), is
    flushed and ``fsync``-ed before the replace, and is removed if ``write`` raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
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


MAGIC = b"WARPGRAD-CHECKPOINT 2 "
_HEADER = re.compile(rb"WARPGRAD-CHECKPOINT 2 sha256=([0-9a-f]{64}) bytes=([0-9]{1,15})\n")
CHECKPOINT_KEYS = ("config", "step")


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


def load_checkpoint(path: str | os.PathLike, keys: tuple[str, ...] = CHECKPOINT_KEYS) -> dict[str, Any]:
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


_TEMP_FILE = re.compile(r"\..+\.([0-9]+)\.[^.]+\.tmp")


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of writers that no longer run in ``directory`` and its
    subdirectories (one level); return what was removed."""
    directory = Path(directory)
    removed = []
    for folder in [directory, *(d for d in directory.iterdir() if d.is_dir())] if directory.is_dir() else []:
        for tmp in folder.glob(".*.tmp"):
            match = _TEMP_FILE.fullmatch(tmp.name)
            if match is None or _process_alive(int(match.group(1))):
                continue
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is not writing while it cleans up
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@contextlib.contextmanager
def locked(directory: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (its ``.warpgrad.lock`` file) for the block."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".warpgrad.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def check_config(checkpoint: dict[str, Any], expected: dict[str, Any], path: str | os.PathLike) -> None:
    """Raise FileFormatError naming the first field where ``checkpoint['config']`` differs from ``expected``."""
    config = checkpoint.get("config", {})
    for name in CONFIG_FIELDS:
        if config.get(name) != expected[name]:
            raise FileFormatError(
                f"checkpoint {path} was written with {name}={config.get(name)!r}, "
                f"not {name}={expected[name]!r}; resume with the same settings or use another --out"
            )
