"""Meta-learning methods on an experiment's network, built from the method registry.

:func:`method_specs` gives every registered meta-learning method (or the ones named) on the network
``make_model(options, warps)``; each learner is built by :func:`warpgrad.methods.registry.build`
from the profile's inner-loop options (``inner_optimizer``, ``inner_lr``, ``inner_steps``) and the
method's typed config, whose fields the profile's ``options[METHOD]`` and ``--set METHOD.FIELD``
override. :func:`build_method` seeds the model's initialisation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

import torch
from torch import nn

from warpgrad.core.optim import make_inner_optimizer
from warpgrad.experiments.base import Experiment, MethodSpec, Profile
from warpgrad.methods.base import MetaLearner
from warpgrad.methods.registry import build, make_config, method_info, registered


def _inner(o: dict[str, Any]) -> Any:
    """The profile's inner optimiser (``inner_optimizer`` at ``inner_lr``)."""
    return make_inner_optimizer(o["inner_optimizer"], lr=o["inner_lr"])


def resolved_config(name: str, options: dict[str, Any]) -> Any:
    """Method ``name``'s config: its defaults, overridden by ``options[name]`` (the profile's)."""
    return make_config(name, options.get(name, {}))


def _builder(name: str) -> Callable[[nn.Module, dict[str, Any]], MetaLearner]:
    def make(model: nn.Module, o: dict[str, Any]) -> MetaLearner:
        return build(name, model, _inner(o), o["inner_steps"], resolved_config(name, o), o)

    return make


#: the built-in meta-learning methods: name -> (description, uses warp layers, build(model, options))
METHODS: dict[str, tuple[str, bool, Callable[[nn.Module, dict[str, Any]], MetaLearner]]] = {
    name: (info.description, info.uses_warps, _builder(name)) for name, info in registered().items()
}


def method_specs(
    make_model: Callable[[dict[str, Any], bool], nn.Module], names: Iterable[str] | None = None
) -> dict[str, MethodSpec]:
    """The registered methods (all, or ``names``) on the network ``make_model(options, warps)``;
    ``warps`` is True for the methods that use warp layers (baseline, WarpGrad, T-Nets)."""
    chosen = list(registered()) if names is None else [method_info(n).name for n in names]

    def spec(name: str) -> MethodSpec:
        info = method_info(name)
        make = _builder(name)
        return MethodSpec(info.description, lambda p: make(make_model(p.options, info.uses_warps), p.options))

    return {name: spec(name) for name in chosen}


def describe_config(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The resolved options of registered method ``name`` as a plain dict (for ``warpgrad show``)."""
    return dataclasses.asdict(resolved_config(name, options))


def build_method(experiment: Experiment, method: str, profile: Profile, seed: int) -> MetaLearner:
    """Build ``method`` for ``experiment`` at ``profile``; model initialisation seeded by ``seed``."""
    spec = experiment.method(method)
    torch.manual_seed(seed)
    return spec.build(profile)


def run_configuration(experiment: Experiment, profile: Profile, methods: Iterable[str]) -> dict[str, Any]:
    """Everything that decides a run of ``methods``: the schedule, the experiment's own options and
    every method's resolved options (a registered method's typed config; a continual learner's
    entry in the options). What ``warpgrad show`` prints and results entries record."""
    from warpgrad.experiments.base import SCHEDULE_FIELDS

    known = registered()
    if "inner_optimizer" in profile.options:
        _inner(profile.options)  # an unknown inner optimiser is refused here, as when a run builds it
    method_options: dict[str, Any] = {}
    for name in methods:
        if name in known and "inner_steps" in profile.options:
            method_options[name] = describe_config(name, profile.options)
        else:  # continual-stream methods read the experiment's options
            method_options[name] = profile.options.get(name, "the experiment's options")
    return {
        "experiment": experiment.name,
        "profile": profile.name,
        "settings": profile.settings,
        "schedule": {k: getattr(profile, k) for k in SCHEDULE_FIELDS},
        "options": {k: v for k, v in profile.options.items() if k not in method_options and k not in known},
        "methods": method_options,
    }
