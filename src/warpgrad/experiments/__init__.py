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
``package.module:NAME`` or ``path/to/file.py:NAME`` (see :func:`get_experiment`) or added with
:func:`register_experiment`; ``docs/extending.md`` shows how.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

from warpgrad.errors import UsageError
from warpgrad.experiments.ablations import KANJI_MULTISHOT_ABLATION
from warpgrad.experiments.base import (
    PROFILE_NAMES,
    SCHEDULE_FIELDS,
    Experiment,
    MethodSpec,
    Profile,
    RLExperiment,
    SequentialExperiment,
    StreamExperiment,
    TrialExperiment,
)
from warpgrad.experiments.continual import SINE_CONTINUAL
from warpgrad.experiments.fop import FOP_EXPERIMENT
from warpgrad.experiments.images import (
    KANJI_FEWSHOT,
    KANJI_MULTISHOT,
    MINIIMAGENET,
    OMNIGLOT_FEWSHOT,
    OMNIGLOT_MULTISHOT,
    TIEREDIMAGENET,
    _load_dataset,
)
from warpgrad.experiments.learned_optimizer import LEARNED_OPTIMIZER
from warpgrad.experiments.learned_rules import LEARNED_RULES
from warpgrad.experiments.maze import MAZE
from warpgrad.experiments.methods import METHODS, build_method, method_specs
from warpgrad.experiments.navigation import FOUR_CORNERS, NAVIGATION
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
    "FOP_EXPERIMENT",
    "FOUR_CORNERS",
    "KANJI_FEWSHOT",
    "KANJI_MULTISHOT",
    "KANJI_MULTISHOT_ABLATION",
    "KANJI_SEQUENTIAL",
    "LEARNED_OPTIMIZER",
    "LEARNED_RULES",
    "MAZE",
    "METHODS",
    "MINIIMAGENET",
    "NAVIGATION",
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
    "RLExperiment",
    "SequentialExperiment",
    "StreamExperiment",
    "TrialExperiment",
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
        SINE,
        SINE_CONTINUAL,
        KANJI_MULTISHOT,
        KANJI_MULTISHOT_ABLATION,
        KANJI_FEWSHOT,
        OMNIGLOT_MULTISHOT,
        OMNIGLOT_FEWSHOT,
        MINIIMAGENET,
        TIEREDIMAGENET,
        DIGITS_PERMUTED,
        FMNIST_PERMUTED,
        FMNIST_SPLIT,
        KANJI_SEQUENTIAL,
        OMNIGLOT_SEQUENTIAL,
        MAZE,
        FOP_EXPERIMENT,
        LEARNED_OPTIMIZER,
        LEARNED_RULES,
        NAVIGATION,
        FOUR_CORNERS,
    )
}


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name``; or, with ``package.module:NAME`` or
    ``path/to/file.py:NAME``, the :class:`Experiment` ``NAME`` of that module or file (imported;
    a module is looked up with the current directory on ``sys.path``).

    Example:
        >>> get_experiment("sine").name
        'sine'
        >>> get_experiment("examples/lstm_sequence.py:EXPERIMENT").name  # doctest: +SKIP
        'lstm-sequence'

    Raises:
        ValueError: one line naming the problem: an unknown name (and the allowed ones), a module
            or file that cannot be imported, a missing attribute (and the module's experiments),
            or an attribute that is not an :class:`Experiment`.
    """
    if ":" in name:
        return _import_experiment(name)
    if name not in EXPERIMENTS:
        raise UsageError(f"unknown experiment {name!r}; allowed: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def _import_experiment(name: str) -> Experiment:
    """The :class:`Experiment` named by ``package.module:NAME`` or ``path/to/file.py:NAME``.

    A module is imported with the current directory on ``sys.path`` (as ``python -m`` would have
    it, also when launched through the ``warpgrad`` console script), which is put back afterwards.
    A file (a name ending in ``.py`` or containing a path separator) is imported with its own
    directory on ``sys.path`` and kept in ``sys.modules`` under a name derived from its resolved
    path (:func:`_file_module_name`), so that every process that names the same file gets the same
    module name (``--nproc`` ranks, pickled objects) and naming it twice imports it once.
    """
    source, _, attribute = name.rpartition(":")  # the last ':' (a Windows path has one of its own)
    if not source or not attribute.isidentifier():
        raise UsageError(
            f"experiment {name!r}: expected a registered name, package.module:NAME or path/to/file.py:NAME"
        )
    if source.endswith(".py") or "/" in source or os.sep in source:
        module, where = _import_file(name, source), source
    else:
        if source.startswith(".") or not all(part.isidentifier() for part in source.split(".")):
            raise UsageError(f"experiment {name!r}: {source!r} is not a module name (package.module) or a .py file")
        module, where = _import_module(name, source), source
    if not hasattr(module, attribute):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, Experiment))
        raise UsageError(
            f"experiment {name!r}: module {where!r} has no attribute {attribute!r}; "
            f"its experiments: {', '.join(found) if found else 'none'}"
        )
    experiment = getattr(module, attribute)
    if not isinstance(experiment, Experiment):
        raise UsageError(
            f"experiment {name!r}: {where}:{attribute} is not an Experiment (type {type(experiment).__name__})"
        )
    return experiment


@contextlib.contextmanager
def _on_sys_path(directory: str) -> Iterator[None]:
    """``directory`` at the front of ``sys.path`` for the duration (unless already there)."""
    present = directory in sys.path or (directory == os.getcwd() and "" in sys.path)
    if not present:
        sys.path.insert(0, directory)
    try:
        yield
    finally:
        if not present and directory in sys.path:
            sys.path.remove(directory)


def _import_module(name: str, module_name: str) -> ModuleType:
    importlib.invalidate_caches()  # a module written after this directory was first searched
    try:
        with _on_sys_path(os.getcwd()):
            return importlib.import_module(module_name)
    except (ImportError, SyntaxError) as error:
        raise UsageError(f"experiment {name!r}: cannot import module {module_name!r}: {_one_line(error)}") from None


def _file_module_name(path: Path) -> str:
    """The ``sys.modules`` name of the experiment file at resolved ``path``: its stem (as an
    identifier) and a hash of the path, e.g. ``warpgrad_file_lstm_sequence_3f2a91c0d4``."""
    stem = re.sub(r"\W", "_", path.stem)
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    return f"warpgrad_file_{stem}_{digest}"


def _import_file(name: str, source: str) -> ModuleType:
    path = Path(source).expanduser()
    if not path.is_file():
        raise UsageError(f"experiment {name!r}: no file {source!r} (relative to {os.getcwd()})")
    if path.suffix != ".py":
        raise UsageError(f"experiment {name!r}: {source!r} is not a .py file")
    path = path.resolve()
    module_name = _file_module_name(path)
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"experiment {name!r}: cannot import {source!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # before running it: dataclasses and pickle look it up there
    try:
        with _on_sys_path(str(path.parent)):
            spec.loader.exec_module(module)
    except (ImportError, SyntaxError) as error:
        del sys.modules[module_name]
        raise UsageError(f"experiment {name!r}: cannot import file {source!r}: {_one_line(error)}") from None
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, SyntaxError) and error.lineno is not None:
        text = f"{type(error).__name__}: {error.msg} ({error.filename}, line {error.lineno})"
    return text


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
        raise UsageError(f"experiment name {experiment.name!r} must not contain ':' (it means package.module:NAME)")
    registered = EXPERIMENTS.get(experiment.name)
    if registered is not None and registered is not experiment:
        raise UsageError(f"experiment name {experiment.name!r} is already registered to another experiment")
    EXPERIMENTS[experiment.name] = experiment
    return experiment
