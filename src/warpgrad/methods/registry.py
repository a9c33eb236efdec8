"""The method registry: every method registers itself, in its own file, with a typed config.

A method's config is a dataclass whose fields are its constructor's keyword options, each with
its type and default and documented in the dataclass's docstring. An experiment's profile may set
some of them (``profile.options[METHOD]``); ``--set METHOD.FIELD=VALUE`` reaches every field,
parsed by the field's type. :func:`build` makes the learner:

    cls(model, inner_optimizer, inner_steps, **config, **experiment_options(options))

(``inner_optimizer=False`` methods, e.g. Meta-SGD, build their own and are called without it).

Example (a new method, in its own module)::

    @dataclass
    class MyConfig:
        \"\"\"Attributes: meta_lr: the meta learning rate.\"\"\"
        meta_lr: float = 1e-3

    register("mine", MyLearner, MyConfig, "my method: one line for `warpgrad list`")
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from warpgrad.errors import UsageError

__all__ = [
    "MethodInfo",
    "register",
    "check_choice",
    "method_info",
    "registered",
    "make_config",
    "check_value",
    "parse_value",
    "config_fields",
]


@dataclass(frozen=True)
class MethodInfo:
    """A registered method.

    Attributes:
        name: the name experiments and the CLI use.
        cls: the learner class.
        config: the dataclass of its options.
        description: one line for ``warpgrad list``.
        uses_warps: experiments give it their network *with* warp layers.
        inner_optimizer: the constructor takes ``(model, inner_optimizer, inner_steps)``; else
            ``(model, inner_steps)``.
        experiment_options: further constructor arguments taken from the experiment's options
            (e.g. Meta-SGD's initial learning rate = the experiment's ``inner_lr``).
    """

    name: str
    cls: type
    config: type
    description: str
    uses_warps: bool = False
    inner_optimizer: bool = True
    experiment_options: Callable[[dict[str, Any]], dict[str, Any]] | None = None


_REGISTRY: dict[str, MethodInfo] = {}

#: the modules whose import registers the built-in methods, in ``warpgrad list`` order
BUILTIN_MODULES = (
    "warpgrad.methods.base",
    "warpgrad.methods.warpgrad",
    "warpgrad.methods.maml",
    "warpgrad.methods.reptile",
    "warpgrad.methods.leap",
    "warpgrad.methods.tnets",
    "warpgrad.methods.finetune",
)


def register(
    name: str,
    cls: type,
    config: type,
    description: str,
    *,
    uses_warps: bool = False,
    inner_optimizer: bool = True,
    experiment_options: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> MethodInfo:
    """Register method ``name`` (its module calls this at import)."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"the config of method {name!r} must be a dataclass, got {config!r}")
    info = MethodInfo(name, cls, config, description, uses_warps, inner_optimizer, experiment_options)
    previous = _REGISTRY.get(name)
    if previous is not None and (previous.cls, previous.config) != (cls, config):
        raise UsageError(f"method name {name!r} is already registered by {previous.cls.__module__}")
    _REGISTRY[name] = info
    return info


def _load_builtins() -> None:
    """Import the built-in methods (in :data:`BUILTIN_MODULES` order, then any other module of
    :mod:`warpgrad.methods`, so a new method file registers itself without touching this one)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    package = importlib.import_module("warpgrad.methods")
    for found in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not found.ispkg and found.name not in ("registry",):
            importlib.import_module(f"warpgrad.methods.{found.name}")


#: the order ``warpgrad list`` and ``--method all`` use for the built-in methods (others follow)
ORDER = ("baseline", "warpgrad", "maml", "fomaml", "metasgd", "metafop", "reptile", "leap", "tnets", "finetune")


def registered() -> dict[str, MethodInfo]:
    """Every registered method by name: :data:`ORDER` first, then in registration order."""
    _load_builtins()
    first = [n for n in ORDER if n in _REGISTRY]
    return {n: _REGISTRY[n] for n in first + [n for n in _REGISTRY if n not in first]}


def method_info(name: str) -> MethodInfo:
    methods = registered()
    if name not in methods:
        raise UsageError(f"unknown method {name!r}; registered: {', '.join(methods)}")
    return methods[name]


def check_choice(name: str, value: Any, allowed: Any) -> None:
    """Raise a ValueError naming ``value`` and the ``allowed`` ones unless it is one of them."""
    if value not in allowed:
        raise UsageError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


def config_fields(config: type) -> dict[str, Any]:
    """``{field: type}`` of a config dataclass (string annotations resolved)."""
    hints = typing.get_type_hints(config)
    return {f.name: hints[f.name] for f in dataclasses.fields(config)}


def parse_value(key: str, text: str, kind: Any) -> Any:
    """``text`` (from ``--set``) as a value of type ``kind``: bool, int, float, str, tuples of
    ints/floats and ``X | None``."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if text.strip().lower() == "none" and len(options) < len(typing.get_args(kind)):
            return None
        for option in options:
            try:
                return parse_value(key, text, option)
            except ValueError:
                pass
        raise UsageError(f"setting {key}={text!r}: expected {' or '.join(map(_type_name, options))} or none")
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is str:
            return text
        if origin is tuple:
            element = (typing.get_args(kind) or (int,))[0]
            return tuple(element(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"setting {key}={text!r}: expected {_type_name(kind)}") from None
    raise UsageError(f"setting {key}: cannot parse a value of type {_type_name(kind)}")


# Settings that count something (at least one) and settings that are learning rates (positive).
_SIZES = frozenset(
    "ways shots queries hidden width widths channels image_size batch_size epochs runs experiences n_classes "
    "classes_per_experience outputs warp_batch tune_runs intervals points_per_interval steps_per_interval "
    "train_per_class test_per_class train_per_experience test_points meta_steps meta_batch eval_every val_tasks "
    "test_tasks checkpoint_every buffer_size warp_updates hidden_size episode_length final_episodes meta_every".split()
)


def _is_learning_rate(name: str) -> bool:
    return name in ("lr", "lr_grid", "learning_rate") or name.endswith("_lr")


def check_value(key: str, value: Any, text: str | None = None) -> None:
    """Refuse a parsed ``--set`` value that no run can use: a non-finite number, a learning rate
    that is not positive, a negative integer, a size below 1, a fraction outside [0, 1).

    Raises:
        UsageError: naming the setting, the value as given (``text``) and what is allowed.
    """
    name = key.rsplit(".", 1)[-1]
    shown = f"{key}={text!r}" if text is not None else f"{key}={value!r}"
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if not math.isfinite(v):
            raise UsageError(f"setting {shown}: must be a finite number")
        if _is_learning_rate(name) and v <= 0:
            raise UsageError(f"setting {shown}: a learning rate must be > 0")
        if name in _SIZES and v < 1:
            raise UsageError(f"setting {shown}: must be >= 1")
        if name == "validation" and not 0 <= v < 1:
            raise UsageError(f"setting {shown}: a fraction of the training images, in [0, 1)")
        if v < 0:
            raise UsageError(f"setting {shown}: must be >= 0")


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        return "comma-separated numbers"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, str(kind))


def make_config(name: str, values: dict[str, Any] | None = None) -> Any:
    """Method ``name``'s config with ``values`` (already typed) over its defaults.

    Raises:
        ValueError: naming an unknown field and the allowed ones.
    """
    info = method_info(name)
    values = dict(values or {})
    allowed = config_fields(info.config)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise UsageError(f"unknown option {name}.{unknown[0]}; {name} has: {', '.join(allowed) or 'no options'}")
    config = info.config(**values)
    if hasattr(config, "meta_optimizer"):
        from warpgrad.core.shell import META_OPTIMIZERS

        check_choice(f"{name}.meta_optimizer", config.meta_optimizer, META_OPTIMIZERS)
    return config


def build(
    name: str,
    model: nn.Module,
    inner_optimizer: Any,
    inner_steps: int,
    config: Any,
    experiment_options: dict[str, Any] | None = None,
) -> Any:
    """The learner of method ``name`` on ``model`` with ``config`` (see the module docstring)."""
    info = method_info(name)
    kwargs = dataclasses.asdict(config)
    if info.experiment_options is not None:
        kwargs.update(info.experiment_options(experiment_options or {}))
    if info.inner_optimizer:
        return info.cls(model, inner_optimizer, inner_steps, **kwargs)
    return info.cls(model, inner_steps, **kwargs)
