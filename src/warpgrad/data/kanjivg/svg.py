"""KanjiVG's stroke SVGs: SVG path data → cubic chains, the installed files, and a character's strokes.

:func:`parse_path` reads SVG path data (``M L H V C S Q T Z``, absolute and relative, implicit
repetition) into cubic chains (``[3n+1, 2]`` tensors of n cubic Bézier segments) and
:func:`sample_chain` turns a chain into a polyline; :func:`kanjivg_dir` and :func:`kanji_status`
find the KanjiVG SVGs (by default those of the installed PyPI package ``kanjivg``), a cheap regex
scan reads a file's radical and stroke count, and :func:`load_strokes` returns a character's
strokes in KanjiVG's stroke order.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import torch
from torch import Tensor

from warpgrad.data.cache import DataError
from warpgrad.errors import UsageError

INSTALL_HINT = "pip install kanjivg"

# --------------------------------------------------------------------------------------------
# SVG path data → cubic chains

_ARITY = {"M": 2, "L": 2, "H": 1, "V": 1, "C": 6, "S": 4, "Q": 4, "T": 2, "Z": 0}
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_SEPARATORS = re.compile(r"[\s,]*")


def _tokens(d: str, source: str) -> list[str | float]:
    tokens: list[str | float] = []
    pos = _SEPARATORS.match(d, 0).end()  # type: ignore[union-attr]
    while pos < len(d):
        ch = d[pos]
        if ch in "+-.0123456789":
            m = _NUMBER.match(d, pos)
            if m is None:
                raise UsageError(f"{source}: bad number at offset {pos} of path data {d!r}")
            tokens.append(float(m.group()))
            pos = m.end()
        elif ch.isalpha():
            if ch.upper() not in _ARITY:
                raise UsageError(
                    f"{source}: unsupported SVG path command {ch!r} in {d!r}; supported: M L H V C S Q T Z "
                    "(and their relative lower-case forms)"
                )
            tokens.append(ch)
            pos += 1
        else:
            raise UsageError(f"{source}: unexpected character {ch!r} at offset {pos} of path data {d!r}")
        pos = _SEPARATORS.match(d, pos).end()  # type: ignore[union-attr]
    return tokens


def parse_path(d: str, source: str = "<path>") -> list[Tensor]:
    """Parse SVG path data into cubic chains, one per subpath.

    A chain is a float32 ``[3n+1, 2]`` tensor ``P0, C1, C2, P1, C1, C2, P2, …``: n cubic Bézier
    segments sharing end points. Lines and quadratics are converted to exact cubic equivalents.
    Supported commands: ``M L H V C S Q T Z`` and their relative forms, with implicit repetition
    (extra pairs after ``M``/``m`` are ``L``/``l``); ``S``/``T`` reflect the previous control point.

    Args:
        d: the ``d`` attribute, e.g. ``"M10,20c1,2,3,4,5,6s7,8,9,10"``.
        source: named in error messages (the file the path came from).

    Raises:
        ValueError: for an unknown command (``A``, ...) or malformed data, naming ``source``.

    Example:
        >>> parse_path("M0,0 H3")[0].tolist()
        [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]
    """
    tokens = _tokens(d, source)
    chains: list[list[tuple[float, float]]] = []
    chain: list[tuple[float, float]] | None = None
    x = y = start_x = start_y = 0.0
    ctrl: tuple[float, float] | None = None  # last cubic (C/S) or quadratic (Q/T) control point
    previous = ""  # upper-case command of the previous segment
    closed = False
    command: str | None = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if isinstance(token, str):
            command = token
            i += 1
            if command.upper() == "Z":
                if chain is None:
                    raise UsageError(f"{source}: path data must start with M or m, got {command!r} in {d!r}")
                if (x, y) != (start_x, start_y):
                    _line(chain, x, y, start_x, start_y)
                x, y, closed, previous = start_x, start_y, True, "Z"
                continue
        if command is None:
            raise UsageError(f"{source}: path data must start with M or m, got number {token} in {d!r}")
        upper = command.upper()
        n = _ARITY[upper]
        args = tokens[i : i + n]
        if n == 0 or len(args) < n or any(isinstance(a, str) for a in args):
            raise UsageError(f"{source}: command {command!r} needs {n} numbers at a time in {d!r}")
        i += n
        a = [float(v) for v in args]
        ox, oy = (x, y) if command.islower() else (0.0, 0.0)
        if upper == "M":
            x, y = ox + a[0], oy + a[1]
            start_x, start_y = x, y
            chain = [(x, y)]
            chains.append(chain)
            closed, previous, ctrl = False, "M", None
            command = "l" if command.islower() else "L"  # implicit repetition of a moveto is a lineto
            continue
        if chain is None:
            raise UsageError(f"{source}: path data must start with M or m, got {command!r} in {d!r}")
        if closed:  # drawing after Z starts a new subpath at the closed one's start
            chain = [(x, y)]
            chains.append(chain)
            closed = False
        if upper in "LHV":
            nx = ox + a[0] if upper in "LH" else x
            ny = (oy + a[1] if upper == "L" else oy + a[0]) if upper in "LV" else y
            _line(chain, x, y, nx, ny)
            x, y, ctrl = nx, ny, None
        elif upper in "CS":
            if upper == "C":
                c1 = (ox + a[0], oy + a[1])
                a = a[2:]
            else:
                c1 = (2 * x - ctrl[0], 2 * y - ctrl[1]) if previous in "CS" and ctrl is not None else (x, y)
            c2 = (ox + a[0], oy + a[1])
            x, y = ox + a[2], oy + a[3]
            chain += [c1, c2, (x, y)]
            ctrl = c2
        else:  # Q, T
            if upper == "Q":
                q = (ox + a[0], oy + a[1])
                a = a[2:]
            else:
                q = (2 * x - ctrl[0], 2 * y - ctrl[1]) if previous in "QT" and ctrl is not None else (x, y)
            nx, ny = ox + a[0], oy + a[1]
            chain += [(x + 2 / 3 * (q[0] - x), y + 2 / 3 * (q[1] - y))]
            chain += [(nx + 2 / 3 * (q[0] - nx), ny + 2 / 3 * (q[1] - ny)), (nx, ny)]
            x, y, ctrl = nx, ny, q
        previous = upper
    if not chains:
        raise UsageError(f"{source}: empty path data {d!r}")
    return [torch.tensor(c, dtype=torch.float32) for c in chains]


def _line(chain: list[tuple[float, float]], x0: float, y0: float, x1: float, y1: float) -> None:
    dx, dy = x1 - x0, y1 - y0
    chain += [(x0 + dx / 3, y0 + dy / 3), (x0 + 2 * dx / 3, y0 + 2 * dy / 3), (x1, y1)]


def _check_chain(chain: Tensor) -> None:
    if chain.ndim != 2 or chain.shape[1] != 2 or chain.shape[0] % 3 != 1:
        raise UsageError(f"a stroke must be a [3n+1, 2] cubic chain, got shape {tuple(chain.shape)}")


def sample_chain(chain: Tensor, points_per_segment: int = 8) -> Tensor:
    """Polyline ``[n·k+1, 2]`` through a ``[3n+1, 2]`` cubic chain, k points per Bézier segment.

    Example:
        >>> sample_chain(parse_path("M0,0 L3,0")[0], 2).tolist()
        [[0.0, 0.0], [1.5, 0.0], [3.0, 0.0]]
    """
    _check_chain(chain)
    if points_per_segment < 1:
        raise UsageError(f"points_per_segment must be ≥ 1, got {points_per_segment}")
    if chain.shape[0] == 1:
        return chain.clone()
    t = torch.arange(1, points_per_segment + 1, dtype=chain.dtype) / points_per_segment
    w = _bernstein(t)  # [4, k]
    segments = chain[:-1].reshape(-1, 3, 2)
    ends = torch.cat([segments, chain[3::3, None]], 1)  # [n, 4, 2]
    points = (w.T[None, :, :, None] * ends[:, None]).sum(2).reshape(-1, 2)
    return torch.cat([chain[:1], points])


def _bernstein(t: Tensor) -> Tensor:
    s = 1 - t
    return torch.stack([s * s * s, 3 * s * s * t, 3 * s * t * t, t * t * t])


# --------------------------------------------------------------------------------------------
# The KanjiVG files

_FILE = re.compile(r"^([0-9a-f]{5})\.svg$")
_FILES: dict[Path, dict[str, Path]] = {}
_SCANS: dict[Path, tuple[str | None, int]] = {}
_RADICAL_PRIORITY = {"general": 0, "tradit": 1, "nelson": 2, "jis": 3}
_G_TAG = re.compile(r"<g\b([^>]*)>")
_ATTRIBUTE = re.compile(r"([\w:.-]+)\s*=\s*\"([^\"]*)\"")
_PATH_TAG = re.compile(r"<path\b")


def kanjivg_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder of KanjiVG SVGs: ``root`` if given, else the installed ``kanjivg`` package's ``kanji/``.

    Raises:
        DataError: (a ValueError) ``kanjivg`` is not installed (``pip install kanjivg``) or the
            folder is missing.
    """
    if root is not None:
        path = Path(root).expanduser()
    else:
        try:
            path = Path(str(importlib.metadata.distribution("kanjivg").locate_file("kanji")))
        except importlib.metadata.PackageNotFoundError:
            raise DataError(f"KanjiVG is not installed (no 'kanjivg' package): {INSTALL_HINT}") from None
    if not path.is_dir():
        raise DataError(f"{path}: no KanjiVG folder of SVG files there ({INSTALL_HINT})")
    return path


def _files(directory: Path) -> dict[str, Path]:
    """Character → base SVG file (variant files such as ``04e00-Kaisho.svg`` are left out); cached."""
    if directory not in _FILES:
        found = {}
        for name in os.listdir(directory):
            m = _FILE.match(name)
            if m:
                found[chr(int(m.group(1), 16))] = directory / name
        _FILES[directory] = dict(sorted(found.items(), key=lambda kv: ord(kv[0])))
    return _FILES[directory]


def kanji_status(root: str | os.PathLike | None = None) -> str:
    """For the dataset registry: ``"present (N characters)"``, else ``"missing package: pip install kanjivg"``."""
    try:
        n = len(_files(kanjivg_dir(root)))
    except DataError:
        return f"missing package: {INSTALL_HINT}"
    if n == 0:
        return f"missing package: {INSTALL_HINT} (no SVG files in {kanjivg_dir(root)})"
    return f"present ({n} characters)"


kanjivg_status = kanji_status


def _stroke_section(text: str) -> str:
    start = text.find("kvg:StrokePaths")
    if start < 0:
        return ""
    end = text.find("kvg:StrokeNumbers", start)
    return text[start : end if end >= 0 else len(text)]


def _scan(path: Path) -> tuple[str | None, int]:
    """Cheap metadata from a regex pass over the file: (radical element or None, stroke count); cached.

    The radical is the ``kvg:element`` of a group carrying ``kvg:radical``, preferring the
    ``general`` radical, then ``tradit``, ``nelson``, ``jis``; the first such group in document order.
    """
    if path not in _SCANS:
        section = _stroke_section(path.read_text(encoding="utf-8"))
        best: tuple[int, str] | None = None
        for m in _G_TAG.finditer(section):
            attributes = dict(_ATTRIBUTE.findall(m.group(1)))
            kind, element = attributes.get("kvg:radical"), attributes.get("kvg:element")
            if kind is not None and element:
                rank = _RADICAL_PRIORITY.get(kind, len(_RADICAL_PRIORITY))
                if best is None or rank < best[0]:
                    best = (rank, element)
        _SCANS[path] = (None if best is None else best[1], len(_PATH_TAG.findall(section)))
    return _SCANS[path]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def load_strokes(character: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Tensor]:
    """A character's strokes as cubic chains (viewBox units), in KanjiVG's stroke order.

    Args:
        character: a single character (looked up in ``root`` / the installed package) or an SVG path.
        root: folder of KanjiVG SVGs; default: the installed ``kanjivg`` package.

    Raises:
        ValueError: unknown character, unreadable file, or an unsupported path command (naming the file).
    """
    if isinstance(character, str) and len(character) == 1:
        files = _files(kanjivg_dir(root))
        if character not in files:
            raise UsageError(f"character {character!r} (U+{ord(character):04X}) is not in KanjiVG")
        path = files[character]
    else:
        path = Path(character)
    try:
        svg = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise DataError(f"{path}: cannot read KanjiVG SVG ({e})") from e
    group = next(
        (g for g in svg.iter() if _local(g.tag) == "g" and g.get("id", "").startswith("kvg:StrokePaths")), None
    )
    if group is None:
        raise DataError(f"{path}: no StrokePaths group (<g id='kvg:StrokePaths_...'>)")
    strokes = [
        chain for el in group.iter() if _local(el.tag) == "path" for chain in parse_path(el.get("d", ""), str(path))
    ]
    if not strokes:
        raise DataError(f"{path}: no strokes in the StrokePaths group")
    return strokes
