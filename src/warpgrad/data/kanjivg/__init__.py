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

# The ``_name as _name`` imports re-export private names that tests/test_kanjivg.py and
# benchmarks/kanjivg_render.py use through this package; rendering is in .raster, the files in .svg.
from warpgrad.data.kanjivg.dataset import KanjiDataset, load_kanjivg
from warpgrad.data.kanjivg.raster import _CHUNK_ELEMENTS as _CHUNK_ELEMENTS
from warpgrad.data.kanjivg.raster import DEFAULT_JITTER, MARGIN, THICKNESS, VIEWBOX, Jitter, render, render_batch
from warpgrad.data.kanjivg.raster import _draw as _draw
from warpgrad.data.kanjivg.raster import _Plan as _Plan
from warpgrad.data.kanjivg.raster import _plan as _plan
from warpgrad.data.kanjivg.svg import _FILES as _FILES
from warpgrad.data.kanjivg.svg import _SCANS as _SCANS
from warpgrad.data.kanjivg.svg import INSTALL_HINT as INSTALL_HINT
from warpgrad.data.kanjivg.svg import _files as _files
from warpgrad.data.kanjivg.svg import _scan as _scan
from warpgrad.data.kanjivg.svg import kanji_status, kanjivg_dir, kanjivg_status, load_strokes, parse_path, sample_chain

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
