"""KanjiVG as an offline, Omniglot-like many-class image dataset.

`KanjiVG <https://kanjivg.tagaini.net>`_ draws each of ~6,700 characters (kanji, kana, a few
Latin letters and digits) as SVG strokes in a 109×109 box, in the canonical stroke order. The PyPI
package ``kanjivg`` installs them as ``kanji/<5-hex-digit codepoint>.svg``, so this dataset needs
no network. Because there is one drawing per character, the drawings of a class are *synthetic*:
the strokes are rendered with random, recognisable deformations (noise on the Bézier control
points, a small affine per stroke, a global affine, a random pen thickness).

Pieces, each usable on its own:

* :func:`parse_path` reads SVG path data (``M L H V C S Q T Z``, absolute and relative, implicit
  repetition) into *cubic chains*: ``[3n+1, 2]`` tensors ``P0 C C P1 C C P2 …`` of n cubic Bézier
  segments; :func:`sample_chain` turns a chain into a polyline.
* :func:`load_strokes` returns a character's strokes (one chain per subpath, in stroke order).
* :func:`render` / :func:`render_batch` rasterise strokes in torch: anti-aliased coverage from the
  distance of each pixel centre to the flattened strokes, optionally jittered by a
  ``torch.Generator`` (:class:`Jitter`). The same generator state gives the same pixels.
* :class:`KanjiDataset` is a :class:`~warpgrad.data.base.ClassDataset`: classes are characters,
  groups their radical (or stroke count), splits by whole groups.

Example:
    >>> ds = KanjiDataset(n_classes=200, drawings=20, image_size=28, seed=0)
    >>> ds.images(0, [0, 1]).shape
    torch.Size([2, 1, 28, 28])

References: KanjiVG, © Ulrich Apel, CC BY-SA 3.0, https://kanjivg.tagaini.net.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch
from torch import Tensor

from warpgrad.data.base import check_splits, split_by_fraction
from warpgrad.data.cache import DataError

__all__ = [
    "DEFAULT_JITTER",
    "Jitter",
    "KanjiDataset",
    "MARGIN",
    "THICKNESS",
    "VIEWBOX",
    "kanji_status",
    "kanjivg_dir",
    "kanjivg_status",
    "load_kanjivg",
    "load_strokes",
    "parse_path",
    "render",
    "render_batch",
    "sample_chain",
]

VIEWBOX = 109.0  # KanjiVG's viewBox is 0 0 109 109
THICKNESS = 6.0  # pen width in viewBox units (KanjiVG's own stroke-width is 3; 6 reads well at 28 px)
MARGIN = 6.0  # viewBox units added on each side before fitting the box to the image
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
                raise ValueError(f"{source}: bad number at offset {pos} of path data {d!r}")
            tokens.append(float(m.group()))
            pos = m.end()
        elif ch.isalpha():
            if ch.upper() not in _ARITY:
                raise ValueError(
                    f"{source}: unsupported SVG path command {ch!r} in {d!r}; supported: M L H V C S Q T Z "
                    "(and their relative lower-case forms)"
                )
            tokens.append(ch)
            pos += 1
        else:
            raise ValueError(f"{source}: unexpected character {ch!r} at offset {pos} of path data {d!r}")
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
                    raise ValueError(f"{source}: path data must start with M or m, got {command!r} in {d!r}")
                if (x, y) != (start_x, start_y):
                    _line(chain, x, y, start_x, start_y)
                x, y, closed, previous = start_x, start_y, True, "Z"
                continue
        if command is None:
            raise ValueError(f"{source}: path data must start with M or m, got number {token} in {d!r}")
        upper = command.upper()
        n = _ARITY[upper]
        args = tokens[i : i + n]
        if n == 0 or len(args) < n or any(isinstance(a, str) for a in args):
            raise ValueError(f"{source}: command {command!r} needs {n} numbers at a time in {d!r}")
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
            raise ValueError(f"{source}: path data must start with M or m, got {command!r} in {d!r}")
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
        raise ValueError(f"{source}: empty path data {d!r}")
    return [torch.tensor(c, dtype=torch.float32) for c in chains]


def _line(chain: list[tuple[float, float]], x0: float, y0: float, x1: float, y1: float) -> None:
    dx, dy = x1 - x0, y1 - y0
    chain += [(x0 + dx / 3, y0 + dy / 3), (x0 + 2 * dx / 3, y0 + 2 * dy / 3), (x1, y1)]


def _check_chain(chain: Tensor) -> None:
    if chain.ndim != 2 or chain.shape[1] != 2 or chain.shape[0] % 3 != 1:
        raise ValueError(f"a stroke must be a [3n+1, 2] cubic chain, got shape {tuple(chain.shape)}")


def sample_chain(chain: Tensor, points_per_segment: int = 8) -> Tensor:
    """Polyline ``[n·k+1, 2]`` through a ``[3n+1, 2]`` cubic chain, k points per Bézier segment.

    Example:
        >>> sample_chain(parse_path("M0,0 L3,0")[0], 2).tolist()
        [[0.0, 0.0], [1.5, 0.0], [3.0, 0.0]]
    """
    _check_chain(chain)
    if points_per_segment < 1:
        raise ValueError(f"points_per_segment must be ≥ 1, got {points_per_segment}")
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
# Rendering


@dataclass(frozen=True)
class Jitter:
    """Magnitudes of the random deformations applied to each rendered drawing.

    Lengths are in KanjiVG viewBox units (the box is 109 wide; at 28 px one unit is ~0.24 px).
    Every range below is sampled uniformly in ``[-m, m]`` except the point noise, which is Gaussian.

    Attributes:
        point_noise: std of Gaussian noise on each Bézier end point; its two neighbouring control
            points move with it, so joins stay smooth.
        handle_noise: std of extra Gaussian noise on each inner control point (bends the curve).
        stroke_rotation: per stroke, rotation about the stroke's centroid, in degrees.
        stroke_scale: per stroke, relative isotropic scale change.
        stroke_shear: per stroke, horizontal shear factor.
        stroke_translation: per stroke, shift in x and in y.
        rotation: whole character, rotation about the box centre, in degrees.
        scale: whole character, relative isotropic scale change.
        aspect: whole character, relative change of width against height.
        shear: whole character, horizontal shear factor.
        translation: whole character, shift in x and in y.
        thickness: relative change of the pen width.
    """

    point_noise: float = 1.2
    handle_noise: float = 1.2
    stroke_rotation: float = 4.0
    stroke_scale: float = 0.08
    stroke_shear: float = 0.08
    stroke_translation: float = 2.0
    rotation: float = 6.0
    scale: float = 0.08
    aspect: float = 0.08
    shear: float = 0.12
    translation: float = 4.0
    thickness: float = 0.3


DEFAULT_JITTER = Jitter()
_TOLERANCE = 0.1  # max distance (pixels) between a Bézier curve and its flattened polyline
_CHUNK_ELEMENTS = 1 << 17  # images × pixels × segments per vectorised step (bounds memory, stays in cache)
_BAND = 8  # rows per step; segments out of reach of the band are skipped


@dataclass
class _Plan:
    """Everything about a character's rendering that does not depend on the random draw."""

    points: Tensor  # [N, 2] all chains' points, concatenated
    stroke_of: Tensor  # [N] stroke index of each point
    anchor_of: Tensor  # [N] the end point each point moves with (itself for end points)
    is_handle: Tensor  # [N] 1.0 for inner control points
    centroid: Tensor  # [n_strokes, 2]
    basis_index: Tensor  # [4, M] point indices of the Bézier each polyline vertex lies on
    basis_weight: Tensor  # [4, M] Bernstein weights of each polyline vertex
    seg_a: Tensor  # [S] polyline segments: vertex indices of their two ends
    seg_b: Tensor
    size: int
    scale: float  # pixels per viewBox unit
    margin: float
    thickness: float


def _plan(strokes: Sequence[Tensor], size: int, jitter: Jitter | None, thickness: float, margin: float) -> _Plan:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if not strokes:
        raise ValueError("no strokes to render")
    if not thickness > 0:
        raise ValueError(f"thickness must be > 0, got {thickness}")
    scale = size / (VIEWBOX + 2 * margin)
    # curvature allowance for the jitter, so jittered curves are flattened finely enough
    bend = 0.0 if jitter is None else 2 * (jitter.point_noise + jitter.handle_noise)
    grow = 1.0 if jitter is None else (1 + jitter.scale) * (1 + jitter.aspect) * (1 + jitter.stroke_scale)
    points, stroke_of, anchor_of, is_handle, centroids = [], [], [], [], []
    index: list[list[int]] = [[], [], [], []]
    weight: list[list[float]] = [[], [], [], []]
    seg_a: list[int] = []
    seg_b: list[int] = []
    offset = vertex = 0
    for s, chain in enumerate(strokes):
        chain = torch.as_tensor(chain, dtype=torch.float32)
        _check_chain(chain)
        n = chain.shape[0]
        points.append(chain)
        centroids.append(chain.mean(0))
        stroke_of += [s] * n
        anchor_of += [offset + (k if k % 3 == 0 else (k - 1 if k % 3 == 1 else k + 1)) for k in range(n)]
        is_handle += [float(k % 3 != 0) for k in range(n)]
        first_vertex = vertex
        if n == 1:  # a lone point: a dot
            for j in range(4):
                index[j].append(offset)
                weight[j].append(1.0 if j == 0 else 0.0)
            vertex += 1
        xy = chain.tolist()
        for b in range(0, n - 1, 3):
            (x0, y0), (x1, y1), (x2, y2), (x3, y3) = xy[b : b + 4]
            second = max(math.hypot(x0 - 2 * x1 + x2, y0 - 2 * y1 + y2), math.hypot(x1 - 2 * x2 + x3, y1 - 2 * y2 + y3))
            pieces = math.ceil(math.sqrt(0.75 * (second * grow + bend) * scale / _TOLERANCE))
            pieces = min(max(pieces, 1), 64)
            ts = [k / pieces for k in range(0 if b == 0 else 1, pieces + 1)]
            for t in ts:
                u = 1 - t
                for j, w in enumerate((u * u * u, 3 * u * u * t, 3 * u * t * t, t * t * t)):
                    index[j].append(offset + b + j)
                    weight[j].append(w)
            vertex += len(ts)
        last_vertex = vertex - 1
        if last_vertex == first_vertex:
            seg_a.append(first_vertex)
            seg_b.append(first_vertex)
        else:
            seg_a += range(first_vertex, last_vertex)
            seg_b += range(first_vertex + 1, last_vertex + 1)
        offset += n
    return _Plan(
        points=torch.cat(points),
        stroke_of=torch.tensor(stroke_of),
        anchor_of=torch.tensor(anchor_of),
        is_handle=torch.tensor(is_handle),
        centroid=torch.stack(centroids),
        basis_index=torch.tensor(index),
        basis_weight=torch.tensor(weight, dtype=torch.float32),
        seg_a=torch.tensor(seg_a),
        seg_b=torch.tensor(seg_b),
        size=size,
        scale=scale,
        margin=margin,
        thickness=thickness,
    )


def _draw(plan: _Plan, generators: Sequence[torch.Generator | None], jitter: Jitter | None) -> Tensor:
    """Jitter (per drawing, from its own generator) and rasterise: ``[B, 1, size, size]``.

    Each drawing's random numbers come from its generator alone, and all later arithmetic is
    element-wise (no fused or reduction-order-dependent ops except ``amin``), so a drawing's pixels
    do not depend on which other drawings share the batch.
    """
    n_points, n_strokes = plan.points.shape[0], plan.centroid.shape[0]
    noise, stroke_u, global_u = [], [], []
    for g in generators:
        if g is None or jitter is None:
            noise.append(torch.zeros(n_points, 2))
            stroke_u.append(torch.zeros(n_strokes, 5))
            global_u.append(torch.zeros(7))
        else:  # fixed order of draws: point noise, per-stroke affines, global affine + thickness
            noise.append(torch.randn(n_points, 2, generator=g))
            stroke_u.append(torch.rand(n_strokes, 5, generator=g) * 2 - 1)
            global_u.append(torch.rand(7, generator=g) * 2 - 1)
    z, su, gu = torch.stack(noise), torch.stack(stroke_u), torch.stack(global_u)
    j = jitter if jitter is not None else Jitter(*[0.0] * 12)
    disp = z[:, plan.anchor_of] * j.point_noise + z * (plan.is_handle[:, None] * j.handle_noise)
    x = plan.points[:, 0] + disp[..., 0]  # [B, N]
    y = plan.points[:, 1] + disp[..., 1]

    # a small affine per stroke, about its centroid: rotation · shear · scale, then a shift
    rot = su[..., 0] * math.radians(j.stroke_rotation)
    sc = 1 + su[..., 1] * j.stroke_scale
    sh = su[..., 2] * j.stroke_shear
    m00, m01, m10, m11 = _affine(rot, sc, sc, sh)
    k = plan.stroke_of
    cx, cy = plan.centroid[k, 0], plan.centroid[k, 1]
    dx, dy = x - cx, y - cy
    x = cx + m00[:, k] * dx + m01[:, k] * dy + su[:, k, 3] * j.stroke_translation
    y = cy + m10[:, k] * dx + m11[:, k] * dy + su[:, k, 4] * j.stroke_translation

    # a global affine about the box centre, then viewBox → pixel coordinates
    rot = gu[:, 0:1] * math.radians(j.rotation)
    sc = 1 + gu[:, 1:2] * j.scale
    asp = 1 + gu[:, 2:3] * j.aspect
    m00, m01, m10, m11 = _affine(rot, sc * asp, sc / asp, gu[:, 3:4] * j.shear)
    c = VIEWBOX / 2
    dx, dy = x - c, y - c
    x = (c + m00 * dx + m01 * dy + gu[:, 4:5] * j.translation + plan.margin) * plan.scale
    y = (c + m10 * dx + m11 * dy + gu[:, 5:6] * j.translation + plan.margin) * plan.scale
    half_width = (1 + gu[:, 6] * j.thickness) * (plan.thickness * plan.scale / 2)

    # flatten the Béziers: polyline vertices are fixed Bernstein combinations of control points
    w, idx = plan.basis_weight, plan.basis_index
    vx = x[:, idx[0]] * w[0] + x[:, idx[1]] * w[1] + x[:, idx[2]] * w[2] + x[:, idx[3]] * w[3]
    vy = y[:, idx[0]] * w[0] + y[:, idx[1]] * w[1] + y[:, idx[2]] * w[2] + y[:, idx[3]] * w[3]
    return _rasterise(vx, vy, plan.seg_a, plan.seg_b, half_width, plan.size)


def _affine(rot: Tensor, sx: Tensor, sy: Tensor, shear: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Entries of R(rot) · [[1, shear], [0, 1]] · diag(sx, sy)."""
    cos, sin = torch.cos(rot), torch.sin(rot)
    return cos * sx, (cos * shear - sin) * sy, sin * sx, (sin * shear + cos) * sy


def _rasterise(vx: Tensor, vy: Tensor, seg_a: Tensor, seg_b: Tensor, half_width: Tensor, size: int) -> Tensor:
    """Coverage ``clamp(half_width + 0.5 − distance, 0, 1)`` of each pixel centre by the polylines."""
    ax, ay = vx[:, seg_a], vy[:, seg_a]
    abx, aby = vx[:, seg_b] - ax, vy[:, seg_b] - ay
    inv = 1 / (abx * abx + aby * aby).clamp_min(1e-12)
    low, high = torch.minimum(ay, ay + aby), torch.maximum(ay, ay + aby)
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    batch, n_seg = ax.shape
    out = torch.zeros(batch, size, size)
    step = max(1, _CHUNK_ELEMENTS // (_BAND * size * n_seg))
    for b in range(0, batch, step):
        sl = slice(b, b + step)
        reach = float(half_width[sl].max()) + 0.5 + 1e-2  # beyond this distance coverage is 0
        for r in range(0, size, _BAND):
            # Only segments within reach of this band of rows can ink it. Dropping the others
            # leaves every pixel's value unchanged (bit for bit): a dropped segment is farther
            # than ``reach`` from every pixel of the band, so it can neither be the nearest
            # segment of an inked pixel nor ink a pixel the kept ones leave blank.
            rows = centres[r : r + _BAND]
            near = ((low[sl] <= rows[-1] + reach) & (high[sl] >= rows[0] - reach)).any(0).nonzero()[:, 0]
            if near.numel() == 0:
                continue
            sax, say, sbx, sby, sinv = ax[sl, near], ay[sl, near], abx[sl, near], aby[sl, near], inv[sl, near]
            apx = centres[None, :, None] - sax[:, None, :]  # [b, W, S]: column offsets
            apy = rows[None, :, None] - say[:, None, :]  # [b, rows, S]: row offsets
            t = (apx * sbx[:, None, :])[:, None] + (apy * sby[:, None, :])[:, :, None]  # [b, rows, W, S]
            t = t.mul_(sinv[:, None, None, :]).clamp_(0, 1)
            dx = apx[:, None] - t * sbx[:, None, None, :]
            dy = apy[:, :, None] - t.mul_(sby[:, None, None, :])
            d2 = dx.mul_(dx).add_(dy.mul_(dy)).amin(-1)
            out[sl, r : r + _BAND] = (half_width[sl, None, None] + 0.5 - d2.sqrt_()).clamp_(0, 1)
    return out[:, None]


def render_batch(
    strokes: Sequence[Tensor],
    generators: Sequence[torch.Generator | None],
    size: int = 28,
    jitter: Jitter | None = DEFAULT_JITTER,
    thickness: float = THICKNESS,
    margin: float = MARGIN,
) -> Tensor:
    """Render one character once per generator: ``[len(generators), 1, size, size]``.

    Drawing ``b`` is jittered from ``generators[b]`` alone (``None``: the undeformed character),
    so it equals ``render(strokes, size, generators[b], ...)`` bit for bit.
    """
    if len(generators) == 0:
        return torch.zeros(0, 1, size, size)
    if all(g is None for g in generators):
        jitter = None  # nothing is jittered: flatten as finely as the undeformed curves need
    return _draw(_plan(strokes, size, jitter, thickness, margin), generators, jitter)


def render(
    strokes: Sequence[Tensor],
    size: int = 28,
    generator: torch.Generator | None = None,
    jitter: Jitter | None = DEFAULT_JITTER,
    thickness: float = THICKNESS,
    margin: float = MARGIN,
) -> Tensor:
    """Rasterise strokes (cubic chains in viewBox units) to a float ``[1, size, size]`` image.

    Ink is 1, background 0, edges anti-aliased: a pixel's value is
    ``clamp(w/2 + 0.5 − d, 0, 1)`` with ``d`` the distance (in pixels) from its centre to the
    nearest stroke and ``w`` the pen width in pixels. The box ``[-margin, 109 + margin]²`` is fitted
    to the image. With a ``generator``, the drawing is deformed as described by ``jitter`` (none
    without a generator, or with ``jitter=None``); the same generator state gives identical pixels.

    Example:
        >>> image = render(load_strokes("永"), 28, torch.Generator().manual_seed(0))
        >>> image.shape
        torch.Size([1, 28, 28])
    """
    return render_batch(strokes, [generator], size, jitter, thickness, margin)[0]


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
            raise ValueError(f"character {character!r} (U+{ord(character):04X}) is not in KanjiVG")
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


# --------------------------------------------------------------------------------------------
# The dataset


def _drawing_seed(seed: int, codepoint: int, drawing: int) -> int:
    digest = hashlib.blake2b(f"kanjivg/{seed}/{codepoint}/{drawing}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class KanjiDataset:
    """KanjiVG characters as classes, each with ``drawings`` jittered renderings.

    Implements :class:`~warpgrad.data.base.ClassDataset`. Groups (the "alphabets") are the
    character's radical element (from ``kvg:radical``; ``"<n> strokes"`` for the 257 files
    without one: kana, Latin letters, digits, punctuation) or, with ``group_by="strokes"``, the
    stroke count. Splits assign whole groups (:func:`~warpgrad.data.base.split_by_fraction`).

    Drawing ``j`` of a character is rendered with a generator seeded from
    ``(seed, codepoint, j)``, so it is the same pixels whatever the access order or the subset the
    character is in. Drawings are rendered on first access (all missing ones of a class in one
    batched call) and kept in memory as uint8, so ``images`` returns multiples of 1/255.

    Args:
        n_classes: keep this many characters, a random subset chosen by ``seed`` (all when None):
            going through a seeded shuffle of the pool, the first ``n_classes`` characters whose
            group reaches ``min_group_size`` members among those taken, so the guarantee of
            ``min_group_size`` holds in the subset too.
        drawings: renderings per character.
        image_size: images are ``[1, image_size, image_size]``.
        seed: chooses the subset, the splits and the jitter.
        group_by: ``"radical"`` or ``"strokes"``.
        min_group_size: every group in the dataset has at least this many classes; smaller
            groups are dropped.
        characters: the pool of characters (default: every base file of KanjiVG, by codepoint).
        splits: fraction of groups per split.
        jitter: deformation magnitudes (:class:`Jitter`); None renders every drawing undeformed.
        root: folder of KanjiVG SVGs; default: the installed ``kanjivg`` package.

    Example:
        >>> ds = KanjiDataset(characters=["漢", "海", "品"], splits={"train": 1.0})
        >>> ds.groups, ds.images(0).shape
        (['氵', '氵', '口'], torch.Size([20, 1, 28, 28]))
    """

    name = "kanjivg"

    def __init__(
        self,
        n_classes: int | None = None,
        drawings: int = 20,
        image_size: int = 28,
        seed: int = 0,
        group_by: Literal["radical", "strokes"] = "radical",
        min_group_size: int = 1,
        characters: list[str] | None = None,
        splits: dict[str, float] | None = None,
        *,
        jitter: Jitter | None = DEFAULT_JITTER,
        root: str | os.PathLike | None = None,
    ):
        for arg, value in (("drawings", drawings), ("image_size", image_size), ("min_group_size", min_group_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive int, got {value!r}")
        if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1):
            raise ValueError(f"n_classes must be a positive int or None, got {n_classes!r}")
        if group_by not in ("radical", "strokes"):
            raise ValueError(f"group_by must be 'radical' or 'strokes', got {group_by!r}")
        splits = {"train": 0.7, "val": 0.1, "test": 0.2} if splits is None else dict(splits)
        if not splits or any(not f >= 0 for f in splits.values()) or sum(splits.values()) <= 0:
            raise ValueError(f"splits must map split names to fractions ≥ 0 with a positive sum, got {splits}")
        self._dir = kanjivg_dir(root)
        self._files = _files(self._dir)
        self.group_by = group_by
        self.seed = seed
        self.drawings = drawings
        self.jitter = jitter
        self.image_shape = (1, image_size, image_size)

        if characters is None:
            pool = list(self._files)
        else:
            pool = list(characters)
            bad = [c for c in pool if not isinstance(c, str) or c not in self._files]
            if bad:
                raise ValueError(f"characters not in KanjiVG ({self._dir}): {bad[:10]}{' …' if len(bad) > 10 else ''}")
            if len(set(pool)) != len(pool):
                raise ValueError("characters contains duplicates")
        if n_classes is None:
            chosen = self._filter_groups(pool, min_group_size)
        else:
            order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed)).tolist()
            chosen = self._first_with_groups([pool[i] for i in order], n_classes, min_group_size)
            if len(chosen) < n_classes:
                raise ValueError(
                    f"n_classes={n_classes} but only {len(chosen)} characters of the pool of {len(pool)} are in "
                    f"groups ({group_by}) of at least min_group_size={min_group_size}"
                )
            rank = {c: i for i, c in enumerate(pool)}
            chosen.sort(key=rank.__getitem__)
        if not chosen:
            raise ValueError(f"no characters left: no group ({group_by}) has min_group_size={min_group_size} classes")
        self.classes = chosen
        self.groups = [self._group(c) for c in chosen]
        self.splits = split_by_fraction(len(chosen), splits, seed=seed, groups=self.groups)
        check_splits(self.name, self.splits, len(chosen))
        empty = [s for s, f in splits.items() if f > 0 and not self.splits[s]]
        if empty:
            raise ValueError(
                f"{self.name}: split(s) {empty} got no classes: {len(set(self.groups))} groups for splits {splits}; "
                "use more classes or other fractions"
            )
        self._cache: dict[int, Tensor] = {}  # class → uint8 [drawings, 1, H, W], allocated on first access
        self._done: dict[int, Tensor] = {}  # class → bool [drawings]: which drawings are rendered
        self._plans: dict[int, _Plan] = {}

    def _group(self, character: str) -> str:
        radical, n_strokes = _scan(self._files[character])
        if self.group_by == "radical" and radical is not None:
            return radical
        return f"{n_strokes} stroke{'' if n_strokes == 1 else 's'}"

    def _filter_groups(self, pool: list[str], min_group_size: int) -> list[str]:
        if min_group_size == 1:
            return pool
        groups = [self._group(c) for c in pool]
        sizes: dict[str, int] = {}
        for g in groups:
            sizes[g] = sizes.get(g, 0) + 1
        return [c for c, g in zip(pool, groups) if sizes[g] >= min_group_size]

    def _first_with_groups(self, shuffled: list[str], n: int, min_group_size: int) -> list[str]:
        """The first characters of ``shuffled`` whose groups reach ``min_group_size``, exactly ``n`` if possible.

        Only the characters looked at are scanned, so a small subset with ``min_group_size=1``
        reads only its own files.
        """
        members: dict[str, list[str]] = {}
        total = 0  # characters in groups that have reached min_group_size
        for c in shuffled:
            if total == n:
                break
            bucket = members.setdefault(self._group(c), [])
            if len(bucket) + 1 < min_group_size:
                bucket.append(c)
            elif len(bucket) + 1 == min_group_size:
                if total + min_group_size <= n:  # the group becomes eligible only if it fits
                    bucket.append(c)
                    total += min_group_size
            else:
                bucket.append(c)
                total += 1
        return [c for bucket in members.values() if len(bucket) >= min_group_size for c in bucket]

    def count(self, c: int) -> int:
        self._check_class(c)
        return self.drawings

    def _check_class(self, c: int) -> None:
        if not 0 <= int(c) < len(self.classes):
            raise ValueError(f"class index {c} outside 0..{len(self.classes) - 1}")

    def images(self, c: int, index: Tensor | Sequence[int] | None = None) -> Tensor:
        """Drawings ``index`` (all when None) of class ``c``: float32 ``[len(index), 1, H, W]`` in [0, 1]."""
        self._check_class(c)
        c = int(c)
        idx = torch.arange(self.drawings) if index is None else torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if idx.numel() and (int(idx.min()) < -self.drawings or int(idx.max()) >= self.drawings):
            raise ValueError(f"drawing index out of range 0..{self.drawings - 1}: {idx.tolist()}")
        idx = idx % self.drawings
        if c not in self._cache:
            self._cache[c] = torch.zeros(self.drawings, *self.image_shape, dtype=torch.uint8)
            self._done[c] = torch.zeros(self.drawings, dtype=torch.bool)
        missing = sorted(set(idx[~self._done[c][idx]].tolist()))
        if missing:
            self._cache[c][missing] = self._render(c, missing)
            self._done[c][missing] = True
        return self._cache[c][idx].float() / 255.0

    def _render(self, c: int, drawings: list[int]) -> Tensor:
        """Render drawings of class ``c`` as uint8, in one batched call."""
        if c not in self._plans:
            strokes = load_strokes(self._files[self.classes[c]])
            self._plans[c] = _plan(strokes, self.image_shape[1], self.jitter, THICKNESS, MARGIN)
        cp = ord(self.classes[c])
        gens = [torch.Generator().manual_seed(_drawing_seed(self.seed, cp, j)) for j in drawings]
        return (_draw(self._plans[c], gens, self.jitter) * 255).round_().to(torch.uint8)

    def __repr__(self) -> str:
        sizes = {k: len(v) for k, v in self.splits.items()}
        return (
            f"KanjiDataset({len(self.classes)} classes in {len(set(self.groups))} groups by {self.group_by}, "
            f"{self.drawings} drawings, {self.image_shape[1]}px, splits {sizes})"
        )


def load_kanjivg(**kwargs) -> KanjiDataset:
    """``KanjiDataset(**kwargs)``, for the dataset registry."""
    return KanjiDataset(**kwargs)
