"""The continual-learning stream experiments (digits-permuted, fmnist-permuted, fmnist-split): the
datasets' arrays, validation splits and streams, and the continual learners run on them."""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import nn

from warpgrad.errors import UsageError
from warpgrad.experiments.base import MethodSpec, Profile, StreamExperiment, _with
from warpgrad.layers import MLP


@functools.lru_cache(maxsize=2)
def _arrays(dataset: str):
    """(train, test) arrays of ``dataset``, read and verified once per process (runs and methods share them)."""
    from warpgrad.data import digits, mnist

    loaders = {
        "digits": lambda: _split_arrays(digits.load_digits_arrays()),
        "fashion-mnist": lambda: (mnist.load_fashion_mnist_arrays("train"), mnist.load_fashion_mnist_arrays("test")),
        "mnist5k": lambda: _split_arrays(mnist.load_mnist5k_arrays()),
    }
    return loaders[dataset]()


def _split_arrays(arrays, test_fraction: float = 0.25, seed: int = 0):
    """A fixed (``seed``) train/test split of arrays that ship without one."""
    x, y = arrays
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    cut = int(x.shape[0] * (1 - test_fraction))
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


#: the seed of the validation split carved from the training images (fixed: not the run seed)
VALIDATION_SEED = 1


def _stream_arrays(dataset: str, o: dict[str, Any]):
    """(train, evaluation) arrays of a stream experiment: the test set, or with ``validation`` > 0
    that fraction of the training images (a fixed split, seed :data:`VALIDATION_SEED`) — the held-out
    data to tune on, never the test set — and the rest to train on."""
    train, test = _arrays(dataset)
    fraction = o["validation"]
    if not 0 <= fraction < 1:
        raise UsageError(f"validation must be a fraction in [0, 1) of the training images, got {fraction!r}")
    if fraction > 0:
        train, test = _split_arrays(train, fraction, seed=VALIDATION_SEED)
    return train, test


def _subsample(n: int | None, generator: torch.Generator, *arrays):
    """``n`` of the rows of ``arrays`` drawn with ``generator`` (all when ``n`` is None or too large)."""
    if n is None or n >= arrays[0].shape[0]:
        return arrays
    index = torch.randperm(arrays[0].shape[0], generator=generator)[:n]
    return tuple(a[index] for a in arrays)


def _permuted_stream(dataset: str) -> Callable[[Profile, int], Any]:
    def make(p: Profile, seed: int):
        from warpgrad.tasks.continual import permuted_stream

        train, test = _stream_arrays(dataset, p.options)
        train = _subsample(p.options["train_per_experience"], torch.Generator().manual_seed(seed), *train)
        return permuted_stream(train, test, p.options["experiences"], seed=seed)

    return make


#: the ``scenario`` option of split experiments -> the stream's scenario
SPLIT_SCENARIOS = {"task": "task-incremental", "class": "class-incremental"}


def _split_stream(dataset: str) -> Callable[[Profile, int], Any]:
    """Split streams in the dataset's class order (0/1, 2/3, …; Zenke et al. 2017's protocol, the
    same order in every run); ``train_per_experience`` training images drawn per experience."""

    def make(p: Profile, seed: int):
        from warpgrad.tasks.continual import split_stream

        o = p.options
        if o["scenario"] not in SPLIT_SCENARIOS:
            raise UsageError(f"unknown scenario {o['scenario']!r}; allowed: {', '.join(SPLIT_SCENARIOS)}")
        train, test = _stream_arrays(dataset, o)
        stream = split_stream(train, test, o["classes_per_experience"], SPLIT_SCENARIOS[o["scenario"]])
        generator = torch.Generator().manual_seed(seed)
        for e in stream:
            e.train_x, e.train_y = _subsample(o["train_per_experience"], generator, e.train_x, e.train_y)
        return stream

    return make


def _stream_methods(in_features: int) -> dict[str, MethodSpec]:
    from warpgrad.methods.continual import EWC, DHPLearner, SGDLearner

    def mlp(o: dict[str, Any]) -> nn.Module:
        return MLP(in_features, o["hidden"], 10)

    def features(o: dict[str, Any]) -> nn.Module:
        return nn.Sequential(*list(mlp(o).layers)[:-1])  # the MLP without its output layer

    def ewc(o: dict[str, Any], **kw: Any) -> EWC:
        return EWC(nn.Sequential(nn.Flatten(), mlp(o)), o["lr"], o["ewc_lambda"], optimizer=o["optimizer"], **kw)

    def dhp(o: dict[str, Any], ewc_lambda: float) -> DHPLearner:
        return DHPLearner(
            nn.Sequential(nn.Flatten(), features(o)),
            o["hidden"][-1],
            10,
            o["lr"],
            ewc_lambda=ewc_lambda,
            optimizer=o["optimizer"],
        )

    def sgd(o: dict[str, Any]) -> SGDLearner:
        return SGDLearner(nn.Sequential(nn.Flatten(), mlp(o)), o["lr"], optimizer=o["optimizer"])

    return {
        "sgd": MethodSpec(
            "fine-tuning through the stream with the profile's optimiser (no protection; forgets)",
            lambda p: sgd(p.options),
        ),
        "ewc": MethodSpec("EWC, exact Fisher (paper's λ/2 convention)", lambda p: ewc(p.options, fisher="exact")),
        "ewc-empirical": MethodSpec("EWC, empirical Fisher", lambda p: ewc(p.options, fisher="empirical")),
        "ewc-online": MethodSpec(
            "online EWC (γ = 1), exact Fisher", lambda p: ewc(p.options, fisher="exact", online=True)
        ),
        "dhp": MethodSpec("DHP Softmax: Hebbian plastic output layer", lambda p: dhp(p.options, 0.0)),
        "dhp-ewc": MethodSpec(
            "DHP Softmax + EWC on the slow weights", lambda p: dhp(p.options, p.options["ewc_lambda"])
        ),
    }


# optimizer: "sgd" or "adam", for every method (the "sgd" method is fine-tuning with it).
# validation: 0 evaluates on the test set; 0 < v < 1 on that fraction of the training images (for tuning).
# threads: torch's intra-op threads during the run (see warpgrad.engine.streams).
# The quick profiles' lr, epochs and ewc_lambda were tuned on held-out training images (docs/continual.md).
_PERMUTED = {
    "experiences": 5,
    "train_per_experience": 10_000,
    "hidden": (100, 100),
    "optimizer": "sgd",
    "lr": 0.1,
    "epochs": 1,
    "batch_size": 32,
    "ewc_lambda": 1.0,
    "fisher_samples": 500,
    "probe_samples": 0,  # > 0: linear probes on that many examples per experience (representational forgetting)
    "runs": 3,
    "validation": 0.0,
    "threads": 1,
}
_SPLIT = _with(_PERMUTED, scenario="task", classes_per_experience=2, train_per_experience=None)


def _stream_experiment(
    name: str,
    description: str,
    dataset: str,
    in_features: int,
    quick: dict[str, Any],
    paper: dict[str, Any],
    base: dict[str, Any] = _PERMUTED,
    smoke: dict[str, Any] | None = None,
    make_stream: Callable[[str], Callable[[Profile, int], Any]] = _permuted_stream,
) -> StreamExperiment:
    def profile(label: str, text: str, options: dict[str, Any]) -> Profile:
        return Profile(
            label,
            text,
            meta_steps=1,
            meta_batch=1,
            eval_every=1,
            val_tasks=1,
            test_tasks=1,
            checkpoint_every=1,
            options=options,
        )

    smoke = {
        "description": "seconds: 3 experiences of 300 images, 2 runs (tests)",
        "experiences": 3,
        "train_per_experience": 300,
        **(smoke or {}),
    }
    return StreamExperiment(
        name,
        description,
        {
            "smoke": profile(
                "smoke", smoke.pop("description"), _with(base, hidden=(32,), runs=2, fisher_samples=50, **smoke)
            ),
            "quick": profile("quick", quick.pop("description"), _with(base, **quick)),
            "paper": profile("paper", paper.pop("description"), _with(base, **paper)),
        },
        make_family=lambda p: None,  # type: ignore[arg-type,return-value]
        methods=_stream_methods(in_features),
        dataset=dataset,
        make_stream=make_stream(dataset),
    )


DIGITS_PERMUTED = _stream_experiment(
    "digits-permuted",
    "Permuted scikit-learn digits (8×8): 5 pixel permutations learned in sequence; average accuracy after the stream.",
    "digits",
    64,
    quick={
        "description": "minutes: 5 experiences of all 1,347 training digits, SGD 30 epochs at lr 0.03, "
        "λ = 30 (tuned on held-out training digits), 5 runs",
        "train_per_experience": None,
        "runs": 5,
        "epochs": 30,
        "lr": 0.03,
        "ewc_lambda": 30.0,
    },
    paper={
        "description": "10 experiences, 10 runs (quick's lr, epochs and λ, not re-tuned)",
        "train_per_experience": None,
        "experiences": 10,
        "runs": 10,
        "epochs": 30,
        "lr": 0.03,
        "ewc_lambda": 30.0,
    },
)
FMNIST_PERMUTED = _stream_experiment(
    "fmnist-permuted",
    "Permuted Fashion-MNIST (the EWC benchmark protocol on Fashion-MNIST): pixel permutations "
    "learned in sequence; average accuracy after the stream.",
    "fashion-mnist",
    784,
    quick={
        "description": "minutes on 2 CPU cores: 5 experiences of 10,000 images, SGD 3 epochs at lr 0.1, λ = 1 "
        "(tuned on held-out training images), 5 runs",
        "epochs": 3,
        "lr": 0.1,
        "ewc_lambda": 1.0,
        "runs": 5,
    },
    paper={
        "description": "10 experiences of all 60,000 images, MLP 784-400-400-10, 5 runs (quick's lr, epochs "
        "and λ, not re-tuned)",
        "experiences": 10,
        "train_per_experience": None,
        "hidden": (400, 400),
        "runs": 5,
        "epochs": 3,
        "lr": 0.1,
        "ewc_lambda": 1.0,
    },
)
FMNIST_SPLIT = _stream_experiment(
    "fmnist-split",
    "Split Fashion-MNIST (Zenke et al. 2017's split protocol): 5 experiences of 2 classes "
    "(0/1, 2/3, …) learned in sequence; option scenario = task (task-incremental: the output units of the "
    "experience's classes only, a masked multi-head) or class (class-incremental: all 10 outputs, no task "
    "identity); average accuracy after the stream.",
    "fashion-mnist",
    784,
    base=_SPLIT,
    smoke={
        "description": "seconds: 5 experiences of 100 images, 2 runs (tests)",
        "experiences": 5,
        "train_per_experience": 100,
    },
    quick={
        "description": "minutes on 2 CPU cores: 5 experiences of 2,000 images, SGD 3 epochs at lr 0.1, λ = 100 "
        "(tuned on held-out training images, task-incremental), 5 runs",
        "train_per_experience": 2000,
        "epochs": 3,
        "lr": 0.1,
        "ewc_lambda": 100.0,
        "runs": 5,
    },
    paper={
        "description": "5 experiences of all 12,000 images, MLP 784-400-400-10, 5 runs (quick's lr, epochs "
        "and λ, not re-tuned)",
        "hidden": (400, 400),
        "epochs": 3,
        "lr": 0.1,
        "ewc_lambda": 100.0,
        "runs": 5,
    },
    make_stream=_split_stream,
)
