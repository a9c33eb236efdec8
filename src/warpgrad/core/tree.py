"""Tree helpers over parameter dicts and nested optimiser states, written once.

A *tree* here is a tensor, or a dict (or list/tuple) of trees; anything else is a leaf left as
it is. Parameter dicts (``dict[str, Tensor]``, keyed like ``module.named_parameters()``) and the
states of :mod:`warpgrad.core.optim` are trees.

Example:
    >>> a = {"w": torch.ones(2), "state": {"t": torch.zeros(())}}
    >>> tree_map(lambda t: t + 1, a)["state"]["t"]
    tensor(1.)
    >>> tree_stack([a, a])["w"].shape
    torch.Size([2, 2])
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

Params = dict[str, Tensor]
State = dict[str, Any]

__all__ = ["Params", "State", "tree_map", "detach", "tree_stack", "same_shapes"]


def tree_map(fn: Callable[..., Tensor], tree: Any, *rest: Any) -> Any:
    """``fn`` applied to every tensor of ``tree`` (and the matching tensors of ``rest``)."""
    if isinstance(tree, Tensor):
        return fn(tree, *rest)
    if isinstance(tree, dict):
        return {k: tree_map(fn, v, *(r[k] for r in rest)) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(fn, v, *(r[i] for r in rest)) for i, v in enumerate(tree))
    return tree


def detach(params: Params, requires_grad: bool = False) -> Params:
    """Detached *copies* of the tensors (sharing no autograd history), optionally requiring grad."""
    return {k: v.detach().clone().requires_grad_(requires_grad) for k, v in params.items()}


def tree_stack(trees: list[Any]) -> Any:
    """Trees of equal structure → one tree whose tensors are stacked along a new leading dim."""
    first = trees[0]
    if isinstance(first, Tensor):
        return torch.stack(trees)
    if isinstance(first, dict):
        return {k: tree_stack([t[k] for t in trees]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(tree_stack([t[i] for t in trees]) for i in range(len(first)))
    return first


def same_shapes(trees: list[Any]) -> bool:
    """Whether every tree has the same structure and tensor shapes (so they can be stacked)."""

    def shapes(t: Any) -> Any:
        if isinstance(t, Tensor):
            return tuple(t.shape)
        if isinstance(t, dict):
            return tuple((k, shapes(v)) for k, v in t.items())
        if isinstance(t, (list, tuple)):
            return tuple(shapes(v) for v in t)
        return type(t).__name__

    return len({shapes(t) for t in trees}) == 1
