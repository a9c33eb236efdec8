"""Parameter roles by filter: which of a model's parameters adapt in the inner loop.

A **filter** maps a model to the set of its parameter names (as in ``named_parameters``) that a
role selects, in the spirit of equinox's ``partition(tree, filter)``. :func:`partition` splits a
model's parameters into the dict a filter selects and the rest; :func:`combine` merges dicts back.
Every method takes its inner-loop parameters from an ``adapt`` filter:

* :func:`not_warp` (the default): every parameter outside :class:`warpgrad.Warp` layers adapts;
  warp parameters φ are frozen during adaptation (WarpGrad, MAML, Leap, ...);
* :func:`head_only`: only the classifier head adapts (ANIL);
* :func:`only` / :func:`everything`, and :func:`both` to intersect filters.

The values are the model's own ``nn.Parameter`` objects (not copies), so gradients computed
through them land in ``.grad`` and a ``torch.optim`` optimiser over them updates the model.

Example:
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), Warp(torch.nn.Linear(3, 3)), torch.nn.Linear(3, 1))
    >>> theta, rest = partition(model)                 # adapt=not_warp
    >>> sorted(rest)
    ['1.module.bias', '1.module.weight']
    >>> head, body = partition(model, head_only())
    >>> sorted(head)
    ['2.bias', '2.weight']
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from warpgrad.core.tree import Params
from warpgrad.errors import UsageError

Filter = Callable[[nn.Module], set[str]]

__all__ = [
    "Filter",
    "partition",
    "combine",
    "not_warp",
    "warp_only",
    "head_only",
    "only",
    "everything",
    "both",
    "warp_parameter_names",
    "functional_apply",
]


def warp_parameter_names(module: nn.Module) -> set[str]:
    """Names (as in ``named_parameters``) of all parameters that live inside a Warp layer."""
    from warpgrad.layers import Warp

    names: set[str] = set()
    for prefix, sub in module.named_modules():
        if isinstance(sub, Warp):
            for name, _ in sub.named_parameters():
                names.add(f"{prefix}.{name}" if prefix else name)
    return names


def _names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def not_warp(model: nn.Module) -> set[str]:
    """Every parameter outside :class:`warpgrad.Warp` layers (the default inner-loop parameters)."""
    warps = warp_parameter_names(model)
    return {n for n in _names(model) if n not in warps}


def warp_only(model: nn.Module) -> set[str]:
    """The parameters of :class:`warpgrad.Warp` layers (φ)."""
    return warp_parameter_names(model)


def everything(model: nn.Module) -> set[str]:
    return set(_names(model))


def only(*prefixes: str) -> Filter:
    """The parameters of the submodules named ``prefixes`` (e.g. ``only("head")``, ``only("4")``)."""
    if not prefixes:
        raise UsageError("only() needs at least one submodule name")

    def select(model: nn.Module) -> set[str]:
        chosen = {n for n in _names(model) if any(n == p or n.startswith(p + ".") for p in prefixes)}
        if not chosen:
            modules = [name for name, m in model.named_children() if any(True for _ in m.parameters())]
            raise UsageError(
                f"no parameters under {', '.join(map(repr, prefixes))}; submodules with "
                f"parameters: {', '.join(modules) or 'none'}"
            )
        return chosen

    return select


def head_only(name: str | None = None) -> Filter:
    """Only the head adapts: submodule ``name``, or by default the last top-level submodule that
    has parameters and is not a warp layer (the output layer of ``nn.Sequential``, ``MLP``,
    ``Conv4``)."""

    def select(model: nn.Module) -> set[str]:
        if name is not None:
            return only(name)(model)
        from warpgrad.layers import Warp

        candidates = _leaf_children(model)
        candidates = [(n, m) for n, m in candidates if not isinstance(m, Warp) and any(True for _ in m.parameters())]
        if not candidates:
            raise UsageError("head_only: the model has no submodule with parameters to use as the head")
        return only(candidates[-1][0])(model)

    return select


def _leaf_children(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Top-level children, descending through containers (``Sequential``/``ModuleList``) whose
    last child holds the parameters, so that ``MLP.layers.4`` is found as the head."""
    out: list[tuple[str, nn.Module]] = []
    for child_name, child in model.named_children():
        full = f"{prefix}{child_name}"
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            out.extend(_leaf_children(child, full + "."))
        else:
            out.append((full, child))
    return out


def both(*filters: Filter) -> Filter:
    """The parameters every filter selects."""

    def select(model: nn.Module) -> set[str]:
        sets = [f(model) for f in filters]
        return set.intersection(*sets) if sets else set()

    return select


def partition(module: nn.Module, adapt: Filter = not_warp) -> tuple[Params, Params]:
    """Split a module's parameters into ``(selected, rest)`` by ``adapt``, in module order.

    With the default filter this is ``(task parameters θ, warp parameters φ)``.
    """
    chosen = adapt(module)
    selected: Params = {}
    rest: Params = {}
    for name, p in module.named_parameters():
        (selected if name in chosen else rest)[name] = p
    return selected, rest


def combine(*dicts: Params) -> Params:
    """Merge parameter dicts; raises if two dicts define the same name."""
    out: Params = {}
    for d in dicts:
        clash = out.keys() & d.keys()
        if clash:
            raise UsageError(f"parameter names defined twice: {sorted(clash)}")
        out.update(d)
    return out


def functional_apply(module: nn.Module, params: Params, *args: Any) -> Tensor:
    """Run ``module(*args)`` with ``params`` in place of its parameters (missing names: module's)."""
    return torch.func.functional_call(module, params, args, strict=False)


def scored_loss(module: nn.Module, score: Callable[..., Tensor], frozen: Params) -> Callable[[Params, Any], Tensor]:
    """``(θ, batch) -> score(forward, batch)`` where ``forward`` runs ``module`` with θ and ``frozen``
    (a task's objective, :func:`warpgrad.tasks.base.objective`, is such a ``score``)."""

    def loss(theta: Params, batch: Any) -> Tensor:
        params = combine(theta, frozen)
        return score(lambda *inputs: functional_apply(module, params, *inputs), batch)

    return loss
