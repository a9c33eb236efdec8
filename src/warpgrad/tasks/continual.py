"""Continual-learning streams: permuted, rotated and split image streams, the ANML/OML class
sequence, and WarpGrad's continual sine regression (Algorithm 3).

A :class:`Stream` is an ordered list of :class:`Experience` s, each with its own training and
test set. Scenarios (van de Ven & Tolias 2019, "Three scenarios for continual learning"):

* ``"domain-incremental"``: the same labels in every experience, the input distribution changes
  (permuted / rotated images, sine sub-intervals); no task identity at test time.
* ``"task-incremental"``: each experience has its own classes, relabelled ``0..k−1``, and the
  learner is told which experience a sample comes from (``task_id``; e.g. one head per task).
* ``"class-incremental"``: each experience has its own classes, global labels are kept, and the
  learner must tell all classes seen so far apart without a task identity.

``task_id`` is the task label a learner may use: the experience index in task-incremental
streams, ``0`` otherwise (so a multi-head learner cannot use information the scenario hides).
The stream runner (:mod:`warpgrad.engine.streams`) implements task-incremental learning as an
output mask: a single head with one output per original class, of which only the experience's
``classes`` are used in training and testing (``train_y``/``test_y`` are positions in them) —
equivalent to one head per task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from warpgrad.data.base import ClassDataset
from warpgrad.errors import UsageError
from warpgrad.tasks.augment import rotate90

SCENARIOS = ("domain-incremental", "task-incremental", "class-incremental")

Arrays = tuple[Tensor, Tensor]


@dataclass
class Experience:
    """One step of a stream.

    Attributes:
        index: position in the stream (0-based).
        train_x, train_y, test_x, test_y: the experience's data. Images are ``[N, C, H, W]`` with
            int64 labels ``[N]``; continual sine uses float ``[N, 1]`` inputs and targets.
        classes: the classes of this experience as indices into the original dataset's labels
            (also in task-incremental streams, whose ``train_y`` are positions in this list);
            ``[]`` for regression.
        task_id: the task label the learner may use (see the module docstring).
    """

    index: int
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[int]
    task_id: int


@dataclass
class Stream:
    """An ordered sequence of experiences.

    Attributes:
        name: e.g. ``"permuted"``, ``"split"``, ``"class-sequence"``, ``"sine-continual"``.
        scenario: one of :data:`SCENARIOS`.
        experiences: the experiences, in training order.
        n_classes: output units a single head needs: the largest label + 1 over the stream
            (per-task classes in task-incremental streams; 0 for regression).
    """

    name: str
    scenario: str
    experiences: list[Experience]
    n_classes: int

    def __len__(self) -> int:
        return len(self.experiences)

    def __iter__(self):
        return iter(self.experiences)

    def __getitem__(self, i: int) -> Experience:
        return self.experiences[i]


@dataclass
class SineStream(Stream):
    """A continual sine stream: one sinusoid ``y = amplitude · sin(x − phase)`` for all experiences.

    As a task of the engine it is a sequence its learner walks itself (continual WarpGrad draws its
    minibatches), so it is its own seeded task and cannot be split across processes.
    """

    amplitude: float = 0.0
    phase: float = 0.0
    shardable = False

    def seeded(self, generator: torch.Generator, device: torch.device | str | None = None) -> SineStream:
        return self


def _check_arrays(name: str, arrays: Arrays) -> Arrays:
    if not isinstance(arrays, (tuple, list)) or len(arrays) != 2:
        raise UsageError(f"{name} must be a pair (x [N, C, H, W], y [N]), got {type(arrays).__name__}")
    x, y = arrays
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.dim() != 4:
        raise UsageError(f"{name} images must be [N, C, H, W], got shape {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise UsageError(f"{name} labels must be [N] with N = {x.shape[0]}, got shape {tuple(y.shape)}")
    return x, y.long()


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive int, got {value!r}")
    return value


def _n_classes(*labels: Tensor) -> int:
    return max(int(y.max()) + 1 if y.numel() else 0 for y in labels)


# --------------------------------------------------------------------------- permuted


def permute_pixels(images: Tensor, permutation: Tensor) -> Tensor:
    """Reorder the ``H·W`` pixel positions of ``[N, C, H, W]`` images (the same for every channel)."""
    n, c, h, w = images.shape
    return images.reshape(n, c, h * w)[:, :, permutation].reshape(n, c, h, w)


def permuted_stream(train: Arrays, test: Arrays, n_experiences: int, seed: int = 0) -> Stream:
    """Permuted images (Goodfellow et al. 2013; Kirkpatrick et al. 2017): domain-incremental.

    Experience 0 is the data as given (identity permutation); experience ``t ≥ 1`` applies a fixed
    random permutation of the pixel positions, the same to its training and test images, drawn
    from a generator seeded with ``seed``. Labels are unchanged.
    """
    _check_positive_int("n_experiences", n_experiences)
    (train_x, train_y), (test_x, test_y) = _check_arrays("train", train), _check_arrays("test", test)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise UsageError(
            f"train and test images differ in shape: {tuple(train_x.shape[1:])} vs {tuple(test_x.shape[1:])}"
        )
    n_pixels = train_x.shape[2] * train_x.shape[3]
    generator = torch.Generator().manual_seed(seed)
    experiences = []
    for t in range(n_experiences):
        perm = torch.arange(n_pixels) if t == 0 else torch.randperm(n_pixels, generator=generator)
        experiences.append(
            Experience(
                t,
                permute_pixels(train_x, perm),
                train_y,
                permute_pixels(test_x, perm),
                test_y,
                sorted(set(train_y.tolist()) | set(test_y.tolist())),
                0,
            )
        )
    return Stream("permuted", "domain-incremental", experiences, _n_classes(train_y, test_y))


# --------------------------------------------------------------------------- rotated


def rotate(images: Tensor, degrees: float) -> Tensor:
    """Rotate ``[N, C, H, W]`` images counter-clockwise (as displayed) by ``degrees``.

    Multiples of 90° are exact (``torch.rot90``, same direction); other angles use bilinear
    interpolation about the image centre (``affine_grid`` + ``grid_sample``), with zeros for
    pixels that come from outside the image.
    """
    if images.dim() != 4:
        raise UsageError(f"rotate expects images [N, C, H, W], got shape {tuple(images.shape)}")
    degrees = float(degrees)
    if not math.isfinite(degrees):
        raise UsageError(f"rotation angle must be finite, got {degrees}")
    if degrees % 90 == 0:
        return rotate90(images, int(degrees // 90))
    return _rotate_bilinear(images, degrees)


def _rotate_bilinear(images: Tensor, degrees: float) -> Tensor:
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    # affine_grid maps output (x = column, y = row, rows downwards) to input coordinates;
    # for 90° this is (x, y) -> (-y, x), which is torch.rot90(k=1, dims=(2, 3)).
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=images.dtype).expand(images.shape[0], 2, 3)
    h, w = images.shape[2:]
    if h != w:
        # normalised coordinates scale x and y by different amounts: rotate in pixel units
        theta = theta.clone()
        theta[:, 0, 1] *= h / w
        theta[:, 1, 0] *= w / h
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotated_stream(train: Arrays, test: Arrays, angles: Sequence[float]) -> Stream:
    """Rotated images (Lopez-Paz & Ranzato 2017): experience ``t`` rotates every image by
    ``angles[t]`` degrees (:func:`rotate`). Labels unchanged; domain-incremental."""
    angles = list(angles)
    if not angles:
        raise UsageError("angles must name at least one rotation, got []")
    (train_x, train_y), (test_x, test_y) = _check_arrays("train", train), _check_arrays("test", test)
    classes = sorted(set(train_y.tolist()) | set(test_y.tolist()))
    experiences = [
        Experience(t, rotate(train_x, a), train_y, rotate(test_x, a), test_y, list(classes), 0)
        for t, a in enumerate(angles)
    ]
    return Stream("rotated", "domain-incremental", experiences, _n_classes(train_y, test_y))


# --------------------------------------------------------------------------- split


def split_stream(
    train: Arrays, test: Arrays, classes_per_experience: int, scenario: str, seed: int | None = None
) -> Stream:
    """Split images (Zenke et al. 2017): the classes in consecutive groups, one per experience.

    Classes are the sorted distinct training labels, shuffled by ``seed`` when given, then cut
    into groups of ``classes_per_experience``. ``"task-incremental"``: labels are positions in
    the group (``0..k−1``) and ``task_id`` is the experience index; ``"class-incremental"``:
    labels are the original ones and ``task_id`` is 0. Every test label must be a training class.
    """
    if scenario not in ("task-incremental", "class-incremental"):
        raise UsageError(f"split_stream scenario must be 'task-incremental' or 'class-incremental', got {scenario!r}")
    _check_positive_int("classes_per_experience", classes_per_experience)
    (train_x, train_y), (test_x, test_y) = _check_arrays("train", train), _check_arrays("test", test)
    classes = sorted(set(train_y.tolist()))
    unknown = sorted(set(test_y.tolist()) - set(classes))
    if unknown:
        raise UsageError(f"test labels {unknown} do not occur in the training labels {classes}")
    if len(classes) % classes_per_experience != 0:
        raise UsageError(
            f"classes_per_experience={classes_per_experience} does not divide the {len(classes)} classes; "
            f"allowed: {[k for k in range(1, len(classes) + 1) if len(classes) % k == 0]}"
        )
    if seed is not None:
        order = torch.randperm(len(classes), generator=torch.Generator().manual_seed(seed)).tolist()
        classes = [classes[i] for i in order]
    task_incremental = scenario == "task-incremental"
    experiences = []
    for t in range(len(classes) // classes_per_experience):
        group = classes[t * classes_per_experience : (t + 1) * classes_per_experience]
        group_t = torch.tensor(group)
        tr, te = torch.isin(train_y, group_t), torch.isin(test_y, group_t)
        ytr, yte = train_y[tr], test_y[te]
        if task_incremental:
            ytr, yte = _relabel(ytr, group), _relabel(yte, group)
        experiences.append(Experience(t, train_x[tr], ytr, test_x[te], yte, group, t if task_incremental else 0))
    n_classes = classes_per_experience if task_incremental else max(classes) + 1
    return Stream("split", scenario, experiences, n_classes)


def _relabel(y: Tensor, group: list[int]) -> Tensor:
    out = torch.empty_like(y)
    for new, old in enumerate(group):
        out[y == old] = new
    return out


# --------------------------------------------------------------------------- class sequence (OML / ANML)


def class_sequence_stream(
    dataset: ClassDataset, split: str, n_classes: int, train_per_class: int, test_per_class: int, seed: int = 0
) -> Stream:
    """The OML/ANML meta-test stream (Javed & White 2019; Beaulieu et al. 2020).

    ``n_classes`` classes of ``dataset.splits[split]`` in a random order drawn with ``seed``; one
    experience per class with ``train_per_class`` training and ``test_per_class`` distinct test
    images (disjoint, chosen at random). Labels are ``0..n_classes−1`` in order of appearance;
    ``classes`` holds the dataset's class index. Class-incremental: after experience ``i`` a
    learner is evaluated on the test sets of experiences ``0..i``.
    """
    if split not in dataset.splits:
        raise UsageError(f"unknown split {split!r}; {dataset.name} has {sorted(dataset.splits)}")
    _check_positive_int("n_classes", n_classes)
    _check_positive_int("train_per_class", train_per_class)
    _check_positive_int("test_per_class", test_per_class)
    pool = list(dataset.splits[split])
    if n_classes > len(pool):
        raise UsageError(f"n_classes={n_classes} but split {split!r} of {dataset.name} has only {len(pool)} classes")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(pool), generator=generator)[:n_classes].tolist()
    need = train_per_class + test_per_class
    experiences = []
    for label, i in enumerate(order):
        c = pool[i]
        count = dataset.count(c)
        if count < need:
            raise UsageError(
                f"class {c} of {dataset.name} has {count} images, fewer than train_per_class + test_per_class = {need}"
            )
        index = torch.randperm(count, generator=generator)[:need]
        images = dataset.images(c, index)
        y_train = torch.full((train_per_class,), label, dtype=torch.long)
        y_test = torch.full((test_per_class,), label, dtype=torch.long)
        train_x, test_x = images[:train_per_class], images[train_per_class:]
        experiences.append(Experience(label, train_x, y_train, test_x, y_test, [c], 0))
    return Stream("class-sequence", "class-incremental", experiences, n_classes)


# --------------------------------------------------------------------------- continual sine


class ContinualSineFamily:
    """Continual sine regression, WarpGrad's Algorithm 3 (Flennerhag et al. 2020).

    Each sample is one random sinusoid ``y = A·sin(x − b)``, ``A ~ U(amplitude)``,
    ``b ~ U(phase)``, presented as ``n_intervals`` experiences: experience ``i`` has its training
    and test inputs drawn uniformly from the ``i``-th of ``n_intervals`` equal consecutive
    sub-intervals of ``x_range``. Domain-incremental; loss and metric: mean squared error.

    Args:
        n_intervals: experiences per sequence.
        points_per_interval: training points per experience.
        test_points_per_interval: test points per experience.
        x_range, amplitude, phase: ranges of the uniform inputs and task parameters.
        dtype: tensor dtype.
    """

    metric_name = "mse"
    lower_is_better = True

    def __init__(
        self,
        n_intervals: int = 5,
        points_per_interval: int = 10,
        test_points_per_interval: int = 50,
        x_range: tuple[float, float] = (-5.0, 5.0),
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        dtype: torch.dtype = torch.float32,
    ):
        for arg, value in (
            ("n_intervals", n_intervals),
            ("points_per_interval", points_per_interval),
            ("test_points_per_interval", test_points_per_interval),
        ):
            _check_positive_int(arg, value)
        for arg, (low, high) in (("x_range", x_range), ("amplitude", amplitude), ("phase", phase)):
            if not low <= high:
                raise UsageError(f"{arg} must be (low, high) with low <= high, got {(low, high)}")
        if x_range[0] == x_range[1]:
            raise UsageError(f"x_range must be a non-empty interval, got {x_range}")
        self.n_intervals = n_intervals
        self.points_per_interval = points_per_interval
        self.test_points_per_interval = test_points_per_interval
        self.x_range = (float(x_range[0]), float(x_range[1]))
        self.amplitude = amplitude
        self.phase = phase
        self.dtype = dtype

    def intervals(self) -> list[tuple[float, float]]:
        """The ``n_intervals`` consecutive sub-intervals of ``x_range``, in order."""
        low, high = self.x_range
        width = (high - low) / self.n_intervals
        return [(low + i * width, low + (i + 1) * width) for i in range(self.n_intervals)]

    @staticmethod
    def _uniform(low: float, high: float, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)

    def sample(self, generator: torch.Generator) -> SineStream:
        amplitude = float(self._uniform(*self.amplitude, (), generator))
        phase = float(self._uniform(*self.phase, (), generator))
        k = self.points_per_interval
        experiences = []
        for i, (low, high) in enumerate(self.intervals()):
            x = self._uniform(low, high, (k + self.test_points_per_interval, 1), generator)
            y = amplitude * torch.sin(x - phase)
            x, y = x.to(self.dtype), y.to(self.dtype)
            experiences.append(Experience(i, x[:k], y[:k], x[k:], y[k:], [], 0))
        return SineStream("sine-continual", "domain-incremental", experiences, 0, amplitude, phase)


__all__ = [
    "SCENARIOS",
    "Experience",
    "Stream",
    "SineStream",
    "permute_pixels",
    "permuted_stream",
    "rotate",
    "rotated_stream",
    "split_stream",
    "class_sequence_stream",
    "ContinualSineFamily",
]
