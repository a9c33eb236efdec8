"""Image datasets: readers with download, checksum verification and a cache; KanjiVG rendering.

Every dataset is a :class:`ClassDataset` (class → images); :data:`DATASETS` lists them with
their status on this machine (``warpgrad list`` prints it) and a loader.
"""

from warpgrad.data.base import ClassDataset, InMemoryClassDataset, split_by_fraction
from warpgrad.data.cache import DataError, data_root
from warpgrad.data.registry import DATASETS, DatasetInfo

__all__ = [
    "ClassDataset",
    "InMemoryClassDataset",
    "split_by_fraction",
    "DataError",
    "data_root",
    "DATASETS",
    "DatasetInfo",
]
