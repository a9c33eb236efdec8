"""scikit-learn's handwritten digits: 1797 images of 8×8 pixels (values 0–16), 10 classes.

Shipped inside scikit-learn (``sklearn.datasets.load_digits``), so it needs no download. Pixel
values are divided by 16 to lie in [0, 1].

Example:
    >>> ds = load_digits()
    >>> ds.image_shape, ds.splits["test"]
    ((1, 8, 8), [8, 9])

References:
    Alpaydin & Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine Learning
    Repository (1998).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch
from torch import Tensor

from warpgrad.data.base import InMemoryClassDataset
from warpgrad.data.cache import DataError
from warpgrad.data.mnist import DIGIT_CLASSES, TEN_CLASS_SPLITS


def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as e:
        raise DataError(
            "the digits dataset comes with scikit-learn, which is not installed: pip install scikit-learn"
        ) from e
    bunch = sklearn_digits()
    images, labels = np.asarray(bunch.images, dtype=np.float32), np.asarray(bunch.target, dtype=np.int64)
    if images.ndim != 3 or images.shape[1:] != (8, 8) or len(labels) != len(images):
        raise DataError(f"sklearn load_digits returned images {images.shape} and labels {labels.shape}")
    if images.min() < 0 or images.max() > 16:
        raise DataError(f"sklearn load_digits returned values outside 0..16 ({images.min()}..{images.max()})")
    return images / 16.0, labels


def load_digits_arrays() -> tuple[Tensor, Tensor]:
    """All 1797 digits: ``x`` float32 ``[1797, 1, 8, 8]`` in [0, 1], ``y`` int64 in 0..9."""
    images, labels = _digits()
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)


def load_digits(splits: dict[str, list[int]] | None = None) -> InMemoryClassDataset:
    """The digits as a ClassDataset: classes ``"0"``..``"9"`` of ``[1, 8, 8]`` images.

    Class splits (disjoint) default to train 0–5, val 6–7, test 8–9.
    """
    x, y = load_digits_arrays()
    per_class = [x[y == k] for k in range(10)]
    splits = {k: list(v) for k, v in (TEN_CLASS_SPLITS if splits is None else splits).items()}
    return InMemoryClassDataset("digits", per_class, list(DIGIT_CLASSES), splits)


def digits_status() -> str:
    if importlib.util.find_spec("sklearn") is None:
        return "missing package: pip install scikit-learn"
    return "present (in the scikit-learn package)"
