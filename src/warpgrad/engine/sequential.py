"""The OML/ANML meta-test protocol: meta-train on sampled trajectories, learn new classes online.

Protocol (Javed & White 2019, arXiv:1905.12588; Beaulieu et al. 2020, arXiv:2002.09571), as run
by ``warpgrad run kanji-sequential`` / ``omniglot-sequential``:

* **Meta-training**, on the dataset's ``train`` classes only (``meta_classes`` of them, a subset
  drawn with the run seed; label = position in that subset, in a label space of ``outputs``
  head units). Each meta-step draws one class, a *trajectory* of ``trajectory`` of its images in
  random order (ANML: all 20 images of one Omniglot character) and a *remember* batch of
  ``remember`` images of uniformly drawn meta-training classes (64 in ANML), from an explicit
  ``torch.Generator`` seeded with the run seed (:class:`TrajectorySampler`), and hands them to
  ``learner.meta_step``. With ``reset_class_row`` the head's output row of the trajectory class
  is zeroed before the step, as both papers' code re-initialises it, so that the inner loop learns
  the class from scratch like the meta-test does.
* **Meta-test**, on ``test`` classes: for each of ``runs`` streams (seeds ``2_000_000 + seed + r``,
  the same for every method), ``test_classes`` classes in random order, each split into
  ``stream_per_class`` images to learn from and ``held_out_per_class`` held-out images. The head
  is reset (``head_reset``, zeros as in the papers) and trained one SGD step per image, one pass,
  class after class; after each class the accuracy on the held-out images of all classes seen so
  far gives the curve. The metric is the final held-out accuracy (after all classes), mean ± 95% CI
  over runs; the papers' "train accuracy" (on the stream images, after the stream) is recorded
  under ``extra``.
* **Learning rate**: the meta-test SGD learning rate of every method is chosen from ``lr_grid`` by
  the mean final held-out accuracy on ``tune_runs`` streams of ``val`` classes (seeds
  ``1_000_000 + seed + r``; ``min(test_classes, |val|)`` classes each) — never test classes. The
  chosen lr and the validation accuracy of every candidate are recorded.

Methods: ``oml``, ``anml`` (the meta-learners of :mod:`warpgrad.methods.continual`), and two
baselines on the same streams: ``sgd`` (:class:`Scratch`: the OML architecture randomly
initialised, the whole network trained online) and ``pretrain`` (:class:`Pretrain`: the OML
architecture trained by Adam on the meta-training samples, trajectory and remember images pooled
into one mini-batch, for as many steps as meta-training; then frozen features, head reset and
trained online like OML).

A linear head on frozen features (OML, ANML, ``pretrain``) is meta-tested with the gradient in
closed form (:func:`linear_head_meta_test`, equal to the library's ``continual_meta_test``) on
features computed once per stream. The profile option ``threads`` sets torch's intra-op threads
for the run (0: unchanged); the one-image steps of ``sgd`` always run on one thread.

Outputs: ``results.json`` (entries with the mean curve ``curve``, ``lr``, ``extra``) and
``accuracy_vs_classes.png`` (mean curve per method) in the output directory. Runs are minutes
and have no checkpoints (``--resume`` is refused by the CLI).

References:
    Javed, White. Meta-Learning Representations for Continual Learning. NeurIPS 2019.
    arXiv:1905.12588.
    Beaulieu, Frati, Miconi, Lehman, Stanley, Clune, Cheney. Learning to Continually Learn.
    ECAI 2020. arXiv:2002.09571.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

from warpgrad.continual.metrics import plot_accuracy_vs_classes
from warpgrad.engine.results import (
    RESULTS_FILE,
    check_compatible,
    format_table,
    load_results,
    mean_ci95,
    mean_ci95_entry,
    merge_results,
    write_results,
)
from warpgrad.engine.threads import torch_threads
from warpgrad.functional import Params, functional_apply
from warpgrad.methods.base import check_no_running_statistics, make_meta_optimizer
from warpgrad.methods.continual.oml import HEAD_RESETS, Loss, TrajectoryMetaLearner, reset_head

__all__ = [
    "TrajectorySampler",
    "Scratch",
    "Pretrain",
    "online_network_meta_test",
    "meta_train",
    "meta_test_streams",
    "linear_head_meta_test",
    "sequential_streams",
    "meta_train_classes",
    "plot",
    "evaluate",
    "tune_lr",
    "parse_lr_grid",
    "run",
    "table",
    "outputs",
    "PLOT_FILE",
    "VAL_SEED_OFFSET",
    "TEST_SEED_OFFSET",
]

PLOT_FILE = "accuracy_vs_classes.png"
VAL_SEED_OFFSET = 1_000_000
TEST_SEED_OFFSET = 2_000_000
METRIC = "final_accuracy"


# ------------------------------------------------------------------------------ sampling


class TrajectorySampler:
    """Meta-training samples from a :class:`~warpgrad.data.base.ClassDataset`'s train classes.

    ``classes`` (dataset class indices) get labels ``0..len(classes)−1`` in order. Each
    :meth:`sample` draws, with ``generator`` only: a class uniformly; ``trajectory`` distinct
    images of it in random order (the trajectory, all labelled with that class); ``remember``
    images, each of a uniformly drawn class and a uniformly drawn image of it (the remember batch).
    Images are read from the dataset once, when the sampler is built.

    Returns ``(trajectory_x, trajectory_y, remember_x, remember_y, label)``.
    """

    def __init__(
        self, dataset: Any, classes: Sequence[int], trajectory: int, remember: int, generator: torch.Generator
    ):
        if not classes:
            raise ValueError("the trajectory sampler needs at least one class")
        if trajectory < 1 or remember < 0:
            raise ValueError(f"trajectory must be >= 1 and remember >= 0, got {trajectory} and {remember}")
        self.classes = [int(c) for c in classes]
        self.trajectory, self.remember, self.generator = trajectory, remember, generator
        self.images = [dataset.images(c) for c in self.classes]
        short = [c for c, x in zip(self.classes, self.images) if x.shape[0] < trajectory]
        if short:
            raise ValueError(
                f"trajectory={trajectory} but class(es) {short[:5]} of {dataset.name} have fewer images"
            )
        self.counts = torch.tensor([x.shape[0] for x in self.images])

    def sample(self) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        g = self.generator
        label = int(torch.randint(len(self.classes), (1,), generator=g))
        order = torch.randperm(self.counts[label].item(), generator=g)[: self.trajectory]
        tx = self.images[label][order]
        ty = torch.full((self.trajectory,), label, dtype=torch.long)
        ry = torch.randint(len(self.classes), (self.remember,), generator=g)
        picks = (torch.rand(self.remember, generator=g) * self.counts[ry]).long()
        if self.remember:
            rx = torch.stack([self.images[int(c)][int(i)] for c, i in zip(ry, picks)])
        else:
            rx = tx[:0]
        return tx, ty, rx, ry, label


# ------------------------------------------------------------------------------ baselines


class _Classifier(nn.Module):
    """``head(rln(x))``: the OML architecture as one module (parameter names ``rln.*``/``head.*``)."""

    def __init__(self, rln: nn.Module, head: nn.Module):
        super().__init__()
        self.rln, self.head = rln, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.rln(x))


@torch.no_grad()
def online_network_meta_test(
    model: nn.Module,
    params: Params,
    stream_x_per_class: Sequence[Tensor],
    lr: float,
    eval_x_per_class: Sequence[Tensor] | None = None,
    labels: Sequence[int] | None = None,
    loss_fn: Loss = F.cross_entropy,
) -> dict[str, Any]:
    """Like :func:`~warpgrad.methods.continual.oml.continual_meta_test`, but every parameter of
    ``model`` (from ``params``) is trained: one SGD step per image, one pass, class after class.
    Same result: ``accuracy`` (after each class, over the evaluation images of all classes seen)
    and ``per_class``."""
    if not stream_x_per_class:
        raise ValueError("meta-test needs at least one class")
    evals = stream_x_per_class if eval_x_per_class is None else eval_x_per_class
    if len(evals) != len(stream_x_per_class):
        raise ValueError(f"{len(evals)} evaluation classes for {len(stream_x_per_class)} stream classes")
    labels = list(range(len(stream_x_per_class))) if labels is None else list(labels)
    params = {k: v.detach().clone() for k, v in params.items()}

    def loss(p: Params, x: Tensor, y: Tensor) -> Tensor:
        return loss_fn(functional_apply(model, p, x), y)

    step = torch.func.grad(loss)
    accuracy, per_class = [], []
    for c, x in enumerate(stream_x_per_class):
        y = torch.tensor([labels[c]])
        for i in range(x.shape[0]):
            grads = step(params, x[i : i + 1], y)
            params = {k: params[k] - lr * grads[k] for k in params}
        seen = torch.cat(list(evals[: c + 1]))
        predicted = functional_apply(model, params, seen).argmax(-1)
        correct = (predicted == torch.cat([torch.full((e.shape[0],), labels[j]) for j, e in enumerate(evals[: c + 1])]))
        correct = correct.to(torch.get_default_dtype())
        per_class.append(torch.stack([v.mean() for v in torch.split(correct, [e.shape[0] for e in evals[: c + 1]])]))
        accuracy.append(correct.mean())
    return {"accuracy": torch.stack(accuracy), "per_class": per_class}


class Scratch:
    """The ``sgd`` baseline (the papers' "scratch"): a randomly initialised network of OML's
    architecture (representation ``rln`` and linear ``head``), no meta-training; at meta-test the
    head is reset like the other methods' and the *whole* network is trained online, one SGD step
    per image (:func:`online_network_meta_test`). Every meta-test starts from the same random
    initialisation (the one built with the run seed)."""

    name = "sgd"
    meta_trains = False

    def __init__(self, rln: nn.Module, head: nn.Module, lr: float = 0.01, loss_fn: Loss = F.cross_entropy):
        self.model = _Classifier(rln, head)
        check_no_running_statistics(self.model)
        self.head, self.inner_lr, self.loss_fn = head, lr, loss_fn

    def meta_step(self, *batch: Tensor) -> dict[str, float]:
        """Nothing to learn before the meta-test: the baseline has no meta-training."""
        return {}

    def meta_test(
        self,
        stream_x_per_class: Sequence[Tensor],
        eval_x_per_class: Sequence[Tensor] | None = None,
        *,
        labels: Sequence[int] | None = None,
        head_reset: str = "zeros",
        lr: float | None = None,
    ) -> dict[str, Any]:
        params = {f"rln.{k}": v.detach() for k, v in self.model.rln.named_parameters()}
        params.update({f"head.{k}": v for k, v in reset_head(self.head, head_reset).items()})
        with torch_threads(1):  # one-image steps gain nothing from more threads and lose much on a busy machine
            return online_network_meta_test(
                self.model, params, stream_x_per_class, self.inner_lr if lr is None else lr, eval_x_per_class,
                labels, self.loss_fn,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])


class Pretrain(TrajectoryMetaLearner):
    """The ``pretrain`` baseline: OML's architecture trained by ordinary supervised learning.

    Each :meth:`meta_step` is one optimiser step (Adam by default) on the cross-entropy of the
    whole network on the meta-training sample's trajectory and remember images pooled into one
    mini-batch — the same images, and as many steps, as the meta-learners get. At meta-test the
    representation is frozen and the head reset and trained online, like OML.
    """

    name = "pretrain"

    def __init__(
        self,
        rln: nn.Module,
        head: nn.Module,
        lr: float = 1e-3,
        *,
        test_lr: float = 0.01,
        optimizer: str = "adam",
        loss_fn: Loss = F.cross_entropy,
    ):
        self.model = _Classifier(rln, head)
        check_no_running_statistics(self.model)
        self.rln, self.head, self.inner_lr, self.loss_fn = rln, head, test_lr, loss_fn
        self.meta_optimizer = make_meta_optimizer(optimizer, self.meta_parameters(), lr)

    def meta_parameters(self) -> list[Tensor]:
        return list(self.model.parameters())

    def meta_loss(self, trajectory_x: Tensor, trajectory_y: Tensor, remember_x: Tensor, remember_y: Tensor) -> Tensor:
        x = torch.cat([trajectory_x, remember_x])
        return self.loss_fn(self.model(x), torch.cat([trajectory_y, remember_y]))

    def frozen_features(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.rln(x)


# ------------------------------------------------------------------------------ meta-training


def _reset_rows(head: nn.Module, label: int) -> None:
    """Zero output unit ``label`` of a linear head (its weight row and bias)."""
    with torch.no_grad():
        head.weight[label].zero_()
        if getattr(head, "bias", None) is not None:
            head.bias[label].zero_()


def meta_train(
    learner: Any,
    sampler: TrajectorySampler,
    steps: int,
    *,
    reset_class_row: bool = False,
    progress: bool = False,
    desc: str = "meta-train",
) -> list[float]:
    """``steps`` meta-steps of ``learner`` on samples of ``sampler``; returns the meta-losses.

    With ``reset_class_row`` the output row of the trajectory's class in ``learner.head`` is
    zeroed before each step (see the module docstring).

    Raises:
        FloatingPointError: naming the step, if a meta-loss is not finite.
    """
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress)
    for step in bar:
        tx, ty, rx, ry, label = sampler.sample()
        if reset_class_row:
            _reset_rows(learner.head, label)
        loss = float(learner.meta_step(tx, ty, rx, ry).get("meta_loss", float("nan")))
        if not math.isfinite(loss):
            raise FloatingPointError(f"{desc}: meta-loss {loss} at meta-step {step + 1}; lower the meta learning rate")
        losses.append(loss)
        if step % 20 == 0:
            bar.set_postfix(meta_loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    return losses


# ------------------------------------------------------------------------------ meta-test


def sequential_streams(
    dataset: Any, split: str, n_classes: int, stream_per_class: int, held_out_per_class: int, seeds: Sequence[int]
) -> list[Any]:
    """One class-sequence stream per seed (:func:`warpgrad.tasks.continual.class_sequence_stream`)."""
    from warpgrad.tasks.continual import class_sequence_stream

    return [
        class_sequence_stream(dataset, split, n_classes, stream_per_class, held_out_per_class, seed=s) for s in seeds
    ]


@torch.no_grad()
def linear_head_meta_test(
    stream_features: Sequence[Tensor],
    eval_features: Sequence[Tensor],
    weight: Tensor,
    bias: Tensor | None,
    lr: float,
    labels: Sequence[int],
) -> dict[str, Any]:
    """:func:`~warpgrad.methods.continual.oml.continual_meta_test` for a linear head with
    cross-entropy, on precomputed features, with the gradient in closed form: for features f and
    label y, ∇_W = (softmax(Wf + b) − e_y) fᵀ and ∇_b = softmax(Wf + b) − e_y.

    Returns ``accuracy`` (held-out, after each class), ``per_class`` and ``train_accuracy`` (on
    the stream images of all classes, after the stream).
    """
    W = weight.detach().clone()
    b = None if bias is None else bias.detach().clone()
    accuracy, per_class = [], []

    def correct(features: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for j, f in enumerate(features):
            logits = f @ W.T + (0 if b is None else b)
            out.append((logits.argmax(-1) == labels[j]).to(f.dtype))
        return out

    for c, feats in enumerate(stream_features):
        y = int(labels[c])
        for f in feats:
            p = torch.softmax(W @ f + (0 if b is None else b), -1)
            p[y] -= 1
            W.sub_(lr * torch.outer(p, f))
            if b is not None:
                b.sub_(lr * p)
        hits = correct(eval_features[: c + 1])
        per_class.append(torch.stack([h.mean() for h in hits]))
        accuracy.append(torch.cat(hits).mean())
    train = torch.cat(correct(stream_features)).mean()
    return {"accuracy": torch.stack(accuracy), "per_class": per_class, "train_accuracy": train}


def _fast_head(learner: Any) -> bool:
    """Whether ``learner``'s meta-test is :func:`linear_head_meta_test` on its frozen features."""
    return (
        isinstance(learner, TrajectoryMetaLearner)
        and type(learner.head) is nn.Linear
        and learner.loss_fn is F.cross_entropy
    )


def meta_test_streams(
    learner: Any,
    streams: Sequence[Any],
    lr: float,
    head_reset: str = "zeros",
    train_accuracy: bool = False,
    feature_cache: dict[int, Any] | None = None,
) -> dict[str, Any]:
    """Run ``learner.meta_test`` on each stream at ``lr``.

    Returns ``curves`` (tensor ``[runs, n_classes]``: held-out accuracy on all classes seen after
    each class), ``final`` (its last column) and, with ``train_accuracy``, ``train_final``: the
    accuracy on the stream images of all classes after the stream (the papers' train accuracy).

    A learner with a linear head, cross-entropy and ``frozen_features`` (OML, ANML, ``pretrain``)
    is meta-tested by :func:`linear_head_meta_test` (the same result, faster), its features
    computed once per stream (kept in ``feature_cache`` if given, for several lrs).
    """
    curves, train_final = [], []
    for stream in streams:
        train_x = [e.train_x for e in stream]
        test_x = [e.test_x for e in stream]
        labels = [int(e.train_y[0]) for e in stream]
        if _fast_head(learner):
            features = _features(learner, stream, feature_cache)
            head = reset_head(learner.head, head_reset)
            result = linear_head_meta_test(*features, head["weight"], head.get("bias"), lr, labels)
            train_final.append(float(result["train_accuracy"]))
        else:
            result = learner.meta_test(train_x, test_x, labels=labels, head_reset=head_reset, lr=lr)
            if train_accuracy:
                again = learner.meta_test(train_x, None, labels=labels, head_reset=head_reset, lr=lr)
                train_final.append(float(again["accuracy"][-1]))
        curves.append(result["accuracy"].double())
    stacked = torch.stack(curves)
    out: dict[str, Any] = {"curves": stacked, "final": stacked[:, -1]}
    if train_accuracy:
        out["train_final"] = torch.tensor(train_final, dtype=torch.float64)
    return out


def _features(learner: Any, stream: Any, cache: dict[int, Any] | None) -> tuple[list[Tensor], list[Tensor]]:
    """The frozen features of a stream's stream and held-out images; with ``cache`` computed once
    per stream (they do not depend on the meta-test lr)."""
    if cache is not None and id(stream) in cache:
        return cache[id(stream)][1:]
    stream_f = [learner.frozen_features(e.train_x) for e in stream]
    held_out_f = [learner.frozen_features(e.test_x) for e in stream]
    if cache is not None:
        cache[id(stream)] = (stream, stream_f, held_out_f)  # the stream is kept so that its id stays unique
    return stream_f, held_out_f


def tune_lr(
    learner: Any, streams: Sequence[Any], grid: Sequence[float], head_reset: str = "zeros"
) -> tuple[float, dict[float, float]]:
    """The lr of ``grid`` with the best mean final held-out accuracy on ``streams`` (the first on
    ties), and that accuracy for every candidate. Give it validation streams only."""
    if not grid:
        raise ValueError("the learning-rate grid is empty")
    cache: dict[int, Any] = {}
    scores = {
        float(lr): float(meta_test_streams(learner, streams, lr, head_reset, feature_cache=cache)["final"].mean())
        for lr in grid
    }
    best = max(scores, key=lambda lr: (scores[lr], -list(scores).index(lr)))
    return best, scores


def parse_lr_grid(text: str) -> list[float]:
    """``"0.01,0.03"`` → ``[0.01, 0.03]`` (positive floats)."""
    try:
        grid = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"lr_grid must be comma-separated numbers, got {text!r}") from None
    if not grid or any(not (lr > 0 and math.isfinite(lr)) for lr in grid):
        raise ValueError(f"lr_grid must hold positive learning rates, got {text!r}")
    return grid


def evaluate(
    learner: Any,
    dataset: Any,
    options: dict[str, Any],
    seed: int,
    streams: dict[tuple[str, int], list[Any]] | None = None,
) -> dict[str, Any]:
    """Tune the meta-test lr on ``val`` streams, then meta-test on ``test`` streams.

    ``streams`` caches the streams by ``(split, seed)`` so that several methods share them.
    Returns ``lr``, ``tuning`` (lr → validation accuracy), ``n_val_classes`` and
    :func:`meta_test_streams`'s result on the test streams (with train accuracy).
    """
    o = options
    cache = {} if streams is None else streams

    def get(split: str, n_classes: int, seeds: list[int]) -> list[Any]:
        missing = [s for s in seeds if (split, s) not in cache]
        for s, stream in zip(
            missing,
            sequential_streams(dataset, split, n_classes, o["stream_per_class"], o["held_out_per_class"], missing),
        ):
            cache[(split, s)] = stream
        return [cache[(split, s)] for s in seeds]

    n_val = min(o["test_classes"], len(dataset.splits["val"]))
    val = get("val", n_val, [VAL_SEED_OFFSET + seed + r for r in range(o["tune_runs"])])
    lr, tuning = tune_lr(learner, val, parse_lr_grid(o["lr_grid"]), o["head_reset"])
    test = get("test", o["test_classes"], [TEST_SEED_OFFSET + seed + r for r in range(o["runs"])])
    result = meta_test_streams(learner, test, lr, o["head_reset"], train_accuracy=True)
    return {"lr": lr, "tuning": tuning, "n_val_classes": n_val, **result}


# ------------------------------------------------------------------------------ the runner


def _check_options(o: dict[str, Any], dataset: Any) -> int:
    """Validate the profile against the dataset; return the number of train classes to meta-train on."""
    for key in ("trajectory", "test_classes", "stream_per_class", "held_out_per_class", "runs", "tune_runs",
                "outputs"):
        if not isinstance(o[key], int) or o[key] < 1:
            raise ValueError(f"setting {key} must be a positive integer, got {o[key]!r}")
    for key in ("remember", "meta_classes", "threads"):
        if not isinstance(o[key], int) or o[key] < 0:
            raise ValueError(f"setting {key} must be a non-negative integer, got {o[key]!r}")
    if o["head_reset"] not in HEAD_RESETS:
        raise ValueError(f"setting head_reset={o['head_reset']!r}; allowed: {', '.join(HEAD_RESETS)}")
    parse_lr_grid(o["lr_grid"])
    for split in ("train", "val", "test"):
        if not dataset.splits.get(split):
            raise ValueError(f"{dataset.name} has no {split!r} classes")
    train = list(dataset.splits["train"])
    n_meta = len(train) if o["meta_classes"] == 0 else o["meta_classes"]
    if not 1 <= n_meta <= len(train):
        raise ValueError(f"setting meta_classes={o['meta_classes']}: {dataset.name} has {len(train)} train classes")
    if o["test_classes"] > len(dataset.splits["test"]):
        raise ValueError(
            f"setting test_classes={o['test_classes']}: {dataset.name} has {len(dataset.splits['test'])} test classes"
        )
    need = o["stream_per_class"] + o["held_out_per_class"]
    fewest = min(dataset.count(c) for split in ("val", "test") for c in dataset.splits[split])
    if fewest < need:
        raise ValueError(
            f"stream_per_class + held_out_per_class = {need}, but some val/test class of {dataset.name} has only "
            f"{fewest} images"
        )
    if o["outputs"] < max(n_meta, o["test_classes"]):
        raise ValueError(
            f"setting outputs={o['outputs']}: the head needs at least max(meta_classes, test_classes) = "
            f"{max(n_meta, o['test_classes'])} outputs"
        )
    return n_meta


def meta_train_classes(dataset: Any, options: dict[str, Any], seed: int) -> list[int]:
    """The train classes meta-trained on: ``meta_classes`` of them (all when 0), a random subset
    drawn with ``seed`` (every method of a run gets the same)."""
    train = list(dataset.splits["train"])
    n = _check_options(options, dataset)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    return [train[i] for i in sorted(order)]


def run(
    experiment: Any,
    methods: list[str],
    profile: Any,
    seed: int,
    out_dir: str | Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Meta-train and meta-test ``methods`` of a sequential experiment; write and return the results.

    The profile option ``threads`` (> 0) sets torch's intra-op threads for the run (restored after).
    """
    with torch_threads(int(profile.options["threads"]) or None):  # 0: leave torch's setting
        return _run(experiment, methods, profile, seed, Path(out_dir), progress)


def _run(experiment: Any, methods: list[str], profile: Any, seed: int, out_dir: Path, progress: bool) -> dict[str, Any]:
    o = profile.options
    dataset = experiment.load_data(profile)  # a missing dataset fails here, before anything is written
    classes = meta_train_classes(dataset, o, seed)
    run_info = {
        "experiment": experiment.name, "profile": profile.name, "seed": seed, "settings": profile.settings,
        "metric": METRIC, "lower_is_better": False,
    }
    path = out_dir / RESULTS_FILE
    existing = load_results(path)
    check_compatible(existing, run_info, path)
    streams: dict[tuple[str, int], list[Any]] = {}
    entries: dict[str, dict[str, Any]] = {}
    for method in methods:
        started = time.perf_counter()
        torch.manual_seed(seed)
        learner = experiment.method(method).build(profile)
        losses: list[float] = []
        if getattr(learner, "meta_trains", True):
            # every method meta-trains on the same samples (the dataset caches the images)
            sampler = TrajectorySampler(dataset, classes, o["trajectory"], o["remember"],
                                        torch.Generator().manual_seed(seed))
            losses = meta_train(
                learner, sampler, profile.meta_steps,
                reset_class_row=bool(o["reset_class_row"]) and getattr(learner, "name", "") in ("oml", "anml"),
                progress=progress, desc=f"{experiment.name}/{method}",
            )
        trained = time.perf_counter()
        result = evaluate(learner, dataset, o, seed, streams)
        mean_curve = result["curves"].mean(0)
        tail = losses[-max(1, len(losses) // 10):]
        mean, ci95 = mean_ci95(result["final"])
        n = int(mean_curve.numel())
        entries[method] = {
            "metric": METRIC,
            "lower_is_better": False,
            "mean": mean,
            "ci95": ci95,
            "n_tasks": int(result["final"].numel()),
            "n_classes": n,
            "steps": profile.meta_steps if losses else 0,
            "wall_time_s": round(time.perf_counter() - started, 3),
            "per_task": result["final"].tolist(),
            "lr": result["lr"],
            "curve": mean_curve.tolist(),
            "extra": {
                "train_accuracy": mean_ci95_entry(result["train_final"]),
                "tuning": {"split": "val", "classes": result["n_val_classes"], "runs": o["tune_runs"],
                           "accuracy": {repr(k): v for k, v in result["tuning"].items()}},
                "meta_training": {
                    "steps": len(losses), "classes": len(classes), "time_s": round(trained - started, 3),
                    "final_meta_loss": sum(tail) / len(tail) if losses else None,
                },
            },
        }
    results = merge_results(existing, run_info, entries)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_results(path, results)
    plot(results, out_dir / PLOT_FILE)
    return results


def plot(results: dict[str, Any], path: str | Path) -> None:
    """The mean accuracy-vs-classes curve of every method in ``results``, in one PNG."""
    curves = {
        name: list(enumerate(entry["curve"], start=1))
        for name, entry in results["methods"].items()
        if entry.get("curve")
    }
    title = f"{results.get('experiment')} ({results.get('profile')}): held-out accuracy, mean over runs"
    plot_accuracy_vs_classes(curves, path, title)


def outputs(out_dir: str | Path) -> str:
    """What a sequential run writes, for the CLI."""
    return f"results: {Path(out_dir) / RESULTS_FILE}\naccuracy vs classes: {Path(out_dir) / PLOT_FILE}"


def _cell(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    return f"{stat['mean']:.3f}" + ("" if stat.get("ci95") is None else f" ± {stat['ci95']:.3f}")


def table(results: dict[str, Any]) -> str:
    """The comparison table, then per method the chosen lr, the train accuracy and the curve at a few points."""
    lines = [format_table(results), "", "per method: meta-test lr (chosen on val), train accuracy, held-out accuracy "
             "after 1/10/25/N classes:"]
    for name, entry in results["methods"].items():
        curve = entry.get("curve") or []
        points = [k for k in (1, 10, 25) if k < len(curve)] + ([len(curve)] if curve else [])
        at = ", ".join(f"{k}: {curve[k - 1]:.3f}" for k in points)
        extra = entry.get("extra", {})
        lines.append(f"  {name:10s} lr {entry.get('lr')!s:7s} train {_cell(extra.get('train_accuracy')):15s} {at}")
    return "\n".join(lines)
