"""Differentiable inner optimisers as pure ``init``/``update`` transforms (optax style).

``init(params)`` returns a state (a dict of tensors), ``update(grads, state, params)`` returns new
parameters and a new state without touching its inputs, so meta-gradients can flow through an
inner step (``torch.func.grad`` / ``torch.autograd.grad(..., create_graph=True)``) and steps can
be ``vmap``-ed.

Example:
    >>> opt = sgd(lr=0.1)
    >>> params = {"w": torch.ones(3)}
    >>> state = opt.init(params)
    >>> params, state = opt.update({"w": torch.ones(3)}, state, params)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from warpgrad.core.tree import Params, State
from warpgrad.errors import UsageError

__all__ = ["InnerOptimizer", "sgd", "momentum", "adam", "per_parameter_sgd", "make_inner_optimizer", "INNER_OPTIMIZERS"]


@dataclass(frozen=True)
class InnerOptimizer:
    """A pure, differentiable optimiser: ``init(params) -> state``, ``update(g, s, p) -> (p, s)``.

    ``name`` and ``hyper`` describe it (for logs and checkpoints). ``elementwise``: the update
    acts on each entry alone and its state holds no per-parameter scalars, so it applies unchanged
    to the parameters of many tasks stacked along a leading dimension (no ``vmap`` needed).
    """

    name: str
    hyper: dict[str, float]
    init: Callable[[Params], State]
    update: Callable[[Params, State, Params], tuple[Params, State]]
    elementwise: bool = False


def sgd(lr: float) -> InnerOptimizer:
    """Plain gradient descent: θ ← θ − lr·g."""

    def init(params: Params) -> State:
        return {}

    def update(grads: Params, state: State, params: Params) -> tuple[Params, State]:
        return {k: params[k] - lr * grads[k] for k in params}, {}

    return InnerOptimizer("sgd", {"lr": lr}, init, update, elementwise=True)


def momentum(lr: float, beta: float = 0.9) -> InnerOptimizer:
    """Heavy-ball momentum in PyTorch's convention: b ← β·b + g; θ ← θ − lr·b."""

    def init(params: Params) -> State:
        return {"buf": {k: torch.zeros_like(v) for k, v in params.items()}}

    def update(grads: Params, state: State, params: Params) -> tuple[Params, State]:
        buf = {k: beta * state["buf"][k] + grads[k] for k in params}
        return {k: params[k] - lr * buf[k] for k in params}, {"buf": buf}

    return InnerOptimizer("momentum", {"lr": lr, "beta": beta}, init, update, elementwise=True)


def adam(
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 1e-16,
) -> InnerOptimizer:
    """Adam (Kingma & Ba, 2015) with bias correction, written out of place.

    ``eps_root`` is added inside the square root: √(v̂ + eps_root) + eps. Plain Adam has
    ``eps_root = 0``, but then an element with a zero gradient history has an infinite derivative
    of √v̂ and meta-gradients through the step become NaN; the default keeps them finite while
    changing the step by a negligible amount.
    """

    def init(params: Params) -> State:
        first = next(iter(params.values()))
        return {
            "m": {k: torch.zeros_like(v) for k, v in params.items()},
            "v": {k: torch.zeros_like(v) for k, v in params.items()},
            "t": torch.zeros((), dtype=first.dtype, device=first.device),
        }

    def update(grads: Params, state: State, params: Params) -> tuple[Params, State]:
        t = state["t"] + 1
        m = {k: beta1 * state["m"][k] + (1 - beta1) * grads[k] for k in params}
        v = {k: beta2 * state["v"][k] + (1 - beta2) * grads[k] * grads[k] for k in params}
        correction1 = 1 - beta1**t
        correction2 = 1 - beta2**t
        new = {
            k: params[k] - lr * (m[k] / correction1) / (torch.sqrt(v[k] / correction2 + eps_root) + eps) for k in params
        }
        return new, {"m": m, "v": v, "t": t}

    return InnerOptimizer(
        "adam", {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "eps_root": eps_root}, init, update
    )


def per_parameter_sgd(lrs: Params) -> InnerOptimizer:
    """Gradient descent with a learning-rate tensor per parameter: θ ← θ − lr ⊙ g (Meta-SGD).

    ``lrs`` maps each task-parameter name to a tensor of its shape; when they require grad,
    meta-gradients flow into them through the step.
    """

    def init(params: Params) -> State:
        missing = params.keys() - lrs.keys()
        if missing:
            raise UsageError(f"per_parameter_sgd has no learning rate for {sorted(missing)}")
        return {}

    def update(grads: Params, state: State, params: Params) -> tuple[Params, State]:
        return {k: params[k] - lrs[k] * grads[k] for k in params}, {}

    return InnerOptimizer("per_parameter_sgd", {}, init, update, elementwise=True)


INNER_OPTIMIZERS: dict[str, Callable[..., InnerOptimizer]] = {"sgd": sgd, "momentum": momentum, "adam": adam}


def make_inner_optimizer(name: str, **hyper: float) -> InnerOptimizer:
    """Build an inner optimiser by name (``sgd``, ``momentum``, ``adam``)."""
    if name not in INNER_OPTIMIZERS:
        raise UsageError(f"unknown inner_optimizer {name!r}; allowed: {', '.join(INNER_OPTIMIZERS)}")
    return INNER_OPTIMIZERS[name](**hyper)
