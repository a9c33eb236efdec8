"""Named experiments: a task family, the methods that run on it, and profiles.

Each experiment has profiles ``smoke`` (seconds; for tests), ``quick`` (minutes on 2 CPU cores)
and ``paper`` (the paper's protocol, for a GPU). A profile fixes the engine's schedule (meta
steps, meta-batch, evaluation) and the experiment's options (network, inner loop, learning
rates); each method is built from the profile by a builder function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from warpgrad.functional import make_inner_optimizer
from warpgrad.layers import MLP
from warpgrad.methods.base import MetaLearner, NoMetaLearning
from warpgrad.methods.finetune import FineTune
from warpgrad.methods.leap import Leap
from warpgrad.methods.maml import MAML, MetaSGD
from warpgrad.methods.reptile import Reptile
from warpgrad.methods.tnets import TNets
from warpgrad.methods.warpgrad import WarpGrad
from warpgrad.tasks.base import TaskFamily
from warpgrad.tasks.sine import SineFamily

PROFILE_NAMES = ("smoke", "quick", "paper")


@dataclass(frozen=True)
class Profile:
    """An experiment's schedule and options at one scale."""

    name: str
    description: str
    meta_steps: int
    meta_batch: int
    eval_every: int
    val_tasks: int
    test_tasks: int
    checkpoint_every: int
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    description: str
    build: Callable[[Profile], MetaLearner]


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    profiles: dict[str, Profile]
    make_family: Callable[[Profile], TaskFamily]
    methods: dict[str, MethodSpec]

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            raise ValueError(f"unknown profile {name!r} for {self.name}; allowed: {', '.join(self.profiles)}")
        return self.profiles[name]

    def method(self, name: str) -> MethodSpec:
        if name not in self.methods:
            raise ValueError(f"unknown method {name!r} for {self.name}; allowed: {', '.join(self.methods)}")
        return self.methods[name]


# --------------------------------------------------------------------------------------- sine


def _sine_inner(options: dict[str, Any]):
    return make_inner_optimizer(options["inner_optimizer"], lr=options["inner_lr"])


Builder = Callable[[Profile], MetaLearner]


def _sine_method(make: Callable[[nn.Module, dict[str, Any]], MetaLearner], warps: bool) -> Builder:
    """A builder: the sine MLP (with warp layers when ``warps``) handed to ``make``."""

    def build(profile: Profile) -> MetaLearner:
        o = profile.options
        return make(MLP(1, o["hidden"], 1, warp=o["warp"] if warps else None), o)

    return build


SINE_METHODS = {
    "baseline": MethodSpec(
        "no meta-learning: the WarpGrad network (identity warps) adapted from its random init",
        _sine_method(lambda m, o: NoMetaLearning(m, _sine_inner(o), o["inner_steps"]), warps=True),
    ),
    "warpgrad": MethodSpec(
        "WarpGrad: meta-learned warp layers + Warp-MAML initialisation",
        _sine_method(lambda m, o: WarpGrad(m, _sine_inner(o), o["inner_steps"], **o["warpgrad"]), warps=True),
    ),
    "maml": MethodSpec(
        "MAML: second-order meta-gradient through the inner loop",
        _sine_method(lambda m, o: MAML(m, _sine_inner(o), o["inner_steps"], **o["maml"]), warps=False),
    ),
    "fomaml": MethodSpec(
        "first-order MAML",
        _sine_method(
            lambda m, o: MAML(m, _sine_inner(o), o["inner_steps"], first_order=True, **o["fomaml"]), warps=False
        ),
    ),
    "metasgd": MethodSpec(
        "Meta-SGD: MAML with a learned learning rate per parameter",
        _sine_method(lambda m, o: MetaSGD(m, o["inner_steps"], inner_lr=o["inner_lr"], **o["metasgd"]), warps=False),
    ),
    "reptile": MethodSpec(
        "Reptile: move θ₀ towards the adapted parameters",
        _sine_method(lambda m, o: Reptile(m, _sine_inner(o), o["inner_steps"], **o["reptile"]), warps=False),
    ),
    "leap": MethodSpec(
        "Leap: shorten the task training paths",
        _sine_method(lambda m, o: Leap(m, _sine_inner(o), o["inner_steps"], **o["leap"]), warps=False),
    ),
    "tnets": MethodSpec(
        "T-Nets: linear warp layers and θ₀ learned by second-order MAML",
        _sine_method(lambda m, o: TNets(m, _sine_inner(o), o["inner_steps"], **o["tnets"]), warps=True),
    ),
    "finetune": MethodSpec(
        "fine-tuning: joint pre-training on the meta-training tasks, then adaptation",
        _sine_method(lambda m, o: FineTune(m, _sine_inner(o), o["inner_steps"], **o["finetune"]), warps=False),
    ),
}


_SINE_OPTIONS: dict[str, Any] = {
    "shots": 10,
    "test_points": 100,
    "hidden": (40, 40),
    "warp": {},
    "inner_optimizer": "sgd",
    "inner_lr": 0.01,
    "inner_steps": 5,
    "warpgrad": {
        "objective": "exact",
        "algorithm": "offline",
        "init": "maml",
        "meta_optimizer": "adam",
        "warp_lr": 1e-2,
        "init_lr": 1e-2,
        "meta_loss_data": "train",
    },
    # meta learning rates: the best of {1e-3, 3e-3, 1e-2, 3e-2} on validation tasks (docs/experiments.md)
    "maml": {"meta_optimizer": "adam", "meta_lr": 3e-2},
    "fomaml": {"meta_optimizer": "adam", "meta_lr": 3e-2},
    "metasgd": {"meta_optimizer": "adam", "meta_lr": 1e-3},
    "tnets": {"meta_optimizer": "adam", "meta_lr": 1e-2},
    "reptile": {"meta_optimizer": "adam", "meta_lr": 3e-2},
    "leap": {"meta_optimizer": "adam", "meta_lr": 3e-2},
    "finetune": {"meta_optimizer": "adam", "meta_lr": 1e-2},
}


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(base)
    out.update(changes)
    return out


SINE = Experiment(
    name="sine",
    description="Sine regression (Finn et al. 2017): 10-shot, MSE on 100 held-out points per task.",
    profiles={
        "smoke": Profile(
            "smoke", "seconds: 4 meta-steps, 4 tasks per meta-batch, 8 test tasks",
            meta_steps=4, meta_batch=4, eval_every=2, val_tasks=4, test_tasks=8, checkpoint_every=2,
            options=_with(_SINE_OPTIONS, hidden=(16, 16)),
        ),
        "quick": Profile(
            "quick", "about a minute on 2 CPU cores: 500 meta-steps of 8 tasks, 200 test tasks",
            meta_steps=500, meta_batch=8, eval_every=50, val_tasks=32, test_tasks=200,
            checkpoint_every=50, options=_SINE_OPTIONS,
        ),
        "paper": Profile(
            "paper", "MAML's schedule: 70k meta-steps of 25 tasks, 600 test tasks",
            meta_steps=70_000, meta_batch=25, eval_every=1000, val_tasks=100, test_tasks=600,
            checkpoint_every=1000, options=_SINE_OPTIONS,
        ),
    },
    make_family=lambda p: SineFamily(shots=p.options["shots"], test_points=p.options["test_points"]),
    methods=SINE_METHODS,
)

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (SINE,)}


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; allowed: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def build_method(experiment: Experiment, method: str, profile: Profile, seed: int) -> MetaLearner:
    """Build ``method`` for ``experiment`` at ``profile``; model initialisation seeded by ``seed``."""
    spec = experiment.method(method)
    torch.manual_seed(seed)
    return spec.build(profile)
