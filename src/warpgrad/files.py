"""Files that are never half-written, and the processes that write them.

- :func:`atomic_write`: the content goes to a temporary file ``.NAME.PID.XXXX.tmp`` in the
  destination's directory, is flushed and ``fsync``-ed, then replaces the destination with
  :func:`os.replace`. A crash or an exception mid-write leaves the previous file intact.
- :func:`remove_stale_temp_files`: deletes the temporary files of writers that were killed
  (whose process is gone).
- :func:`locked`: an exclusive lock on a directory, for read-merge-write cycles of processes
  sharing it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], durable: bool = True) -> None:
    """Write ``path`` atomically: ``write(file)`` fills a temporary file that replaces ``path``.

    The temporary file lives in the same directory (so :func:`os.replace` is atomic), is
    flushed and (``durable``) ``fsync``-ed before the replace, and is removed if ``write`` raises.
    ``durable=False`` is for caches whose readers verify what they read: readers still never see
    a partial file, but one written just before a machine crash may be lost or empty.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
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


_TEMP_FILE = re.compile(r"\..+\.([0-9]+)\.[^.]+\.tmp")


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of writers that no longer run in ``directory`` and its
    subdirectories (one level); return what was removed."""
    directory = Path(directory)
    removed = []
    for folder in [directory, *(d for d in directory.iterdir() if d.is_dir())] if directory.is_dir() else []:
        for tmp in folder.glob(".*.tmp"):
            match = _TEMP_FILE.fullmatch(tmp.name)
            if match is None or process_alive(int(match.group(1))):
                continue
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def process_alive(pid: int) -> bool:
    """Whether another process ``pid`` runs on this machine (this process counts as not running)."""
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
