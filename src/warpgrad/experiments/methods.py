"""The recipes that build meta-learners for the meta-training experiments: :data:`METHODS`,
:func:`method_specs` (every method on an experiment's network) and :func:`build_method`."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from warpgrad.experiments.base import Experiment, MethodSpec, Profile
from warpgrad.functional import make_inner_optimizer
from warpgrad.methods.base import MetaLearner, NoMetaLearning
from warpgrad.methods.finetune import FineTune
from warpgrad.methods.leap import Leap
from warpgrad.methods.maml import MAML, MetaSGD
from warpgrad.methods.reptile import Reptile
from warpgrad.methods.tnets import TNets
from warpgrad.methods.warpgrad import WarpGrad


def _inner(o: dict[str, Any]):
    return make_inner_optimizer(o["inner_optimizer"], lr=o["inner_lr"])


Factory = Callable[[nn.Module, dict[str, Any]], MetaLearner]

#: name -> (description, uses warp layers, factory(model, options))
METHODS: dict[str, tuple[str, bool, Factory]] = {
    "baseline": (
        "no meta-learning: the WarpGrad network (identity warps) adapted from its random init",
        True, lambda m, o: NoMetaLearning(m, _inner(o), o["inner_steps"]),
    ),
    "warpgrad": (
        "WarpGrad: meta-learned warp layers (+ Warp-MAML or Warp-Leap initialisation)",
        True, lambda m, o: WarpGrad(m, _inner(o), o["inner_steps"], **o["warpgrad"]),
    ),
    "maml": (
        "MAML: second-order meta-gradient through the inner loop",
        False, lambda m, o: MAML(m, _inner(o), o["inner_steps"], **o["maml"]),
    ),
    "fomaml": (
        "first-order MAML",
        False, lambda m, o: MAML(m, _inner(o), o["inner_steps"], first_order=True, **o["fomaml"]),
    ),
    "metasgd": (
        "Meta-SGD: MAML with a learned learning rate per parameter",
        False, lambda m, o: MetaSGD(m, o["inner_steps"], inner_lr=o["inner_lr"], **o["metasgd"]),
    ),
    "reptile": (
        "Reptile: move θ₀ towards the adapted parameters",
        False, lambda m, o: Reptile(m, _inner(o), o["inner_steps"], **o["reptile"]),
    ),
    "leap": (
        "Leap: shorten the task training paths",
        False, lambda m, o: Leap(m, _inner(o), o["inner_steps"], **o["leap"]),
    ),
    "tnets": (
        "T-Nets: linear warp layers and θ₀ learned by second-order MAML",
        True, lambda m, o: TNets(m, _inner(o), o["inner_steps"], **o["tnets"]),
    ),
    "finetune": (
        "fine-tuning: joint pre-training on the meta-training tasks, then adaptation",
        False, lambda m, o: FineTune(m, _inner(o), o["inner_steps"], **o["finetune"]),
    ),
}


def method_specs(make_model: Callable[[dict[str, Any], bool], nn.Module]) -> dict[str, MethodSpec]:
    """Every method of :data:`METHODS` on the network ``make_model(options, warps)``."""

    def spec(description: str, warps: bool, factory: Factory) -> MethodSpec:
        return MethodSpec(description, lambda p: factory(make_model(p.options, warps), p.options))

    return {name: spec(*recipe) for name, recipe in METHODS.items()}


def build_method(experiment: Experiment, method: str, profile: Profile, seed: int) -> MetaLearner:
    """Build ``method`` for ``experiment`` at ``profile``; model initialisation seeded by ``seed``."""
    spec = experiment.method(method)
    torch.manual_seed(seed)
    return spec.build(profile)
