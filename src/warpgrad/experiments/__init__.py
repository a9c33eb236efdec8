"""Named experiments: a task family, the methods that run on it, and profiles.

Each experiment has profiles ``smoke`` (seconds; for tests), ``quick`` (minutes on 2 CPU cores)
and ``paper`` (the paper's protocol, for a GPU). A profile fixes the engine's schedule (meta
steps, meta-batch, evaluation) and the experiment's options (data, network, inner loop, each
method's meta-optimiser); ``--set KEY=VALUE`` overrides an option or a schedule field.

Every method of an experiment is built by the same recipe: the experiment's network (with warp
layers for the methods that use them), the experiment's inner optimiser and inner steps, and the
method's own options from ``profile.options[METHOD]``.

This package holds the registry :data:`EXPERIMENTS` and :func:`get_experiment`; the types are in
:mod:`~warpgrad.experiments.base`, the method recipes in :mod:`~warpgrad.experiments.methods` and
each family of experiments in a module of its own. An experiment defined elsewhere can be named
``package.module:NAME`` (see :func:`get_experiment`) or added with :func:`register_experiment`.
"""

from __future__ import annotations

import importlib

from warpgrad.experiments.base import (
    PROFILE_NAMES,
    SCHEDULE_FIELDS,
    Experiment,
    MethodSpec,
    Profile,
    SequentialExperiment,
    StreamExperiment,
)
from warpgrad.experiments.continual import SINE_CONTINUAL
from warpgrad.experiments.images import (
    KANJI_FEWSHOT,
    KANJI_MULTISHOT,
    MINIIMAGENET,
    OMNIGLOT_FEWSHOT,
    OMNIGLOT_MULTISHOT,
    TIEREDIMAGENET,
    _load_dataset,
)
from warpgrad.experiments.methods import METHODS, build_method, method_specs
from warpgrad.experiments.sequential import KANJI_SEQUENTIAL, OMNIGLOT_SEQUENTIAL
from warpgrad.experiments.sine import SINE
from warpgrad.experiments.streams import (
    DIGITS_PERMUTED,
    FMNIST_PERMUTED,
    FMNIST_SPLIT,
    SPLIT_SCENARIOS,
    VALIDATION_SEED,
    _arrays,
    _stream_arrays,
)

__all__ = [
    "DIGITS_PERMUTED",
    "EXPERIMENTS",
    "FMNIST_PERMUTED",
    "FMNIST_SPLIT",
    "KANJI_FEWSHOT",
    "KANJI_MULTISHOT",
    "KANJI_SEQUENTIAL",
    "METHODS",
    "MINIIMAGENET",
    "OMNIGLOT_FEWSHOT",
    "OMNIGLOT_MULTISHOT",
    "OMNIGLOT_SEQUENTIAL",
    "PROFILE_NAMES",
    "SCHEDULE_FIELDS",
    "SINE",
    "SINE_CONTINUAL",
    "SPLIT_SCENARIOS",
    "TIEREDIMAGENET",
    "VALIDATION_SEED",
    "Experiment",
    "MethodSpec",
    "Profile",
    "SequentialExperiment",
    "StreamExperiment",
    "_arrays",
    "_load_dataset",
    "_stream_arrays",
    "build_method",
    "get_experiment",
    "method_specs",
    "register_experiment",
]

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        SINE, SINE_CONTINUAL, KANJI_MULTISHOT, KANJI_FEWSHOT, OMNIGLOT_MULTISHOT, OMNIGLOT_FEWSHOT, MINIIMAGENET,
        TIEREDIMAGENET, DIGITS_PERMUTED, FMNIST_PERMUTED, FMNIST_SPLIT, KANJI_SEQUENTIAL, OMNIGLOT_SEQUENTIAL,
    )
}


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name``, or with ``package.module:NAME`` the :class:`Experiment`
    ``NAME`` of that module (imported).

    Raises:
        ValueError: one line naming the problem: an unknown name (and the allowed ones), a module
            that cannot be imported, a missing attribute (and the module's experiments), or an
            attribute that is not an :class:`Experiment`.
    """
    if ":" in name:
        return _import_experiment(name)
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; allowed: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def _import_experiment(name: str) -> Experiment:
    """The :class:`Experiment` named by ``package.module:NAME``."""
    module_name, _, attribute = name.partition(":")
    if not module_name or module_name.startswith(".") or not attribute.isidentifier():
        raise ValueError(f"experiment {name!r}: expected a registered name or package.module:NAME")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"experiment {name!r}: cannot import module {module_name!r}: {error}") from None
    if not hasattr(module, attribute):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, Experiment))
        raise ValueError(
            f"experiment {name!r}: module {module_name!r} has no attribute {attribute!r}; "
            f"its experiments: {', '.join(found) if found else 'none'}"
        )
    experiment = getattr(module, attribute)
    if not isinstance(experiment, Experiment):
        raise ValueError(
            f"experiment {name!r}: {module_name}.{attribute} is not an Experiment (type {type(experiment).__name__})"
        )
    return experiment


def register_experiment(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to :data:`EXPERIMENTS` under its name (``warpgrad list``, :func:`get_experiment`);
    registering the same object again does nothing. Returns ``experiment``.

    Raises:
        TypeError: if ``experiment`` is not an :class:`Experiment`.
        ValueError: if its name contains ``:`` (reserved for ``package.module:NAME``) or is taken by
            another experiment.
    """
    if not isinstance(experiment, Experiment):
        raise TypeError(f"register_experiment expects an Experiment, got type {type(experiment).__name__}")
    if ":" in experiment.name:
        raise ValueError(f"experiment name {experiment.name!r} must not contain ':' (it means package.module:NAME)")
    registered = EXPERIMENTS.get(experiment.name)
    if registered is not None and registered is not experiment:
        raise ValueError(f"experiment name {experiment.name!r} is already registered to another experiment")
    EXPERIMENTS[experiment.name] = experiment
    return experiment
