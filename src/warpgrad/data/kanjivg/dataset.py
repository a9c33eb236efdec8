"""The KanjiVG :class:`~warpgrad.data.base.ClassDataset`: characters as classes, jittered drawings.

:class:`KanjiDataset` picks a (seeded) subset of the characters, groups them by radical or stroke
count, splits by whole groups, and renders each class's drawings on first access (batched, kept in
memory as uint8, and on disk for other processes: :mod:`~warpgrad.data.kanjivg.render_cache`);
:func:`load_kanjivg` builds it for the dataset registry.
"""

from __future__ import annotations

import hashlib
import os
from typing import Literal, Sequence

import torch
from torch import Tensor

from warpgrad.data.base import check_splits, split_by_fraction
from warpgrad.data.kanjivg.raster import DEFAULT_JITTER, MARGIN, MAX_SIZE, THICKNESS, Jitter, _draw, _Plan, _plan
from warpgrad.data.kanjivg.render_cache import RenderCache, open_render_cache, svg_digest
from warpgrad.data.kanjivg.svg import _files, _scan, kanjivg_dir, load_strokes
from warpgrad.errors import UsageError

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
    batched call) and kept in memory as uint8, so ``images`` returns multiples of 1/255. With the
    disk cache (the default), the first access to a class reads the drawings that any process
    rendered before with the same parameters, renders all the others of the class at once, and
    writes them back, one file per class.

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
        disk_cache: keep rendered drawings on disk, shared by processes: True for
            ``data_root()/kanjivg/renders``, a folder, or False for none. The environment variable
            ``WARPGRAD_NO_RENDER_CACHE=1`` turns it off everywhere.

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
        disk_cache: bool | str | os.PathLike = True,
    ):
        for arg, value in (("drawings", drawings), ("image_size", image_size), ("min_group_size", min_group_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{arg} must be a positive int, got {value!r}")
        if image_size > MAX_SIZE:
            raise UsageError(f"image_size must be at most {MAX_SIZE}, got {image_size}")
        if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1):
            raise UsageError(f"n_classes must be a positive int or None, got {n_classes!r}")
        if group_by not in ("radical", "strokes"):
            raise UsageError(f"group_by must be 'radical' or 'strokes', got {group_by!r}")
        splits = {"train": 0.7, "val": 0.1, "test": 0.2} if splits is None else dict(splits)
        if not splits or any(not f >= 0 for f in splits.values()) or sum(splits.values()) <= 0:
            raise UsageError(f"splits must map split names to fractions ≥ 0 with a positive sum, got {splits}")
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
                raise UsageError(f"characters not in KanjiVG ({self._dir}): {bad[:10]}{' …' if len(bad) > 10 else ''}")
            if len(set(pool)) != len(pool):
                raise UsageError("characters contains duplicates")
        if n_classes is None:
            chosen = self._filter_groups(pool, min_group_size)
        else:
            order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed)).tolist()
            chosen = self._first_with_groups([pool[i] for i in order], n_classes, min_group_size)
            if len(chosen) < n_classes:
                raise UsageError(
                    f"n_classes={n_classes} but only {len(chosen)} characters of the pool of {len(pool)} are in "
                    f"groups ({group_by}) of at least min_group_size={min_group_size}"
                )
            rank = {c: i for i, c in enumerate(pool)}
            chosen.sort(key=rank.__getitem__)
        if not chosen:
            raise UsageError(f"no characters left: no group ({group_by}) has min_group_size={min_group_size} classes")
        self.classes = chosen
        self.groups = [self._group(c) for c in chosen]
        self.splits = split_by_fraction(len(chosen), splits, seed=seed, groups=self.groups)
        check_splits(self.name, self.splits, len(chosen))
        empty = [s for s, f in splits.items() if f > 0 and not self.splits[s]]
        if empty:
            raise UsageError(
                f"{self.name}: split(s) {empty} got no classes: {len(set(self.groups))} groups for splits {splits}; "
                "use more classes or other fractions"
            )
        self._cache: dict[int, Tensor] = {}  # class → uint8 [drawings, 1, H, W], allocated on first access
        self._done: dict[int, Tensor] = {}  # class → bool [drawings]: which drawings are rendered
        self._plans: dict[int, _Plan] = {}
        self._disk = open_render_cache(disk_cache, image_size, jitter, seed)
        self._svgs: dict[int, str] = {}  # class → digest of its SVG file, for the disk cache

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
            raise UsageError(f"class index {c} outside 0..{len(self.classes) - 1}")

    def images(self, c: int, index: Tensor | Sequence[int] | None = None) -> Tensor:
        """Drawings ``index`` (all when None) of class ``c``: float32 ``[len(index), 1, H, W]`` in [0, 1]."""
        self._check_class(c)
        c = int(c)
        idx = torch.arange(self.drawings) if index is None else torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if idx.numel() and (int(idx.min()) < -self.drawings or int(idx.max()) >= self.drawings):
            raise UsageError(f"drawing index out of range 0..{self.drawings - 1}: {idx.tolist()}")
        idx = idx % self.drawings
        if c not in self._cache:
            self._cache[c] = torch.zeros(self.drawings, *self.image_shape, dtype=torch.uint8)
            self._done[c] = torch.zeros(self.drawings, dtype=torch.bool)
            if self._disk is not None:
                self._read_disk(c, self._disk)
        missing = sorted(set(idx[~self._done[c][idx]].tolist()))
        if missing:
            if self._disk is not None:  # the whole class, so that its file is written once
                missing = (~self._done[c]).nonzero()[:, 0].tolist()
            self._cache[c][missing] = self._render(c, missing)
            self._done[c][missing] = True
            if self._disk is not None:
                self._disk.save(ord(self.classes[c]), self._svg_digest(c), self._cache[c], self._done[c])
        return self._cache[c][idx].float() / 255.0

    def _svg_digest(self, c: int) -> str:
        if c not in self._svgs:
            self._svgs[c] = svg_digest(self._files[self.classes[c]])
        return self._svgs[c]

    def _read_disk(self, c: int, disk: RenderCache) -> None:
        """Take the drawings of class ``c`` that the disk cache holds (those up to ``drawings``)."""
        found = disk.load(ord(self.classes[c]), self._svg_digest(c), self.image_shape)
        if found is not None:
            images, done = found[0][: self.drawings], found[1][: self.drawings]
            self._cache[c][: len(done)][done] = images[done]
            self._done[c][: len(done)] = done

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
