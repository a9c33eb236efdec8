"""Where datasets live on disk, and how they get there safely: download, verify, extract, cache.

Every step is atomic, so that an interrupted run (Ctrl-C, a killed job, a full disk) never leaves
something that a later run would take for valid data:

* :func:`download` writes to a temporary file in the destination's directory, verifies its
  checksum, then moves it into place with :func:`os.replace`. A failed or corrupt download leaves
  nothing at ``dest``.
* :func:`extract_zip` extracts into a temporary sibling directory, writes a completion marker
  last, then renames the directory into place. A target without the marker is treated as absent
  (and removed on the next try); temporary directories left by killed runs are cleaned up.
* :func:`save_tensors` writes decoded datasets as a ``.pt`` file atomically; :func:`load_tensors`
  reads it with ``torch.load(weights_only=True)``, so a cache file never runs pickled code.

All failures that a user can fix are :class:`DataError` (a ``ValueError``) whose message names the
file, and for checksummed files the expected and the actual checksum.

Example:
    >>> path = download(url, data_root() / "omniglot" / "images_background.zip", expected_md5)
    >>> target = extract_zip(path, data_root() / "omniglot" / "images_background", "images_background/")
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import torch

from warpgrad.errors import UsageError
from warpgrad.files import atomic_write, process_alive, remove_stale_temp_files

COMPLETE_MARKER = ".warpgrad-complete"
_CHUNK = 1 << 20


class DataError(UsageError):
    """A dataset file is missing, corrupt, truncated or not in the expected format."""


def data_root() -> Path:
    """The directory datasets are stored in.

    ``$WARPGRAD_DATA`` if set, else ``$XDG_CACHE_HOME/warpgrad``, else ``~/.cache/warpgrad``.
    """
    if os.environ.get("WARPGRAD_DATA"):
        return Path(os.environ["WARPGRAD_DATA"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "warpgrad"
    return Path.home() / ".cache" / "warpgrad"


def resolve_root(root: str | os.PathLike | None) -> Path:
    """``root`` as a Path, or :func:`data_root` when it is None."""
    return data_root() if root is None else Path(root).expanduser()


def file_digest(path: str | os.PathLike, algorithm: str = "md5", uncompressed: bool = False) -> str:
    """Hex digest of a file's bytes (of its gunzipped bytes when ``uncompressed``)."""
    try:
        h = hashlib.new(algorithm)
    except ValueError:
        raise UsageError(
            f"unknown checksum algorithm {algorithm!r}; use one of {sorted(hashlib.algorithms_available)}"
        ) from None
    opener = gzip.open if uncompressed else open
    try:
        with opener(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        if isinstance(e, FileNotFoundError):
            raise DataError(f"{path}: file not found") from e
        raise DataError(f"{path}: cannot read ({'gzip ' if uncompressed else ''}{e})") from e
    return h.hexdigest()


def verify(path: str | os.PathLike, expected: str, algorithm: str = "md5", uncompressed: bool = False) -> None:
    """Raise :class:`DataError` unless the file's checksum is ``expected``.

    Args:
        path: the file.
        expected: hex digest (case-insensitive).
        algorithm: any :mod:`hashlib` name (``"md5"``, ``"sha256"``, ...).
        uncompressed: checksum the gunzipped content instead of the file's bytes (for ``.gz``
            files that were recompressed by a redistributor: same content, different bytes).
    """
    problem = _mismatch(file_digest(path, algorithm, uncompressed), expected, algorithm, uncompressed)
    if problem:
        raise DataError(f"{path}: {problem}; delete it and try again")


def _mismatch(actual: str, expected: str, algorithm: str, uncompressed: bool) -> str | None:
    if actual.lower() == expected.lower():
        return None
    what = f"uncompressed {algorithm}" if uncompressed else algorithm
    return (
        f"checksum mismatch: expected {what} {expected.lower()}, got {actual} "
        "(the file is corrupt, truncated or a different version)"
    )


def download(
    url: str,
    dest: str | os.PathLike,
    expected: str,
    algorithm: str = "md5",
    uncompressed: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` and verify it; nothing is left at ``dest`` unless it verifies.

    The data goes to a temporary file in ``dest``'s directory, which is checked with
    :func:`verify` and then moved over ``dest`` with :func:`os.replace`. Network errors become a
    :class:`DataError` naming the URL and where to put the file by hand.

    Returns:
        ``dest`` as a Path.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(dest.parent)  # downloads of killed processes
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.{os.getpid()}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
        except (OSError, ValueError, http.client.HTTPException) as e:
            raise DataError(
                f"cannot download {url} ({getattr(e, 'reason', e)}); without network, obtain that file "
                f"by hand and put it at {dest}"
            ) from e
        problem = _mismatch(file_digest(tmp, algorithm, uncompressed), expected, algorithm, uncompressed)
        if problem:
            raise DataError(f"{url} (for {dest}): {problem}; nothing was saved")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def is_complete(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` was fully extracted by :func:`extract_zip` (its marker exists)."""
    return (Path(directory) / COMPLETE_MARKER).is_file()


def _partial_prefix(target: Path) -> str:
    return f".{target.name}.partial-"


def _clean_partials(target: Path) -> None:
    """Remove temporary extraction directories of ``target`` left by processes no longer alive."""
    prefix = _partial_prefix(target)
    if not target.parent.is_dir():
        return
    for leftover in target.parent.iterdir():
        if not leftover.name.startswith(prefix):
            continue
        pid = leftover.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and process_alive(int(pid)):
            continue  # another process on this machine is extracting right now
        shutil.rmtree(leftover, ignore_errors=True)


def extract_zip(zip_path: str | os.PathLike, target_dir: str | os.PathLike, strip_prefix: str = "") -> Path:
    """Extract a zip archive into ``target_dir`` atomically.

    Extraction happens in a temporary sibling directory; a completion marker is written last and
    the directory is then renamed to ``target_dir``. A ``target_dir`` that exists without the
    marker (from an interrupted run or a foreign copy) is removed first; a complete one is kept
    as it is.

    Args:
        zip_path: the archive (verify it first).
        target_dir: where its content goes.
        strip_prefix: a leading folder every member must start with, removed from the member
            paths (``"images_background/"`` puts ``images_background/Latin/...`` at
            ``target_dir/Latin/...``).

    Returns:
        ``target_dir`` as a Path.
    """
    zip_path, target = Path(zip_path), Path(target_dir)
    _clean_partials(target)
    if is_complete(target):
        return target
    if target.exists() or target.is_symlink():
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{_partial_prefix(target)}{os.getpid()}-"))
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                _extract_members(archive, zip_path, tmp, strip_prefix)
        except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as e:
            raise DataError(f"{zip_path}: not a readable zip archive ({e}); delete it and try again") from e
        except FileNotFoundError as e:
            if not Path(zip_path).exists():
                raise DataError(f"{zip_path}: file not found") from e
            raise
        (tmp / COMPLETE_MARKER).write_text(f"extracted from {zip_path.name}\n")
        try:
            os.replace(tmp, target)
        except OSError:
            if not is_complete(target):  # lost a race to another process: theirs is as good
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _extract_members(archive: zipfile.ZipFile, zip_path: Path, out: Path, strip_prefix: str) -> None:
    root = out.resolve()
    for info in archive.infolist():
        name = info.filename
        if name.startswith("__MACOSX/"):
            continue
        if strip_prefix:
            if not name.startswith(strip_prefix):
                raise DataError(f"{zip_path}: member {name!r} is not under {strip_prefix!r}; unexpected layout")
            name = name[len(strip_prefix) :]
        if not name:
            continue
        dest = (out / name).resolve()
        if root not in dest.parents and dest != root:
            raise DataError(f"{zip_path}: member {info.filename!r} would extract outside the target directory")
        if info.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)


def save_tensors(path: str | os.PathLike, obj: dict[str, Any]) -> None:
    """Save a dict of tensors, strings, numbers and lists atomically with :func:`torch.save`
    (:func:`warpgrad.files.atomic_write`: on any error ``path`` is untouched)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_tensors(path: str | os.PathLike) -> dict[str, Any] | None:
    """Load a file written by :func:`save_tensors`; None when it is absent or unreadable.

    An unreadable cache is not an error: the caller rebuilds it from the source files.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    return obj if isinstance(obj, dict) else None
