"""The errors warpgrad raises on purpose, and what the command line makes of them.

- :class:`UsageError` (a ``ValueError``): the user's input is wrong: an unknown name, a value
  out of range, a path that cannot be an output directory. ``warpgrad`` exits with 2.
- :class:`FileFormatError` (a ``UsageError``): a checkpoint or results file is corrupted,
  truncated, incomplete, or belongs to another run. Exit 2.
- :class:`TrainingDiverged` (an ``ArithmeticError``): a non-finite value in training or
  evaluation. Exit 1; the last checkpoint holds the state before it.

Any other exception is a bug: the command line prints one line saying so and where it wrote
the traceback, and exits with 1.
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_FAILURE = 1  # a run failed (non-finite values, the machine refused, a bug)
EXIT_USAGE = 2  # the user's input: a bad value, path or file
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """Bad input from the user (a name, a value, a path); the message names it and what is allowed."""


class FileFormatError(UsageError):
    """A checkpoint or results file that cannot be used; the message names the file and what is wrong."""


class TrainingDiverged(ArithmeticError):
    """A non-finite value in meta-training or evaluation; the message names the method, step and value."""


def one_line(text: str) -> str:
    """``text`` for a one-line message: terminal escape sequences and control characters removed,
    whitespace collapsed."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", str(text))
    text = re.sub(r"[\x00-\x1f\x7f]", " ", text)
    return " ".join(text.split())
