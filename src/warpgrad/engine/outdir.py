"""A run's output directory: checked before anything is written, never overwritten by accident,
and left as it was when setup fails.

- :func:`check_out_dir`: the path can be a directory (not empty, not a file, no file above it).
- :func:`check_not_existing`: a method with a checkpoint or a results entry in the directory is
  only run again with ``resume`` or ``overwrite``.
- :func:`removed_on_failure`: what a run creates before its first method finishes (the directory,
  method directories, step-0 checkpoints) is removed again if setup raises.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

from warpgrad.engine.checkpoint import checkpoint_path
from warpgrad.errors import UsageError


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as a Path, if a run can write there.

    Raises:
        UsageError: naming the path, if it is empty, is a file, lies under a file, or cannot be
            created or written.
    """
    text = os.fspath(out_dir)
    if not text.strip():
        raise UsageError("--out is empty; give a directory for the run's files")
    path = Path(text)
    for candidate in [path, *path.parents]:
        if candidate.exists():
            if not candidate.is_dir():
                what = "is" if candidate == path else f"lies under {candidate}, which is"
                raise UsageError(f"output directory {path} {what} a file, not a directory; use another --out")
            if not os.access(candidate, os.W_OK | os.X_OK):
                raise UsageError(f"output directory {path}: {candidate} is not writable; use another --out")
            break
    return path


def existing_methods(out_dir: Path, methods: list[str], results: dict[str, Any] | None) -> dict[str, str]:
    """Methods of ``methods`` that already have a run in ``out_dir``, with what was found."""
    found: dict[str, str] = {}
    for name in methods:
        if checkpoint_path(out_dir, name).exists():
            found[name] = str(checkpoint_path(out_dir, name))
        elif results is not None and name in results.get("methods", {}):
            found[name] = f"an entry in {out_dir / 'results.json'}"
    return found


def check_not_existing(out_dir: Path, methods: list[str], results: dict[str, Any] | None) -> None:
    """Raise UsageError if one of ``methods`` already ran in ``out_dir``."""
    found = existing_methods(out_dir, methods, results)
    if found:
        name, where = next(iter(found.items()))
        others = f" (and {', '.join(list(found)[1:])})" if len(found) > 1 else ""
        raise UsageError(
            f"{out_dir} already holds a run of {name}{others}: {where}; continue it with --resume, "
            "replace it with --overwrite, or use another --out"
        )


@contextlib.contextmanager
def removed_on_failure(
    out_dir: Path, methods: list[str], enabled: bool = True, keep_if: Callable[[], bool] | None = None
) -> Iterator[None]:
    """Remove what did not exist before the block (``out_dir`` and the parents created with it, or
    ``out_dir/METHOD`` directories) if the block raises; with ``enabled=False`` (other ranks) do
    nothing, and nothing either when ``keep_if()`` says what the block left is worth keeping (a
    checkpoint to resume from)."""
    if out_dir.exists():
        created = [out_dir / m for m in methods if not (out_dir / m).exists()]
    else:
        first_new = out_dir.absolute()
        while not first_new.parent.exists():
            first_new = first_new.parent
        created = [first_new]
    try:
        yield
    except BaseException:
        if enabled and not (keep_if is not None and keep_if()):
            for path in created:
                shutil.rmtree(path, ignore_errors=True)
        raise


def start_fresh(record: Any, methods: list[str], overwrite: bool) -> None:
    """Before a fresh run of ``methods`` into ``record``'s directory: refuse methods that already
    ran there, or with ``overwrite`` drop their entries."""
    if overwrite:
        record.remove(methods)
    else:
        check_not_existing(record.out_dir, methods, record.results)
