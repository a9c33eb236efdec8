"""What produced a result: the resolved configuration, versions, commit, command and hardware.

Every results entry carries a ``provenance`` dict, so a number in a table can be traced to the
command that made it and rerun::

    {"command": "warpgrad run sine --method maml ...", "configuration": {...},
     "versions": {"warpgrad": ..., "torch": ..., "numpy": ..., "kanjivg": ..., "python": ...},
     "git": {"commit": "...", "dirty": false} | null, "device": "cpu", "threads": 2,
     "processes": 1, "platform": "Linux-...-x86_64"}
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("warpgrad", "torch", "numpy", "kanjivg")


@functools.cache
def versions() -> dict[str, str | None]:
    """Installed versions of warpgrad and what its numbers depend on (``None``: not installed);
    read once per process."""
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    found["python"] = platform.python_version()
    return found


@functools.cache
def git_state(path: str | Path | None = None) -> dict[str, Any] | None:
    """The commit of the git work tree holding ``path`` (default: this package's source) and
    whether it has uncommitted changes; ``None`` outside a git work tree or without git. Read once
    per process: the code that runs is the code imported at its start."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def command_line(argv: list[str] | None = None) -> str:
    """The command as a shell would take it: ``warpgrad ARGS`` for the CLI, else ``sys.argv``."""
    if argv is not None:
        return shlex.join(["warpgrad", *argv])
    return shlex.join(sys.argv)


def provenance(
    configuration: dict[str, Any], command: str | None = None, device: str = "cpu", processes: int = 1
) -> dict[str, Any]:
    """The provenance record of one method's results entry."""
    return {
        "command": command if command is not None else command_line(),
        "configuration": configuration,
        "versions": dict(versions()),
        "git": None if git_state() is None else dict(git_state()),
        "device": device,
        "threads": torch.get_num_threads(),
        "processes": processes,
        "platform": platform.platform(),
    }
