"""A disk cache of rendered KanjiVG drawings, shared by processes, so each drawing is rendered once per machine.

Rendering a class's drawings costs milliseconds, and a run meets thousands of classes anew in every
process (each ``--nproc`` rank, each seed, each resumed run). :class:`~warpgrad.data.kanjivg.KanjiDataset`
keeps what it renders in a :class:`RenderCache`:

* Layout: ``<root>/<key>/<codepoint>.pt`` (root ``data_root()/kanjivg/renders`` by default), ``key``
  a hash of everything besides the character that determines the pixels (:func:`render_key`),
  spelled out in ``<root>/<key>/key.json``. One file per class holds the uint8 images
  ``[n, 1, H, W]``, a ``done`` mask ``[n]`` (drawing ``j`` is in the file where ``done[j]``), the
  full key, the digest of the character's SVG file and a digest of the pixels.
* Every write is atomic (a temporary file in the same folder, then :func:`os.replace`) and its
  read-merge-write cycle holds the key directory's lock (:func:`warpgrad.files.locked`), so
  processes rendering the same class at the same time leave one whole file with the union of their
  drawings. Where locks are not available, the last writer wins; its file is whole all the same.
  Written with ``atomic_write(durable=False)``: nothing is ``fsync``-ed (that took a third of a first
  process's time): a file that a crash of the machine leaves empty or partial fails its checks.
* A file that cannot be read, was made for another key or SVG, or fails its digest is ignored: the
  class is rendered again and the file replaced. Deleting ``<root>`` at any time is safe.

``WARPGRAD_NO_RENDER_CACHE=1`` turns the cache off in every process (``disk_cache=False`` in one
dataset).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor

from warpgrad.data.cache import data_root, load_tensors
from warpgrad.data.kanjivg import raster, svg
from warpgrad.data.kanjivg.raster import MARGIN, RENDER_VERSION, THICKNESS, VIEWBOX, Jitter
from warpgrad.errors import UsageError
from warpgrad.files import atomic_write, atomic_write_text, locked, remove_stale_temp_files

FORMAT = 1  # the layout of a class file
OFF_VARIABLE = "WARPGRAD_NO_RENDER_CACHE"
_SOURCES: dict[str, str] = {}


def _source_digest() -> str:
    """Digest of the renderer's source (raster.py, svg.py): an edit there cannot serve stale pixels."""
    if "digest" not in _SOURCES:
        h = hashlib.blake2b(digest_size=8)
        for module in (raster, svg):
            try:
                h.update(Path(module.__file__ or "").read_bytes())
            except OSError:  # no source (a zipped or compiled install): RENDER_VERSION alone
                h.update(b"no source")
        _SOURCES["digest"] = h.hexdigest()
    return _SOURCES["digest"]


def render_key(image_size: int, jitter: Jitter | None, seed: int) -> dict:
    """Everything besides the character and the drawing index that determines a drawing's pixels.

    Besides the renderer's version and source, the torch version and the CPU's vector instruction
    set are in it: torch's random streams and vectorised math may differ across them.
    """
    return {
        "format": FORMAT,
        "renderer": RENDER_VERSION,
        "source": _source_digest(),
        "torch": torch.__version__,
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "image_size": image_size,
        "jitter": None if jitter is None else dataclasses.asdict(jitter),
        "thickness": THICKNESS,
        "margin": MARGIN,
        "viewbox": VIEWBOX,
        "seed": seed,
    }


def svg_digest(path: Path) -> str:
    """Digest of a character's SVG file: its drawings are valid only for this content."""
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def _pixels_digest(images: Tensor, done: Tensor) -> str:
    h = hashlib.blake2b(images.contiguous().numpy().tobytes(), digest_size=16)
    h.update(done.contiguous().numpy().tobytes())
    return h.hexdigest()


class RenderCache:
    """The class files of one render key under ``root`` (see the module docstring).

    Reading never raises: an absent or bad file reads as None. Writing warns once and stops writing
    (reads go on) when the directory cannot be written (read-only, full disk, no permission).
    """

    def __init__(self, root: str | os.PathLike, key: dict):
        self.key = json.dumps(key, sort_keys=True)
        self.directory = Path(root) / hashlib.blake2b(self.key.encode(), digest_size=8).hexdigest()
        self.writable = True
        self._prepared = False

    def path(self, codepoint: int) -> Path:
        return self.directory / f"{codepoint:05x}.pt"

    def load(self, codepoint: int, svg: str, image_shape: tuple[int, ...]) -> tuple[Tensor, Tensor] | None:
        """``(images, done)`` of a class as on disk, None if absent or not valid for this key and SVG."""
        try:
            obj = load_tensors(self.path(codepoint))
            return None if obj is None else _valid(obj, self.key, codepoint, svg, image_shape)
        except Exception:  # whatever is in a damaged file (tensors where strings should be, ...)
            return None

    def save(self, codepoint: int, svg: str, images: Tensor, done: Tensor) -> None:
        """Merge ``images[done]`` into the class's file: drawings already there are kept.

        Nothing is written when the file already holds every drawing of ``done``.
        """
        if not self.writable:
            return
        try:
            with self._lock():
                on_disk = self.load(codepoint, svg, tuple(images.shape[1:]))
                if on_disk is not None:
                    held = on_disk[1]
                    if done.shape[0] <= held.shape[0] and bool(held[: done.shape[0]][done].all()):
                        return
                    images, done = _merge(on_disk, (images, done))
                obj = {"format": FORMAT, "key": self.key, "codepoint": codepoint, "svg": svg}
                obj |= {"images": images, "done": done, "digest": _pixels_digest(images, done)}
                atomic_write(self.path(codepoint), lambda f: torch.save(obj, f), durable=False)
        except OSError as e:
            self.writable = False
            warnings.warn(
                f"not caching KanjiVG renderings in {self.directory}: cannot write there ({e}); "
                f"set {OFF_VARIABLE}=1 or pass disk_cache=False to turn the cache off",
                stacklevel=3,
            )

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        if not self._prepared:
            self.directory.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(self.directory)  # files of writers that were killed
            if not (self.directory / "key.json").is_file():
                atomic_write_text(self.directory / "key.json", json.dumps(json.loads(self.key), indent=1) + "\n")
            self._prepared = True
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(locked(self.directory))
            except OSError:  # no locks on this file system: last writer wins, every file stays whole
                pass
            yield


def _valid(obj: dict, key: str, codepoint: int, svg: str, image_shape: tuple[int, ...]) -> tuple[Tensor, Tensor] | None:
    """``(images, done)`` of a loaded class file if it is whole and made for this key, class and SVG."""
    if (obj.get("format"), obj.get("key"), obj.get("codepoint"), obj.get("svg")) != (FORMAT, key, codepoint, svg):
        return None
    images, done = obj.get("images"), obj.get("done")
    if not isinstance(images, Tensor) or not isinstance(done, Tensor):
        return None
    if images.dtype != torch.uint8 or done.dtype != torch.bool or done.dim() != 1:
        return None
    if tuple(images.shape) != (done.shape[0], *image_shape) or obj.get("digest") != _pixels_digest(images, done):
        return None
    return images, done


def _merge(old: tuple[Tensor, Tensor], new: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """The union of two ``(images, done)`` of a class, the lengths of the longer."""
    n = max(old[1].shape[0], new[1].shape[0])
    images = torch.zeros(n, *old[0].shape[1:], dtype=torch.uint8)
    done = torch.zeros(n, dtype=torch.bool)
    for part_images, part_done in (old, new):
        m = part_done.shape[0]
        images[:m][part_done] = part_images[part_done]
        done[:m] |= part_done
    return images, done


def open_render_cache(
    disk_cache: bool | str | os.PathLike, image_size: int, jitter: Jitter | None, seed: int
) -> RenderCache | None:
    """The cache a dataset uses: None when ``disk_cache`` is False or ``$WARPGRAD_NO_RENDER_CACHE`` is set.

    ``disk_cache=True`` puts it in ``data_root()/kanjivg/renders``, a path puts it there.
    """
    if not isinstance(disk_cache, (bool, str, os.PathLike)) or disk_cache == "":
        raise UsageError(f"disk_cache must be True, False or a folder, got {disk_cache!r}")
    if disk_cache is False or os.environ.get(OFF_VARIABLE, "") not in ("", "0"):
        return None
    root = data_root() / "kanjivg" / "renders" if disk_cache is True else Path(disk_cache).expanduser()
    return RenderCache(root, render_key(image_size, jitter, seed))
