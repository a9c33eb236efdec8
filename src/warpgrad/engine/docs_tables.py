"""Tables in the docs, generated from committed results and from the code.

A Markdown file holds blocks such as::

    <!-- warpgrad report --format md results/sine-quick -->
    ...generated table...
    <!-- end report -->

The opening marker holds the arguments of ``warpgrad report`` (``--format``, ``--method M1,M2``,
``--against M`` and paths relative to the repository root); the block's content is the report, as
the command line prints it (formats other than ``md`` inside a fenced code block).

A ``paper-profile`` block holds the table of an experiment's ``paper`` profile next to the
paper's settings, from the experiment's record (:mod:`warpgrad.experiments.papers`)::

    <!-- warpgrad paper-profile omniglot-multishot -->
    ...generated table...
    <!-- end paper-profile -->

Regenerate or check the blocks with::

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

KINDS = ("report", "paper-profile")
_START = re.compile(
    r"^<!-- warpgrad (?P<kind>report|paper-profile)(?P<args>(?:[ \t][^\n]*?)?) -->[ \t]*\r?\n", re.MULTILINE
)
_END = {kind: re.compile(rf"^<!-- end {kind} -->[ \t]*\r?$", re.MULTILINE) for kind in KINDS}


@dataclass(frozen=True)
class Block:
    """A generated block: its marker's arguments and where its content lies in the text."""

    args: str
    start: int  # of the content, just after the opening marker's line
    end: int  # of the content, at the closing marker
    kind: str = "report"  # or "paper-profile"


def find_blocks(text: str) -> list[Block]:
    """The generated blocks of ``text`` (report and paper-profile), in order.

    Raises:
        UsageError: for an opening marker without its closing one (or one before the next block).
    """
    blocks = []
    for match in _START.finditer(text):
        kind = match["kind"]
        end = _END[kind].search(text, match.end())
        following = _START.search(text, match.end())
        if end is None or (following is not None and following.start() < end.start()):
            line = text.count("\n", 0, match.start()) + 1
            raise UsageError(f"line {line}: '<!-- warpgrad {kind}{match['args']} -->' has no '<!-- end {kind} -->'")
        blocks.append(Block(match["args"].strip(), match.end(), end.start(), kind))
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


def paper_profile_content(args: str) -> str:
    """The table of a ``paper-profile`` block: its one argument is a registered experiment."""
    from warpgrad.experiments import EXPERIMENTS
    from warpgrad.experiments.papers import paper_record, table

    words = args.split()
    if len(words) != 1:
        raise UsageError(f"'warpgrad paper-profile {args}': expected one experiment name")
    if words[0] not in EXPERIMENTS:
        raise UsageError(f"'warpgrad paper-profile {args}': unknown experiment; allowed: {', '.join(EXPERIMENTS)}")
    return table(paper_record(words[0]), EXPERIMENTS[words[0]].profile("paper"))


def block_content(args: str, root: Path, newline: str = "\n", kind: str = "report") -> str:
    """The content of a block of ``kind`` with marker arguments ``args``: the report (or the
    paper-profile table), ending in a newline."""
    if kind == "paper-profile":
        text = paper_profile_content(args)
        return newline.join(text.split("\n")) + newline
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
        pieces += [text[position : block.start], block_content(block.args, Path(root), _newline(text), block.kind)]
        position = block.end
    return "".join(pieces) + text[position:]


def check(paths: Sequence[str | Path], root: Path) -> list[str]:
    """The blocks of the Markdown files ``paths`` whose content is not what :func:`render` makes, as
    ``"FILE: block N (warpgrad KIND ARGS)"``; empty if all are up to date."""
    stale = []
    for path in paths:
        text = _read(Path(path))
        for number, block in enumerate(find_blocks(text), 1):
            if text[block.start : block.end] != block_content(block.args, Path(root), _newline(text), block.kind):
                stale.append(f"{path}: block {number} (warpgrad {block.kind} {block.args})")
    return stale


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(" ".join(f"cannot read {path}: {error}".split())) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite (or with ``--check``, check) the generated blocks of Markdown files; the exit status.

    0: done, or all blocks up to date; 1: ``--check`` found stale blocks; 2: a usage or file error.
    """
    parser = argparse.ArgumentParser(
        prog="python -m warpgrad.engine.docs_tables",
        description="Regenerate the report and paper-profile tables in Markdown files.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE.md", help="Markdown files with generated blocks")
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
