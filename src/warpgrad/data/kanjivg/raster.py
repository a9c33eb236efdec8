"""Rendering KanjiVG strokes in torch: the random deformations (:class:`Jitter`) and the rasteriser.

:func:`render` / :func:`render_batch` rasterise strokes (cubic chains in viewBox units) to
anti-aliased coverage from the distance of each pixel centre to the flattened strokes, optionally
jittered by a ``torch.Generator`` (noise on the Bézier control points, a small affine per stroke,
a global affine, a random pen thickness). The same generator state gives the same pixels, and a
drawing's pixels do not depend on which other drawings share the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from warpgrad.data.kanjivg.svg import _check_chain
from warpgrad.errors import UsageError

VIEWBOX = 109.0  # KanjiVG's viewBox is 0 0 109 109
THICKNESS = 6.0  # pen width in viewBox units (KanjiVG's own stroke-width is 3; 6 reads well at 28 px)
MARGIN = 6.0  # viewBox units added on each side before fitting the box to the image
MAX_SIZE = 2048  # the rasteriser's float32 pixel arithmetic is exact up to this image size
# Bump whenever any drawing's pixels change (rasteriser, jitter, flattening, the dataset's per-drawing
# seeds): it is part of the key of the disk cache of rendered drawings (kanjivg/render_cache.py).
RENDER_VERSION = 1

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
_CHUNK_ELEMENTS = 1 << 18  # (pixel, segment) pairs per vectorised step: bounds memory, stays in cache


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
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
        raise UsageError(f"size must be an int in 1..{MAX_SIZE}, got {size!r}")
    if not strokes:
        raise UsageError("no strokes to render")
    if not thickness > 0:
        raise UsageError(f"thickness must be > 0, got {thickness}")
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
    element-wise (no fused ops; the only reduction, each pixel's minimum distance, is exact in any
    order), so a drawing's pixels do not depend on which other drawings share the batch.
    """
    n_points, n_strokes = plan.points.shape[0], plan.centroid.shape[0]
    noise, stroke_u, global_u = [], [], []
    for g in generators:
        if g is None or jitter is None:  # uniform draws of ½ become 0 below
            noise.append(torch.zeros(n_points, 2))
            stroke_u.append(torch.full((n_strokes, 5), 0.5))
            global_u.append(torch.full((7,), 0.5))
        else:  # fixed order of draws: point noise, per-stroke affines, global affine + thickness
            noise.append(torch.randn(n_points, 2, generator=g))
            stroke_u.append(torch.rand(n_strokes, 5, generator=g))
            global_u.append(torch.rand(7, generator=g))
    z, su, gu = torch.stack(noise), torch.stack(stroke_u) * 2 - 1, torch.stack(global_u) * 2 - 1
    j = jitter if jitter is not None else Jitter(*[0.0] * 12)
    # index_select rather than advanced indexing throughout: the same values, several times faster
    disp = z.index_select(1, plan.anchor_of) * j.point_noise + z * (plan.is_handle[:, None] * j.handle_noise)
    x = plan.points[:, 0] + disp[..., 0]  # [B, N]
    y = plan.points[:, 1] + disp[..., 1]

    # a small affine per stroke, about its centroid: rotation · shear · scale, then a shift
    rot = su[..., 0] * math.radians(j.stroke_rotation)
    sc = 1 + su[..., 1] * j.stroke_scale
    sh = su[..., 2] * j.stroke_shear
    k = plan.stroke_of
    m00, m01, m10, m11, tx, ty = torch.stack([*_affine(rot, sc, sc, sh), su[..., 3], su[..., 4]]).index_select(2, k)
    cx, cy = plan.centroid.index_select(0, k).unbind(1)
    dx, dy = x - cx, y - cy
    x = cx + m00 * dx + m01 * dy + tx * j.stroke_translation
    y = cy + m10 * dx + m11 * dy + ty * j.stroke_translation

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
    w, n_vertices = plan.basis_weight, plan.basis_weight.shape[1]
    x0, x1, x2, x3 = x.index_select(1, plan.basis_index.flatten()).view(-1, 4, n_vertices).unbind(1)
    y0, y1, y2, y3 = y.index_select(1, plan.basis_index.flatten()).view(-1, 4, n_vertices).unbind(1)
    vx = x0 * w[0] + x1 * w[1] + x2 * w[2] + x3 * w[3]
    vy = y0 * w[0] + y1 * w[1] + y2 * w[2] + y3 * w[3]
    return _rasterise(vx, vy, plan.seg_a, plan.seg_b, half_width, plan.size)


def _affine(rot: Tensor, sx: Tensor, sy: Tensor, shear: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Entries of R(rot) · [[1, shear], [0, 1]] · diag(sx, sy)."""
    cos, sin = torch.cos(rot), torch.sin(rot)
    return cos * sx, (cos * shear - sin) * sy, sin * sx, (sin * shear + cos) * sy


def _rasterise(vx: Tensor, vy: Tensor, seg_a: Tensor, seg_b: Tensor, half_width: Tensor, size: int) -> Tensor:
    """Coverage ``clamp(half_width + 0.5 − distance, 0, 1)`` of each pixel centre by the polylines.

    The distance is the minimum over (pixel, segment) pairs, and only the pairs that can ink a
    pixel are computed: each segment's bounding box grown by the reach ``half_width + 0.5`` (plus
    a margin for rounding) covers every pixel centre closer to it than that. Leaving out the other
    pairs changes no pixel, bit for bit: a pixel's nearest segment is always among its pairs when
    its coverage is above 0, and without pairs, or with only far ones, its coverage is 0 as well.
    The pairs are enumerated segment by segment, with pixel arithmetic that is exact in float32
    for images up to ``MAX_SIZE`` wide, and reduced with a scatter-min.
    """
    ax, ay = vx.index_select(1, seg_a), vy.index_select(1, seg_a)
    bx, by = vx.index_select(1, seg_b), vy.index_select(1, seg_b)
    abx, aby = bx - ax, by - ay
    inv = 1 / (abx * abx + aby * aby).clamp_min(1e-12)
    batch, n_seg = ax.shape
    # pixel i has its centre at i + ½: it can be inked by a segment whose box is within reach of i + ½
    reach = (half_width + (0.5 + 1e-2))[:, None]
    x0 = (torch.minimum(ax, bx) - reach - 0.5).ceil_().clamp_(0, size)
    x1 = (torch.maximum(ax, bx) + reach - 0.5).floor_().clamp_(-1, size - 1) + 1
    y0 = (torch.minimum(ay, by) - reach - 0.5).ceil_().clamp_(0, size)
    y1 = (torch.maximum(ay, by) + reach - 0.5).floor_().clamp_(-1, size - 1) + 1
    width = (x1 - x0).clamp_(min=0)
    pairs = (width * (y1 - y0).clamp_(min=0)).long()  # [B, S]
    segments = torch.stack([ax, ay, abx, aby, inv, x0, y0, width], 1)  # [B, 8, S]
    d2 = torch.full((batch, size * size), math.inf)
    per_drawing = pairs.sum(1).tolist()
    start = 0
    while start < batch:  # as many drawings per step as fit in _CHUNK_ELEMENTS pairs (at least one)
        stop, total = start + 1, per_drawing[start]
        while stop < batch and total + per_drawing[stop] <= _CHUNK_ELEMENTS:
            total, stop = total + per_drawing[stop], stop + 1
        _nearest(segments[start:stop], pairs[start:stop].flatten(), size, d2[start:stop].view(-1))
        start = stop
    return (half_width[:, None, None] + 0.5 - d2.view(batch, size, size).sqrt_()).clamp_(0, 1)[:, None]


def _nearest(segments: Tensor, pairs: Tensor, size: int, out: Tensor) -> None:
    """Lower ``out`` (flat ``[b·size·size]`` squared distances) to each pixel's squared distance to
    the segments of its pairs: ``segments[d, :, s]`` is ``(ax, ay, abx, aby, 1/|ab|², x0, y0,
    width)`` of segment ``s`` of drawing ``d``, ``pairs[d·S + s]`` the number of pixels of its box."""
    n_seg = segments.shape[2]
    seg = torch.repeat_interleave(pairs)  # [P]: the (drawing, segment) of each pair
    first = (torch.cumsum(pairs, 0) - pairs).index_select(0, seg)
    local = torch.arange(seg.numel()).sub_(first).float()  # the pair's rank in its segment's box
    sax, say, sbx, sby, sinv, sx0, sy0, swidth = segments.transpose(0, 1).flatten(1).index_select(1, seg)
    row = (local / swidth).floor_()  # exact: small integers
    px = local.sub_(row * swidth).add_(sx0)
    py = row.add_(sy0)
    # the arithmetic of a (pixel, segment) distance, in the same order for every pixel
    apx = px + 0.5 - sax
    apy = py + 0.5 - say
    t = (apx * sbx).add_(apy * sby).mul_(sinv).clamp_(0, 1)
    dx = apx - t * sbx
    dy = apy - t.mul_(sby)
    drawing = torch.div(seg, n_seg, rounding_mode="floor")
    pixel = (drawing * size + py.long()) * size + px.long()
    out.scatter_reduce_(0, pixel, dx.mul_(dx).add_(dy.mul_(dy)), "amin")


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
