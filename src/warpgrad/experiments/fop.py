"""FOP against its plain base optimisers: a small convnet trained on image classification, :data:`FOP_EXPERIMENT`.

Moskovitz, Wang, Lan, Kapoor, Miconi, Yosinski, Rawal. First-Order Preconditioning via Hypergradient
Descent. 2019. arXiv:1910.08461. The paper trains CNNs on CIFAR-10 and ImageNet with FOP around SGD,
momentum and Adam; here (CPU-sized) a small convnet learns Fashion-MNIST (``data="fashion-mnist"``,
the default) or KanjiVG characters (``data="kanji"``: ``kanji.classes`` characters, the first
``kanji.train_drawings`` of each one's ``kanji.drawings`` jittered drawings to train on, the rest to
test on).

Methods: ``sgd``, ``momentum``, ``adam`` (torch's optimisers) and ``fop-sgd``, ``fop-momentum``,
``fop-adam`` (:class:`warpgrad.FOP` around each, at the same learning rate and base
hyperparameters, plus ``hyper_lr``, ``structure`` and ``parameterization``). Each method's options
are in ``profile.options[METHOD]`` (``--set fop-sgd.hyper_lr=0.01``).

The network: three 3×3 convolutions (``width``, 2·``width``, 2·``width`` channels; ReLU, 2×2 max
pooling after each) and a dense head on the 3×3 map; FOP preconditions every conv kernel over its 9
spatial positions and the head over its inputs. A profile's schedule counts minibatch steps:
``meta_steps`` steps of ``meta_batch`` images (the training images in seeded epochs of random
order), a test evaluation (``metrics.csv`` row) every ``eval_every`` steps and at the end.

A method's result is over ``runs`` independent runs, run ``r`` with seed ``seed + r`` for the
network's initial weights, the training subset (``train_size``; 0 = all) and the order of the data,
so every method sees the same initial weights and minibatches at a seed. The test set (``test_size``
images, 0 = all) is fixed. With ``validation=true`` a fixed sixth of the training images (seed 0)
is held out and evaluated on instead of the test set: hyperparameters are chosen that way.
``mean`` is the final test accuracy with a Student's t interval over runs;
``extra`` holds the final test loss, the final train loss (mean minibatch loss of the last
``eval_every`` steps), and the median seconds of ``optimizer.step()`` (``step_time_s``) and of a whole
training step (``train_step_time_s``), for FOP's overhead against its base.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from warpgrad.errors import UsageError
from warpgrad.experiments.base import MethodSpec, Profile, TrialExperiment, _schedule, _with

DATA = ("fashion-mnist", "kanji")
BASES = ("sgd", "momentum", "adam")
_EVAL_CHUNK = 500
COLUMNS = ("test_accuracy", "train_loss", "test_loss")  # of metrics.csv, after "step"


# ------------------------------------------------------------------------------ data


@functools.lru_cache(maxsize=2)
def _kanji_arrays(classes: int, drawings: int, train_drawings: int):
    """((x, y) train, (x, y) test) of ``classes`` KanjiVG characters (a fixed subset, seed 0): the
    first ``train_drawings`` drawings of each to train on, the others to test on."""
    from warpgrad.data.kanjivg import KanjiDataset

    if not 0 < train_drawings < drawings:
        raise UsageError(f"kanji.train_drawings={train_drawings}: must be in 1..{drawings - 1} (kanji.drawings - 1)")
    ds = KanjiDataset(n_classes=classes, drawings=drawings, image_size=28, seed=0, splits={"train": 1.0})
    images = torch.stack([ds.images(c) for c in range(len(ds.classes))])  # [classes, drawings, 1, 28, 28]
    labels = torch.arange(classes).unsqueeze(1).expand(classes, drawings)
    cut = train_drawings
    return (
        (images[:, :cut].reshape(-1, 1, 28, 28), labels[:, :cut].reshape(-1)),
        (images[:, cut:].reshape(-1, 1, 28, 28), labels[:, cut:].reshape(-1)),
    )


def _data(o: dict[str, Any]):
    """The (train, test) arrays and the number of classes of option ``data``."""
    if o["data"] == "fashion-mnist":
        from warpgrad.experiments.streams import _arrays

        train, test = _arrays("fashion-mnist")
        return train, test, 10
    k = o["kanji"]
    train, test = _kanji_arrays(k["classes"], k["drawings"], k["train_drawings"])
    return train, test, k["classes"]


def validation_split(x: torch.Tensor, y: torch.Tensor) -> tuple[tuple, tuple]:
    """((x, y) to train on, (x, y) to validate on): a fixed (seed 0) sixth of the images held out."""
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    held, kept = order[: x.shape[0] // 6], order[x.shape[0] // 6 :]
    return (x[kept], y[kept]), (x[held], y[held])


def _check_options(o: dict[str, Any]) -> None:
    if o["data"] not in DATA:
        raise UsageError(f"data={o['data']!r}: allowed are {', '.join(repr(d) for d in DATA)}")
    for key in ("runs", "width"):
        if o[key] < 1:
            raise UsageError(f"{key}={o[key]}: must be a positive integer")
    for key in ("train_size", "test_size"):
        if o[key] < 0:
            raise UsageError(f"{key}={o[key]}: must be >= 0 (0: all images)")


# ------------------------------------------------------------------------------ the network


def make_model(in_channels: int, n_classes: int, width: int, seed: int) -> nn.Module:
    """The convnet of the module docstring for 28×28 images, its weights drawn from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        channels = [in_channels, width, 2 * width, 2 * width]
        for c_in, c_out in zip(channels, channels[1:]):  # 28 -> 14 -> 7 -> 3
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels[-1] * 9, n_classes))


def make_optimizer(method: str, params, options: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimiser of ``method`` ("sgd", "fop-adam", ...) with its options (lr, momentum, hyper_lr, ...)."""
    from warpgrad.optim import FOP

    o = dict(options)
    base = method.removeprefix("fop-")
    if base not in BASES:
        raise UsageError(f"unknown method {method!r}; allowed: {', '.join([*BASES, *(f'fop-{b}' for b in BASES)])}")
    if method.startswith("fop-"):
        return FOP(params, base=base, **o)
    if base == "adam":
        return torch.optim.Adam(params, **o)
    return torch.optim.SGD(params, **o)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``x``, ``y``."""
    correct, loss = 0, 0.0
    for start in range(0, x.shape[0], _EVAL_CHUNK):
        logits = model(x[start : start + _EVAL_CHUNK])
        target = y[start : start + _EVAL_CHUNK]
        correct += int((logits.argmax(1) == target).sum())
        loss += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
    return correct / x.shape[0], loss / x.shape[0]


def _batches(n: int, batch_size: int, generator: torch.Generator):
    """Index batches of ``batch_size`` over epochs of random order of ``n`` items (forever)."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


# ------------------------------------------------------------------------------ the trial


class ConvTrial:
    """One method of the fop experiment: ``runs`` training runs of the convnet (see the module docstring)."""

    def __init__(self, method: str, profile: Profile):
        _check_options(profile.options)
        self.method = method
        self.profile = profile
        self.options = dict(profile.options[method])

    def model(self, seed: int, n_classes: int) -> nn.Module:
        return make_model(1, n_classes, self.profile.options["width"], seed)

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return make_optimizer(self.method, model.parameters(), self.options)

    def run(self, seed: int, method_dir: Path, progress: bool) -> dict[str, Any]:
        """Train and evaluate ``runs`` times; the results entry (history: the mean over runs)."""
        from tqdm import tqdm

        from warpgrad.engine.results import mean_ci95, mean_ci95_entry

        p, o = self.profile, self.profile.options
        started = time.perf_counter()
        (x_train, y_train), (x_test, y_test), n_classes = _data(o)
        if o["validation"]:  # evaluate on a fixed sixth of the training images, never on the test set
            (x_train, y_train), (x_test, y_test) = validation_split(x_train, y_train)
        if o["test_size"]:  # a fixed subset: the same test images in every run and method
            keep = torch.randperm(x_test.shape[0], generator=torch.Generator().manual_seed(0))[: o["test_size"]]
            x_test, y_test = x_test[keep], y_test[keep]
        runs = []
        with tqdm(total=o["runs"] * p.meta_steps, desc=f"fop/{self.method}", disable=not progress) as bar:
            for r in range(o["runs"]):
                runs.append(self._train(seed + r, x_train, y_train, x_test, y_test, n_classes, r, bar))
        accuracy = [run["accuracy"] for run in runs]
        mean, ci95 = mean_ci95(accuracy)
        history = [
            {"step": rows[0]["step"], **{key: sum(row[key] for row in rows) / len(rows) for key in COLUMNS}}
            for rows in zip(*(run["history"] for run in runs))
        ]
        stats = ("test_loss", "train_loss", "step_time_s", "train_step_time_s")
        return {
            "metric": "accuracy",
            "lower_is_better": False,
            "mean": mean,
            "ci95": ci95,
            "n_tasks": len(runs),
            "steps": p.meta_steps,
            "wall_time_s": round(time.perf_counter() - started, 3),
            "per_task": accuracy,
            "history": history,
            "extra": {
                **{key: mean_ci95_entry([run[key] for run in runs]) for key in stats},
                "optimizer": {"method": self.method, **self.options},
                "data": {"name": o["data"], "train_images": runs[0]["train_images"], "test_images": x_test.shape[0]},
            },
        }

    def _train(self, seed, x_train, y_train, x_test, y_test, n_classes, r, bar) -> dict[str, Any]:
        """One training run from ``seed``: its final test accuracy, losses, history and step times."""
        from warpgrad.engine.interrupt import check_finite

        p, o = self.profile, self.profile.options
        generator = torch.Generator().manual_seed(seed)
        if o["train_size"] and o["train_size"] < x_train.shape[0]:
            keep = torch.randperm(x_train.shape[0], generator=generator)[: o["train_size"]]
            x_train, y_train = x_train[keep], y_train[keep]
        if x_train.shape[0] < p.meta_batch:
            raise UsageError(f"meta_batch={p.meta_batch} is larger than the {x_train.shape[0]} training images")
        model = self.model(seed, n_classes)
        optimizer = self.optimizer(model)
        batches = _batches(x_train.shape[0], p.meta_batch, generator)
        history, losses, step_times, train_step_times = [], [], [], []
        for step in range(1, p.meta_steps + 1):
            t0 = time.perf_counter()
            index = next(batches)
            loss = nn.functional.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            t1 = time.perf_counter()
            optimizer.step()
            t2 = time.perf_counter()
            step_times.append(t2 - t1)
            train_step_times.append(t2 - t0)
            losses.append(loss.item())
            bar.update()
            if step % p.eval_every == 0 or step == p.meta_steps:
                window = losses[-(step - (history[-1]["step"] if history else 0)) :]
                train_loss = sum(window) / len(window)
                check_finite(self.method, f"step {step} of run {r + 1}", {"train loss": train_loss})
                accuracy, test_loss = evaluate(model, x_test, y_test)
                history.append({"step": step, **dict(zip(COLUMNS, (accuracy, train_loss, test_loss)))})
        tail = losses[-min(p.eval_every, len(losses)) :]
        return {
            "accuracy": history[-1]["test_accuracy"],
            "test_loss": history[-1]["test_loss"],
            "train_loss": sum(tail) / len(tail),
            "step_time_s": _median(step_times),
            "train_step_time_s": _median(train_step_times),
            "history": history,
            "train_images": x_train.shape[0],
        }


def _median(values: list[float]) -> float:
    return float(torch.tensor(values, dtype=torch.float64).median())


def _trial(method: str):
    def build(profile: Profile) -> ConvTrial:
        return ConvTrial(method, profile)

    return build


# ------------------------------------------------------------------------------ profiles

# Learning rates per base (common values, not tuned), the same for the plain optimiser and FOP
# around it. hyper_lr: the best validation accuracy of the grid 0.001, 0.01, 0.1 (300 steps, 2 runs,
# a held-out sixth of the training images; results/tune_fop.sh, results in results/fop-tuning/).
_SGD = {"lr": 0.1}
_MOMENTUM = {"lr": 0.03, "momentum": 0.9}
_ADAM = {"lr": 1e-3}
_FOP = {"structure": "layer", "parameterization": "factored"}
_METHODS: dict[str, dict[str, Any]] = {
    "sgd": _SGD,
    "fop-sgd": {**_SGD, "hyper_lr": 0.1, **_FOP},
    "momentum": _MOMENTUM,
    "fop-momentum": {**_MOMENTUM, "hyper_lr": 0.01, **_FOP},
    "adam": _ADAM,
    "fop-adam": {**_ADAM, "hyper_lr": 0.1, **_FOP},
}

_BASE: dict[str, Any] = {
    "data": "fashion-mnist",
    "kanji": {"classes": 100, "drawings": 20, "train_drawings": 15},
    "train_size": 0,
    "test_size": 0,
    "validation": False,
    "width": 16,
    "runs": 3,
    "threads": 1,
    **_METHODS,
}


FOP_EXPERIMENT = TrialExperiment(
    "fop",
    "FOP (first-order preconditioning, Moskovitz et al. 2019) against plain SGD, momentum and Adam: "
    "a small convnet on Fashion-MNIST (or KanjiVG with --set data=kanji); final test accuracy over runs.",
    {
        "smoke": Profile(
            "smoke",
            "seconds: 20 steps of 16 images from 256, width 4, 1 run (tests)",
            **_schedule(20, 16, 10, 0, 0),
            options=_with(
                _BASE,
                kanji={"classes": 10, "drawings": 6, "train_drawings": 4},
                train_size=256,
                test_size=200,
                width=4,
                runs=1,
            ),
        ),
        "quick": Profile(
            "quick",
            "about 6.5 minutes on one CPU thread (the 6 methods): 3 runs of 500 steps of 64 images "
            "(about half an epoch of Fashion-MNIST), width 16, 1,000 test images",
            **_schedule(500, 64, 100, 0, 0),
            options=_with(_BASE, test_size=1000),
        ),
        "paper": Profile(
            "paper",
            "closer to the paper's CNN runs: 5 epochs of the whole Fashion-MNIST (2,345 steps of 128), "
            "width 32, the whole test set, 5 runs (hours on a CPU)",
            **_schedule(2345, 128, 235, 0, 0),
            options=_with(_BASE, width=32, runs=5),
        ),
    },
    make_family=lambda p: None,  # type: ignore[arg-type,return-value]
    methods={
        "sgd": MethodSpec("plain SGD", _trial("sgd")),
        "fop-sgd": MethodSpec("FOP around SGD", _trial("fop-sgd")),
        "momentum": MethodSpec("SGD with momentum 0.9", _trial("momentum")),
        "fop-momentum": MethodSpec("FOP around SGD with momentum 0.9", _trial("fop-momentum")),
        "adam": MethodSpec("Adam", _trial("adam")),
        "fop-adam": MethodSpec("FOP around Adam", _trial("fop-adam")),
    },
    curve=("test_accuracy", "step", "test accuracy", False),
)
