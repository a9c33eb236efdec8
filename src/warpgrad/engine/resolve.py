"""A run's arguments, resolved and checked before anything is trained: the experiment, its
profile with ``--set`` overrides, the methods, and ``stop_after``."""

from __future__ import annotations

from typing import Iterable

from warpgrad.errors import UsageError
from warpgrad.experiments import Experiment, Profile, get_experiment


def resolve_experiment(experiment: str | Experiment) -> Experiment:
    """An :class:`Experiment` from its name (or the experiment itself)."""
    if isinstance(experiment, Experiment):
        return experiment
    return get_experiment(experiment)


def resolve_methods(experiment: Experiment, methods: str | Iterable[str] | None = None) -> list[str]:
    """Method names, validated: ``None`` or ``"all"`` means all; a string may be comma-separated.

    Raises:
        ValueError: naming an unknown method and the allowed ones.
    """
    if methods is None:
        return list(experiment.methods)
    if isinstance(methods, str):
        methods = methods.split(",")
    names: list[str] = []
    for name in (m.strip() for m in methods):
        if name == "all":
            candidates = list(experiment.methods)
        elif name == "":
            raise UsageError(f"empty method name for {experiment.name}; allowed: {', '.join(experiment.methods)}, all")
        else:
            experiment.method(name)  # raises ValueError naming the allowed methods
            candidates = [name]
        names.extend(c for c in candidates if c not in names)
    if not names:
        raise UsageError(f"no method given for {experiment.name}; allowed: {', '.join(experiment.methods)}, all")
    return names


def _check_stop_after(stop_after: int | None) -> None:
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1):
        raise UsageError(f"stop_after must be a positive integer or None, got {stop_after!r}")


def resolve_profile(experiment: Experiment, profile: str | Profile, settings: dict[str, str] | None = None) -> Profile:
    """The named profile of ``experiment`` (or ``profile`` itself) with ``--set`` overrides applied."""
    return experiment.resolve(profile, settings)
