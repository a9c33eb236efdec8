"""Tables in the docs, generated from committed results.

A Markdown file holds blocks such as::

    <!-- warpgrad report --format md results/sine-quick -->
    ...generated table...
    <!-- end report -->

The opening marker holds the arguments of ``warpgrad report`` (``--format``, ``--method M1,M2``,
``--against M`` and paths relative to the repository root); the block's content is the report, as
the command line prints it (formats other than ``md`` inside a fenced code block). Regenerate or
check the blocks with::

    python -m warpgrad.engine.docs_tables [--check] [--root DIR] FILE.md ...
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from warpgrad.engine.checkpoint import atomic_write_text
from warpgrad.engine.report import report_text
from warpgrad.errors import UsageError

_START = re.compile(r"^<!-- warpgrad report(?P<args>(?:[ \t][^\n]*?)?) -->[ \t]*\r?\n", re.MULTILINE)
_END = re.compile(r"^<!-- end report -->[ \t]*\r?$", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    """A report block: its marker's arguments and where its content lies in the text."""

    args: str
    start: int  # of the content, just after the opening marker's line
    end: int  # of the content, at the closing marker


def find_blocks(text: str) -> list[Block]:
    """The report blocks of ``text``, in order.

    Raises:
        UsageError: for an opening marker without a closing one (or one before the next block).
    """
    blocks = []
    for match in _START.finditer(text):
        end = _END.search(text, match.end())
        following = _START.search(text, match.end())
        if end is None or (following is not None and following.start() < end.start()):
            line = text.count("\n", 0, match.start()) + 1
            raise UsageError(f"line {line}: '<!-- warpgrad report{match['args']} -->' has no '<!-- end report -->'")
        blocks.append(Block(match["args"].strip(), match.end(), end.start()))
    return blocks


def _parse(args: str, root: Path) -> dict:
    """The keyword arguments of :func:`report_text` for a marker's ``args`` (``warpgrad report``'s)."""
    try:
        words = shlex.split(args)
    except ValueError as error:
        raise UsageError(f"'{args}': {error}") from None
    options: dict = {"paths": [], "fmt": "text", "methods": None, "against": None}
    names = {"--format": "fmt", "--method": "methods", "--against": "against"}
    index = 0
    while index < len(words):
        word = words[index]
        flag, equals, value = word.partition("=")
        if flag in names:
            if not equals:
                if index + 1 >= len(words):
                    raise UsageError(f"'{args}': {flag} needs a value")
                index, value = index + 1, words[index + 1]
            options[names[flag]] = value
        elif word.startswith("-"):
            raise UsageError(f"'{args}': unknown option {word}; use --format, --method or --against")
        else:
            options["paths"].append(root / word)
        index += 1
    if not options["paths"]:
        raise UsageError(f"'{args}': no results directory given")
    return options


def block_content(args: str, root: Path, newline: str = "\n") -> str:
    """The content of a block with marker arguments ``args``: the report, ending in a newline."""
    options = _parse(args, root)
    text = report_text(**options)
    if options["fmt"] != "md":
        text = f"```{options['fmt']}\n{text}\n```"
    return newline.join(text.split("\n")) + newline


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def render(text: str, root: Path) -> str:
    """``text`` with every report block's content regenerated; everything outside the blocks is kept."""
    pieces, position = [], 0
    for block in find_blocks(text):
        pieces += [text[position : block.start], block_content(block.args, Path(root), _newline(text))]
        position = block.end
    return "".join(pieces) + text[position:]


def check(paths: Sequence[str | Path], root: Path) -> list[str]:
    """The blocks of the Markdown files ``paths`` whose content is not what :func:`render` makes, as
    ``"FILE: block N (warpgrad report ARGS)"``; empty if all are up to date."""
    stale = []
    for path in paths:
        text = _read(Path(path))
        for number, block in enumerate(find_blocks(text), 1):
            if text[block.start : block.end] != block_content(block.args, Path(root), _newline(text)):
                stale.append(f"{path}: block {number} (warpgrad report {block.args})")
    return stale


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(" ".join(f"cannot read {path}: {error}".split())) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite (or with ``--check``, check) the report blocks of Markdown files; the exit status.

    0: done, or all blocks up to date; 1: ``--check`` found stale blocks; 2: a usage or file error.
    """
    parser = argparse.ArgumentParser(
        prog="python -m warpgrad.engine.docs_tables", description="Regenerate the report tables in Markdown files."
    )
    parser.add_argument("files", nargs="+", metavar="FILE.md", help="Markdown files with report blocks")
    parser.add_argument("--check", action="store_true", help="only check that the blocks are up to date")
    parser.add_argument("--root", default=".", help="the directory the blocks' paths are relative to (default: .)")
    options = parser.parse_args(argv)
    root = Path(options.root)
    try:
        if options.check:
            stale = check(options.files, root)
            for line in stale:
                print(f"stale: {line}")
            if stale:
                command = ["python", "-m", "warpgrad.engine.docs_tables", "--root", options.root, *options.files]
                print(f"regenerate them with: {shlex.join(command)}")
            return 1 if stale else 0
        for file in options.files:
            text = _read(Path(file))
            rendered = render(text, root)
            if rendered != text:
                atomic_write_text(file, rendered)
                print(f"updated {file}")
        return 0
    except UsageError as error:  # FileFormatError included
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
