"""The experiment data types and the small helpers every family of experiments shares.

:class:`Profile` (a schedule and options at one scale, with ``--set`` overrides), :class:`MethodSpec`,
:class:`Experiment` and its variants run by runners of their own: :class:`StreamExperiment`,
:class:`SequentialExperiment` (continual learning), :class:`RLExperiment` (reinforcement learning)
and :class:`TrialExperiment` (methods that each make one training run, compared side by side).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

from warpgrad.errors import UsageError
from warpgrad.methods.base import MetaLearner
from warpgrad.tasks.base import TaskFamily

PROFILE_NAMES = ("smoke", "quick", "paper")
SCHEDULE_FIELDS = (
    "meta_steps",
    "meta_batch",
    "eval_every",
    "val_tasks",
    "test_tasks",
    "checkpoint_every",
    "snapshot_every",
)


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
    settings: str = ""  # the --set overrides applied, canonical "k=v,k=v" (recorded in checkpoints and results)
    # also keep the learner of meta-step 0 and of every N-th meta-step (0: off; warpgrad.engine.snapshots)
    snapshot_every: int = 0

    def with_overrides(self, overrides: dict[str, str]) -> Profile:
        """A copy with ``KEY=VALUE`` overrides applied (values parsed to the current value's type).

        Keys are schedule fields (``meta_steps``, ...), top-level options (``inner_steps``) or
        nested options with dots (``data.n_classes``). ``METHOD.FIELD`` reaches every field of a
        registered method's config (``warpgrad.init_weight``), set in the profile or not, parsed
        by the field's type.
        """
        schedule = {f.name: getattr(self, f.name) for f in fields(self) if f.name in SCHEDULE_FIELDS}
        options = copy.deepcopy(self.options)
        for key, text in overrides.items():
            if key in schedule:
                schedule[key] = _parse_like(key, text, schedule[key])
                continue
            parts = key.split(".")
            typed = _method_option(parts, text)
            if typed is not NOT_A_METHOD_OPTION:
                options[parts[0]] = {**options.get(parts[0], {}), parts[1]: typed}
                continue
            node = options
            for part in parts[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
                if not isinstance(node, dict):
                    break
            if not isinstance(node, dict) or parts[-1] not in node or isinstance(node[parts[-1]], dict):
                raise UsageError(f"unknown setting {key!r}; allowed: {', '.join(self.setting_names())}")
            node[parts[-1]] = _parse_like(key, text, node[parts[-1]])
        applied = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
        settings = ",".join(filter(None, [self.settings, applied]))
        return replace(self, options=options, settings=settings, **schedule)

    def setting_names(self) -> list[str]:
        names = list(SCHEDULE_FIELDS)

        def walk(prefix: str, node: dict[str, Any]) -> None:
            for k, v in node.items():
                if isinstance(v, dict):
                    walk(f"{prefix}{k}.", v)
                else:
                    names.append(prefix + k)

        walk("", self.options)
        return names


NOT_A_METHOD_OPTION = object()


def _method_option(parts: list[str], text: str) -> Any:
    """``text`` parsed as option ``parts[1]`` of registered method ``parts[0]`` (``None`` is a
    value: ``--set warpgrad.maml_steps=none``); :data:`NOT_A_METHOD_OPTION` when ``parts[0]`` is not
    a registered method. An unknown field is a ValueError naming the allowed ones."""
    from warpgrad.methods.registry import check_value, config_fields, parse_value, registered

    methods = registered()
    if len(parts) != 2 or parts[0] not in methods:
        return NOT_A_METHOD_OPTION
    name, field_name = parts
    fields_ = config_fields(methods[name].config)
    if field_name not in fields_:
        allowed = [*SCHEDULE_FIELDS, *(f"{name}.{f}" for f in fields_)]
        raise UsageError(
            f"unknown setting {'.'.join(parts)!r}; allowed: {', '.join(allowed)} "
            f"(and the experiment's options: see `warpgrad show`)"
        )
    value = parse_value(f"{name}.{field_name}", text, fields_[field_name])
    check_value(f"{name}.{field_name}", value, text)
    return value


def _parse_like(key: str, text: str, current: Any) -> Any:
    """``text`` as a value of ``current``'s type (the registry's typed parser; an optional integer
    when ``current`` is None, a string for any other type)."""
    from warpgrad.methods.registry import check_value, parse_value

    if current is None:
        kind: Any = int | None
    elif isinstance(current, tuple):
        kind = tuple[int, ...]
    else:
        kind = type(current) if type(current) in (bool, int, float) else str
    try:
        value = parse_value(key, text, kind)
    except ValueError:
        raise UsageError(f"setting {key}={text!r}: expected a value like {current!r}") from None
    check_value(key, value, text)
    return value


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
    dataset: str | None = None

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            raise UsageError(f"unknown profile {name!r} for {self.name}; allowed: {', '.join(self.profiles)}")
        return self.profiles[name]

    def resolve(self, profile: str | Profile, settings: dict[str, str] | None = None) -> Profile:
        """Profile ``profile`` (a name or a Profile) with ``--set`` overrides applied; a
        ``METHOD.FIELD`` for a method this experiment does not run is refused."""
        base = profile if isinstance(profile, Profile) else self.profile(profile)
        for key in settings or {}:
            head = key.split(".")[0]
            if "." in key and head not in self.methods and head not in base.options:
                from warpgrad.methods.registry import registered

                if head in registered():
                    raise UsageError(
                        f"setting {key!r}: {self.name} does not run {head}; its methods: {', '.join(self.methods)}"
                    )
        resolved = base.with_overrides(settings) if settings else base
        if resolved.snapshot_every and isinstance(self, StreamExperiment):
            raise UsageError(
                f"setting snapshot_every={resolved.snapshot_every}: {self.name} is run by {self.runner}, which keeps "
                "no snapshots; snapshot_every is for meta-training experiments (e.g. sine, kanji-fewshot)"
            )
        return resolved

    def method(self, name: str) -> MethodSpec:
        """The spec of ``name``; a ValueError (one line) when this experiment cannot run it."""
        if name not in self.methods:
            raise UsageError(f"unknown method {name!r} for {self.name}; allowed: {', '.join(self.methods)}")
        return self.methods[name]


@dataclass(frozen=True)
class StreamExperiment(Experiment):
    """A continual-learning experiment: methods are continual learners run through streams, not
    meta-learners of the meta-training loop; ``make_stream(profile, seed)`` builds one.

    ``runner`` names the module that runs it: it provides ``run(experiment, methods, profile,
    seed, out_dir, progress) -> results``, ``table(results) -> str`` and ``outputs(out_dir) -> str``
    (what was written, for the CLI). Such runs are short and have no checkpoints.
    """

    make_stream: Callable[[Profile, int], Any] | None = None
    runner: str = "warpgrad.engine.streams"


@dataclass(frozen=True)
class SequentialExperiment(StreamExperiment):
    """The OML/ANML protocol (Javed & White 2019, arXiv:1905.12588; Beaulieu et al. 2020,
    arXiv:2002.09571), run by :mod:`warpgrad.engine.sequential`: meta-train on trajectories of the
    ``train`` classes, then learn ``test`` classes online, one SGD step per image.
    ``load_data(profile)`` returns the :class:`~warpgrad.data.base.ClassDataset`."""

    load_data: Callable[[Profile], Any] | None = None
    runner: str = "warpgrad.engine.sequential"


@dataclass(frozen=True)
class RLExperiment(StreamExperiment):
    """A reinforcement-learning experiment, run by :mod:`warpgrad.engine.rl`: each method builds a
    recurrent agent (``MethodSpec.build(profile)``) trained for ``meta_steps`` episodes of
    ``meta_batch`` environments from ``make_env(profile)``, with checkpoints and resume."""

    make_env: Callable[[Profile], Any] | None = None
    runner: str = "warpgrad.engine.rl"


@dataclass(frozen=True)
class TrialExperiment(StreamExperiment):
    """An experiment whose methods each make one training run of minutes (no checkpoints), run by
    :mod:`warpgrad.engine.trials`: ``MethodSpec.build(profile)`` returns a *trial*, an object with
    ``run(seed, method_dir, progress) -> entry`` that trains, evaluates and returns its results
    entry (``history`` rows hold ``step`` and the ``curve`` column; files it keeps, such as learned
    weights, go in ``method_dir``). ``curve`` is (history column, x label, y label, log y) of the
    plot the runner draws over every method."""

    curve: tuple[str, str, str, bool] = ("loss", "step", "loss", False)
    resumable: bool = False  # trials take resume and stop_after (see warpgrad.engine.trials)
    runner: str = "warpgrad.engine.trials"


# ------------------------------------------------------------------------------ shared helpers


def _adam(lr: float) -> dict[str, Any]:
    return {"meta_optimizer": "adam", "meta_lr": lr}


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    out.update(changes)
    return out


def _profiles(
    smoke: dict[str, Any],
    quick: tuple[str, dict[str, Any], dict[str, Any]],
    paper: tuple[str, dict[str, Any], dict[str, Any]],
) -> dict[str, Profile]:
    """smoke/quick/paper profiles from (description, schedule, options) triples."""
    profiles = {"smoke": Profile("smoke", "seconds: 2 meta-steps on tiny tasks (tests)", **smoke)}
    for name, (description, schedule, options) in (("quick", quick), ("paper", paper)):
        profiles[name] = Profile(name, description, **schedule, options=options)
    return profiles


def _schedule(meta_steps: int, meta_batch: int, eval_every: int, val_tasks: int, test_tasks: int) -> dict[str, int]:
    return {
        "meta_steps": meta_steps,
        "meta_batch": meta_batch,
        "eval_every": eval_every,
        "val_tasks": val_tasks,
        "test_tasks": test_tasks,
        "checkpoint_every": eval_every,
    }
