"""Omniglot (Lake et al., 2015): 1623 handwritten characters from 50 alphabets, 20 drawings each.

The two official archives, ``images_background.zip`` (30 alphabets, 964 characters) and
``images_evaluation.zip`` (20 alphabets, 659 characters), are downloaded from the authors'
repository, checked against their md5, extracted atomically under ``<root>/omniglot/`` and decoded
once into ``<root>/omniglot/omniglot-<size>px.pt`` (uint8), which later loads read directly.

Images are inverted so that strokes are 1 and background 0, and resized (antialiased) to
``image_size``. Class splits: ``"test"`` is the evaluation set; the background alphabets are
split, whole alphabets at a time, into ``"train"`` (25 alphabets) and ``"val"`` (5 alphabets)
with :func:`~warpgrad.data.base.split_by_fraction` (seed 0), so the splits are disjoint and the
same on every machine.

Example:
    >>> ds = load_omniglot(image_size=28)
    >>> ds.image_shape, len(ds.splits["test"])
    ((1, 28, 28), 659)

References:
    Lake, Salakhutdinov & Tenenbaum, "Human-level concept learning through probabilistic program
    induction", Science 350 (2015). Data: https://github.com/brendenlake/omniglot
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from warpgrad.data import cache
from warpgrad.data.base import InMemoryClassDataset, split_by_fraction
from warpgrad.data.cache import DataError, extract_zip, is_complete, load_tensors, resolve_root, save_tensors, verify
from warpgrad.errors import UsageError

OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
#: md5 of the official archives, as recorded by torchvision (not re-verified here: no network).
OMNIGLOT_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
OMNIGLOT_MB = 16  # both archives together, approximately
BACKGROUND_FRACTIONS = {"train": 25, "val": 5}
_CACHE_VERSION = 1


def omniglot_dir(root: str | os.PathLike | None = None) -> Path:
    """``<root>/omniglot``, where the archives, their extracted folders and the cache live."""
    return resolve_root(root) / "omniglot"


def load_omniglot(
    root: str | os.PathLike | None = None,
    image_size: int = 28,
    download: bool = True,
    checksums: dict[str, str] | None = None,
    base_url: str = OMNIGLOT_URL,
) -> InMemoryClassDataset:
    """Load Omniglot as a :class:`~warpgrad.data.base.ClassDataset` of ``[1, size, size]`` images.

    Args:
        root: data directory (default :func:`~warpgrad.data.cache.data_root`).
        image_size: side of the square images (105 keeps the originals).
        download: fetch missing archives from ``base_url``; if False, a missing archive raises.
        checksums: md5 per archive name (default :data:`OMNIGLOT_MD5`).
        base_url: where the archives are fetched from (``<base_url><name>.zip``).

    Returns:
        1623 classes named ``"Alphabet/characterNN"``, grouped by alphabet, with class splits
        ``"train"``/``"val"`` (background alphabets, 25/5) and ``"test"`` (evaluation set).

    Raises:
        DataError: an archive is missing (and cannot be downloaded), fails its checksum, or
            holds an unreadable image; the message names the file.

    References:
        Lake, Salakhutdinov & Tenenbaum, Science 350 (2015).
    """
    if image_size < 1:
        raise UsageError(f"image_size must be a positive int, got {image_size}")
    checksums = dict(OMNIGLOT_MD5 if checksums is None else checksums)
    if set(checksums) != set(OMNIGLOT_MD5):
        raise UsageError(f"checksums must have exactly the keys {sorted(OMNIGLOT_MD5)}, got {sorted(checksums)}")
    directory = omniglot_dir(root)
    cache_path = directory / f"omniglot-{image_size}px.pt"
    cached = load_tensors(cache_path)
    if not (
        cached is not None
        and cached.get("version") == _CACHE_VERSION
        and cached.get("checksums") == checksums
        and cached.get("image_size") == image_size
    ):
        cached = _build(directory, image_size, download, checksums, base_url)
        save_tensors(cache_path, cached)
    return _dataset(cached)


def _build(directory: Path, image_size: int, download: bool, checksums: dict[str, str], base_url: str) -> dict:
    classes: list[str] = []
    sources: list[str] = []
    images: list[torch.Tensor] = []
    for name in ("images_background", "images_evaluation"):
        folder = _extracted(directory, name, download, checksums[name], base_url)
        for class_name, tensor in _read_folder(folder, image_size):
            classes.append(class_name)
            sources.append(name)
            images.append(tensor)
    return {
        "version": _CACHE_VERSION,
        "checksums": checksums,
        "image_size": image_size,
        "classes": classes,
        "sources": sources,
        "counts": [int(t.shape[0]) for t in images],
        "images": torch.cat(images),
    }


def _extracted(directory: Path, name: str, download: bool, md5: str, base_url: str) -> Path:
    """The extracted folder of archive ``name``: extracted already, or from a verified archive."""
    target = directory / name
    if is_complete(target):
        return target
    archive = directory / f"{name}.zip"
    if archive.is_file():
        verify(archive, md5, "md5")
    elif download:
        cache.download(f"{base_url}{name}.zip", archive, md5, "md5")
    else:
        raise DataError(
            f"{archive}: file not found; download {base_url}{name}.zip (md5 {md5}) and put it at {archive}, "
            "or call with download=True"
        )
    return extract_zip(archive, target, strip_prefix=f"{name}/")


def _read_folder(folder: Path, image_size: int):
    """Yield ``("Alphabet/characterNN", uint8 [n, 1, size, size])`` in sorted order."""
    alphabets = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not alphabets:
        raise DataError(f"{folder}: no alphabet folders; expected {folder}/<Alphabet>/character<NN>/*.png")
    for alphabet in alphabets:
        characters = sorted(p for p in alphabet.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not characters:
            raise DataError(f"{alphabet}: no character folders")
        for character in characters:
            files = sorted(character.glob("*.png"))
            if not files:
                raise DataError(f"{character}: no .png drawings")
            drawings = np.stack([decode_drawing(f, image_size) for f in files])
            yield f"{alphabet.name}/{character.name}", torch.from_numpy(drawings).unsqueeze(1)


def decode_drawing(path: str | os.PathLike, image_size: int) -> np.ndarray:
    """One Omniglot PNG as uint8 ``[size, size]``: strokes 255, background 0, antialiased resize."""
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - Pillow comes with matplotlib
        raise ImportError("reading Omniglot needs Pillow: pip install Pillow") from e
    try:
        with Image.open(path) as im:
            gray = im.convert("L")
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: not a readable PNG ({e})") from e
    inverted = Image.fromarray(255 - np.asarray(gray, dtype=np.uint8))
    if inverted.size != (image_size, image_size):
        inverted = inverted.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return np.asarray(inverted, dtype=np.uint8)


def _dataset(cached: dict) -> InMemoryClassDataset:
    classes: list[str] = cached["classes"]
    sources: list[str] = cached["sources"]
    groups = [c.split("/", 1)[0] for c in classes]
    background = [i for i, s in enumerate(sources) if s == "images_background"]
    evaluation = [i for i, s in enumerate(sources) if s == "images_evaluation"]
    if background != list(range(len(background))):
        raise DataError("omniglot cache: background classes must come first; delete the cache file")
    splits = split_by_fraction(len(background), BACKGROUND_FRACTIONS, seed=0, groups=groups[: len(background)])
    splits["test"] = evaluation
    images = list(torch.split(cached["images"], cached["counts"]))
    return InMemoryClassDataset("omniglot", images, classes, splits, groups)


def omniglot_status(root: str | os.PathLike | None = None) -> str:
    """What a load would do now, without downloading or reading any image."""
    directory = omniglot_dir(root)
    if any(directory.glob("omniglot-*px.pt")):
        return f"present (decoded cache in {directory})"
    names = list(OMNIGLOT_MD5)
    if all(is_complete(directory / n) or (directory / f"{n}.zip").is_file() for n in names):
        return f"present ({directory})"
    return f"downloadable (about {OMNIGLOT_MB} MB, to {directory})"
