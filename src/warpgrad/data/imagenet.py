"""miniImageNet and tieredImageNet from the pickles the meta-learning community distributes.

Neither can be downloaded automatically (ImageNet's licence requires each user to obtain the
images). When files are missing, the loaders raise :class:`~warpgrad.data.cache.DataError` saying
exactly which files to obtain and the directory to put them in; what is found is validated (image
shape, classes per split, images per class) and any mismatch names the file.

* **miniImageNet** (Vinyals et al., 2016; Ravi & Larochelle's split, 64/16/20 classes of 600
  images): ``<root>/miniimagenet/mini-imagenet-cache-{train,val,test}.pkl``, each a pickled dict
  ``{"image_data": uint8 [N, 84, 84, 3], "class_dict": {wnid: [indices into image_data]}}``.
* **tieredImageNet** (Ren et al., 2018; 351/97/160 classes in 34 super-classes):
  ``<root>/tieredimagenet/{train,val,test}_images_png.pkl`` (a sequence of PNG-encoded images,
  each a uint8 array or bytes) and ``{train,val,test}_labels.pkl`` (a dict with
  ``"label_specific"``, ``"label_general"`` (ints per image), ``"label_specific_str"``,
  ``"label_general_str"`` (names per label)). The PNGs are decoded lazily, only those a caller
  asks for, and kept in a bounded LRU cache: the train split alone has ~450k images.

Pickles are read with an unpickler that only accepts numpy arrays, lists, dicts, strings and
numbers, so a crafted file cannot run code.

Example:
    >>> mini = load_miniimagenet()
    >>> [len(mini.splits[s]) for s in ("train", "val", "test")]
    [64, 16, 20]

References:
    Vinyals et al., "Matching Networks for One Shot Learning", NeurIPS 2016; Ravi & Larochelle,
    "Optimization as a Model for Few-Shot Learning", ICLR 2017; Ren et al., "Meta-Learning for
    Semi-Supervised Few-Shot Classification", ICLR 2018.
"""

from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from warpgrad.data.base import InMemoryClassDataset, check_splits
from warpgrad.data.cache import DataError, resolve_root
from warpgrad.errors import UsageError

SPLITS = ("train", "val", "test")
IMAGE_HW = (84, 84)
MINI_CLASSES = {"train": 64, "val": 16, "test": 20}
MINI_IMAGES_PER_CLASS = 600
TIERED_CLASSES = {"train": 351, "val": 97, "test": 160}
_WHERE_TO_GET = (
    "ImageNet's terms require each user to obtain the images; these are the files that "
    "meta-learning codebases distribute under those names"
)

_SAFE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("collections", "OrderedDict"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        canonical = module.replace("numpy._core", "numpy.core", 1)
        if (canonical, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")
        if canonical.startswith("numpy.core") and hasattr(np, "_core"):
            module = canonical.replace("numpy.core", "numpy._core", 1)  # numpy >= 2, without its warning
        return super().find_class(module, name)


def load_pickle(path: str | os.PathLike) -> Any:
    """Read a pickle of numpy arrays and containers; DataError naming the file when unreadable.

    Python 2 pickles are read too (``encoding="latin1"``, as numpy recommends).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding="latin1").load()
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found") from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise DataError(f"{path}: unreadable or truncated pickle ({type(e).__name__}: {e}); obtain it again") from e


def _missing(directory: Path, names: Sequence[str], dataset: str) -> None:
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise DataError(
            f"{dataset}: missing {', '.join(missing)} in {directory}; it cannot be downloaded automatically. "
            f"Obtain {', '.join(names)} ({_WHERE_TO_GET}) and put them in {directory} "
            f"(or set $WARPGRAD_DATA / pass root= to the directory that contains {directory.name}/)"
        )


# --------------------------------------------------------------------------- miniImageNet


def miniimagenet_dir(root: str | os.PathLike | None = None) -> Path:
    return resolve_root(root) / "miniimagenet"


def miniimagenet_files() -> list[str]:
    return [f"mini-imagenet-cache-{s}.pkl" for s in SPLITS]


def load_miniimagenet(
    root: str | os.PathLike | None = None,
    expected_classes: dict[str, int] | None = None,
    images_per_class: int | None = MINI_IMAGES_PER_CLASS,
) -> InMemoryClassDataset:
    """Load miniImageNet (Ravi & Larochelle split) as a ClassDataset of ``[3, 84, 84]`` images.

    Args:
        root: data directory (default :func:`~warpgrad.data.cache.data_root`); files are read
            from ``<root>/miniimagenet/``.
        expected_classes: classes per split (default :data:`MINI_CLASSES`, 64/16/20).
        images_per_class: images every class must have (600); None skips that check.

    Returns:
        Classes named by WordNet id, ``train`` classes first, then ``val``, then ``test``.

    Raises:
        DataError: a file is missing (the message lists the files and the directory), unreadable,
            or does not match the expected shape, classes per split or images per class.

    References:
        Ravi & Larochelle, ICLR 2017; Vinyals et al., NeurIPS 2016.
    """
    expected = dict(MINI_CLASSES if expected_classes is None else expected_classes)
    directory = miniimagenet_dir(root)
    _missing(directory, miniimagenet_files(), "miniImageNet")
    classes: list[str] = []
    images: list[Tensor] = []
    splits: dict[str, list[int]] = {}
    for split, name in zip(SPLITS, miniimagenet_files()):
        path = directory / name
        split_classes, split_images = _read_mini(path, expected[split], images_per_class)
        duplicated = set(classes) & set(split_classes)
        if duplicated:
            raise DataError(f"{path}: classes {sorted(duplicated)[:5]} also appear in an earlier split")
        splits[split] = list(range(len(classes), len(classes) + len(split_classes)))
        classes += split_classes
        images += split_images
    return InMemoryClassDataset("miniimagenet", images, classes, splits)


def _read_mini(path: Path, n_classes: int, images_per_class: int | None) -> tuple[list[str], list[Tensor]]:
    data = load_pickle(path)
    if isinstance(data, dict):
        data = {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}
    if not isinstance(data, dict) or "image_data" not in data or "class_dict" not in data:
        raise DataError(f"{path}: expected a dict with 'image_data' and 'class_dict'")
    array, class_dict = data["image_data"], data["class_dict"]
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.shape[1:] != (*IMAGE_HW, 3):
        shape = getattr(array, "shape", type(array).__name__)
        raise DataError(f"{path}: image_data must be uint8 [N, 84, 84, 3], got {shape} {getattr(array, 'dtype', '')}")
    if not isinstance(class_dict, dict) or len(class_dict) != n_classes:
        got = len(class_dict) if isinstance(class_dict, dict) else type(class_dict).__name__
        raise DataError(f"{path}: expected {n_classes} classes in class_dict, got {got}")
    names, tensors = [], []
    for wnid in sorted(class_dict, key=lambda k: k.decode() if isinstance(k, bytes) else str(k)):
        index = np.asarray(class_dict[wnid])
        name = wnid.decode() if isinstance(wnid, bytes) else str(wnid)
        if index.ndim != 1 or index.size == 0 or not np.issubdtype(index.dtype, np.integer):
            raise DataError(f"{path}: class {name} must list image indices, got {class_dict[wnid]!r:.80}")
        if index.min() < 0 or index.max() >= len(array):
            raise DataError(f"{path}: class {name} has image indices outside 0..{len(array) - 1}")
        if images_per_class is not None and index.size != images_per_class:
            raise DataError(f"{path}: class {name} has {index.size} images, expected {images_per_class}")
        names.append(name)
        tensors.append(torch.from_numpy(np.ascontiguousarray(array[index].transpose(0, 3, 1, 2))))
    return names, tensors


# --------------------------------------------------------------------------- tieredImageNet


def tieredimagenet_dir(root: str | os.PathLike | None = None) -> Path:
    return resolve_root(root) / "tieredimagenet"


def tieredimagenet_files() -> list[str]:
    return [f"{s}_{kind}.pkl" for s in SPLITS for kind in ("images_png", "labels")]


class TieredImageNet:
    """A :class:`~warpgrad.data.base.ClassDataset` over PNG-encoded images, decoded on demand.

    ``images(c, index)`` decodes only the requested images; decoded images are kept in an LRU
    cache of at most ``cache_images`` images (uint8, 21 KB each), so memory stays bounded
    whatever the access pattern. The encoded PNGs stay in memory (a few GB for the real set).
    """

    name = "tieredimagenet"
    image_shape = (3, *IMAGE_HW)

    def __init__(
        self,
        pngs: list[Any],
        members: list[np.ndarray],
        classes: list[str],
        groups: list[str],
        splits: dict[str, list[int]],
        sources: list[tuple[Path, int]],
        cache_images: int = 10000,
    ):
        check_splits(self.name, splits, len(classes))
        if cache_images < 0:
            raise UsageError(f"cache_images must be >= 0, got {cache_images}")
        self._pngs = pngs
        self._members = members
        self._sources = sources  # (images file, first global index) per split, for error messages
        self.classes = classes
        self.groups = groups
        self.splits = splits
        self.cache_images = cache_images
        self._cache: OrderedDict[int, Tensor] = OrderedDict()

    def count(self, c: int) -> int:
        return int(self._members[c].size)

    def images(self, c: int, index: Tensor | Sequence[int] | None = None) -> Tensor:
        members = self._members[c]
        chosen = members if index is None else members[torch.as_tensor(index, dtype=torch.long).numpy()]
        out = torch.empty((len(chosen), *self.image_shape), dtype=torch.uint8)
        for row, i in enumerate(chosen.tolist()):
            out[row] = self._image(i)
        return out.float() / 255.0

    def _image(self, i: int) -> Tensor:
        cached = self._cache.get(i)
        if cached is not None:
            self._cache.move_to_end(i)
            return cached
        image = torch.from_numpy(self._decode(i)).permute(2, 0, 1)
        if self.cache_images:
            self._cache[i] = image
            if len(self._cache) > self.cache_images:
                self._cache.popitem(last=False)
        return image

    def _decode(self, i: int) -> np.ndarray:
        path, first = next((p, f) for p, f in reversed(self._sources) if i >= f)
        return decode_png(self._pngs[i], f"{path} (image {i - first})")


def decode_png(data: Any, where: str) -> np.ndarray:
    """PNG bytes (or a uint8 array of them) as RGB uint8 ``[84, 84, 3]``; DataError naming ``where``."""
    from PIL import Image

    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    try:
        with Image.open(io.BytesIO(raw)) as im:
            rgb = np.array(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{where}: not a readable PNG ({e})") from e
    if rgb.shape != (*IMAGE_HW, 3):
        raise DataError(f"{where}: image is {rgb.shape}, expected (84, 84, 3)")
    return rgb


def load_tieredimagenet(
    root: str | os.PathLike | None = None,
    expected_classes: dict[str, int] | None = None,
    cache_images: int = 10000,
) -> TieredImageNet:
    """Load tieredImageNet (Ren et al., 2018) as a lazily decoded ClassDataset of ``[3, 84, 84]``.

    Args:
        root: data directory (default :func:`~warpgrad.data.cache.data_root`); files are read
            from ``<root>/tieredimagenet/``.
        expected_classes: classes per split (default :data:`TIERED_CLASSES`, 351/97/160).
        cache_images: most decoded images kept in memory (LRU).

    Returns:
        Classes named by ``label_specific_str``, grouped by their super-class
        (``label_general_str``); ``train`` classes first, then ``val``, then ``test``.

    Raises:
        DataError: a file is missing (the message lists the files and the directory), unreadable,
            inconsistent with its labels file, or the classes per split differ from expected.

    References:
        Ren et al., "Meta-Learning for Semi-Supervised Few-Shot Classification", ICLR 2018.
    """
    expected = dict(TIERED_CLASSES if expected_classes is None else expected_classes)
    directory = tieredimagenet_dir(root)
    _missing(directory, tieredimagenet_files(), "tieredImageNet")
    pngs: list[Any] = []
    members: list[np.ndarray] = []
    classes: list[str] = []
    groups: list[str] = []
    splits: dict[str, list[int]] = {}
    sources: list[tuple[Path, int]] = []
    for split in SPLITS:
        images_path = directory / f"{split}_images_png.pkl"
        labels_path = directory / f"{split}_labels.pkl"
        encoded = load_pickle(images_path)
        if not isinstance(encoded, (list, tuple, np.ndarray)) or len(encoded) == 0:
            raise DataError(f"{images_path}: expected a non-empty sequence of PNG-encoded images")
        specific, names, class_groups = _read_tiered_labels(labels_path, len(encoded), expected[split])
        decode_png(encoded[0], f"{images_path} (image 0)")  # shape check on one image, cheaply
        offset = len(pngs)
        sources.append((images_path, offset))
        pngs.extend(encoded)
        order = np.argsort(specific, kind="stable")
        bounds = np.searchsorted(specific[order], np.arange(len(names) + 1))
        splits[split] = list(range(len(classes), len(classes) + len(names)))
        members += [offset + order[bounds[k] : bounds[k + 1]] for k in range(len(names))]
        classes += names
        groups += class_groups
        del encoded
    if len(set(classes)) != len(classes):
        duplicated = sorted({c for c in classes if classes.count(c) > 1})
        raise DataError(f"{directory}: classes {duplicated[:5]} appear in more than one split")
    return TieredImageNet(pngs, members, classes, groups, splits, sources, cache_images)


def _strings(values: Any, path: Path, key: str) -> list[str]:
    try:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
    except TypeError as e:
        raise DataError(f"{path}: {key} must be a sequence of names") from e


def _read_tiered_labels(path: Path, n_images: int, n_classes: int) -> tuple[np.ndarray, list[str], list[str]]:
    """Specific label per image, class names, super-class name per class; validated."""
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict of labels, got {type(data).__name__}")
    data = {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}
    keys = ("label_specific", "label_general", "label_specific_str", "label_general_str")
    absent = [k for k in keys if k not in data]
    if absent:
        raise DataError(f"{path}: missing keys {absent}; expected {list(keys)}")
    specific = np.asarray(data["label_specific"])
    general = np.asarray(data["label_general"])
    for key, labels in (("label_specific", specific), ("label_general", general)):
        if labels.shape != (n_images,) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{path}: {key} must be {n_images} ints (one per image), got {labels.shape} {labels.dtype}")
    names = _strings(data["label_specific_str"], path, "label_specific_str")
    general_names = _strings(data["label_general_str"], path, "label_general_str")
    present = np.unique(specific)
    if len(present) != n_classes or len(names) != n_classes or present[0] != 0 or present[-1] != n_classes - 1:
        raise DataError(
            f"{path}: expected {n_classes} classes (labels 0..{n_classes - 1}), got {len(present)} distinct "
            f"labels and {len(names)} names"
        )
    if general.min() < 0 or general.max() >= len(general_names):
        raise DataError(f"{path}: label_general outside 0..{len(general_names) - 1}")
    class_general = np.full(n_classes, -1)
    class_general[specific] = general
    if not np.array_equal(class_general[specific], general):
        raise DataError(f"{path}: some class has images in more than one super-class (label_general)")
    return specific.astype(np.int64), names, [general_names[g] for g in class_general]
