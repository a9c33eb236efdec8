"""Functional core: parameter dicts, functional application, differentiable inner optimisers.

Everything in warpgrad's algorithms is written over *parameter dicts* (``dict[str, Tensor]``,
keyed like ``module.named_parameters()``). A model is applied with a given dict through
:func:`torch.func.functional_call`; nothing writes into ``module._parameters``.

Parameters have one of two roles:

* **task** parameters θ: adapted in the inner loop, starting from an initialisation θ₀;
* **warp** parameters φ: the parameters of modules wrapped in :class:`warpgrad.Warp`. They are
  frozen during adaptation and meta-learned.

:func:`partition` splits a module's parameters by role and :func:`combine` merges dicts back.

Inner optimisers are pure ``(init, update)`` pairs in the style of optax: ``init(params)``
returns a state (a dict of tensors), ``update(grads, state, params)`` returns new parameters and
a new state without touching its inputs, so meta-gradients can flow through an inner step
(``torch.autograd.grad(..., create_graph=True)``) and steps can be ``vmap``-ed.

Example:
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), Warp(torch.nn.Linear(3, 3)))
    >>> theta, phi = partition(model)
    >>> sorted(phi)
    ['1.module.bias', '1.module.weight']
    >>> opt = sgd(lr=0.1)
    >>> state = opt.init(theta)
    >>> grads = {k: torch.ones_like(v) for k, v in theta.items()}
    >>> new_theta, state = opt.update(grads, state, theta)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

Params = dict[str, Tensor]
State = dict[str, Any]

__all__ = [
    "Params",
    "State",
    "InnerOptimizer",
    "warp_parameter_names",
    "partition",
    "combine",
    "detach",
    "functional_apply",
    "loss_and_grad",
    "sgd",
    "momentum",
    "adam",
    "per_parameter_sgd",
    "make_inner_optimizer",
    "INNER_OPTIMIZERS",
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


def partition(module: nn.Module) -> tuple[Params, Params]:
    """Split a module's parameters into ``(task, warp)`` dicts.

    The values are the module's own ``nn.Parameter`` objects (not copies), so gradients computed
    through them land in ``.grad`` and a ``torch.optim`` optimiser over them updates the module.
    """
    warp_names = warp_parameter_names(module)
    task: Params = {}
    warp: Params = {}
    for name, p in module.named_parameters():
        (warp if name in warp_names else task)[name] = p
    return task, warp


def combine(*dicts: Params) -> Params:
    """Merge parameter dicts; raises if two dicts define the same name."""
    out: Params = {}
    for d in dicts:
        clash = out.keys() & d.keys()
        if clash:
            raise ValueError(f"parameter names defined twice: {sorted(clash)}")
        out.update(d)
    return out


def detach(params: Params, requires_grad: bool = False) -> Params:
    """Detached copies of the tensors (sharing no autograd history), optionally requiring grad."""
    return {k: v.detach().clone().requires_grad_(requires_grad) for k, v in params.items()}


VMAP_UNSAFE_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def vmap_unsafe_modules(module: nn.Module) -> list[str]:
    """Names of submodules whose higher-order derivatives PyTorch batches incorrectly.

    PyTorch's batching rules for the backward of batch_norm / layer_norm are wrong
    (pytorch/functorch#534): forward values and first-order gradients under ``vmap`` are right,
    second-order meta-gradients are not. Methods process tasks in a loop when this is non-empty;
    :class:`warpgrad.layers.BatchNorm` is a vmap-safe replacement for batch-norm.
    """
    return [name for name, m in module.named_modules() if isinstance(m, VMAP_UNSAFE_NORMS)]


def batching_allowed(module: nn.Module, batched: bool) -> bool:
    """``batched``, unless the model has vmap-unsafe norm layers (then warn and return False)."""
    unsafe = vmap_unsafe_modules(module) if batched else []
    if unsafe:
        warnings.warn(
            f"model has torch norm layers {unsafe} whose second-order gradients are wrong under vmap "
            "(pytorch/functorch#534); tasks are processed in a loop instead. Use warpgrad.layers.BatchNorm "
            "for the batched path.",
            stacklevel=3,
        )
    return batched and not unsafe


def functional_apply(module: nn.Module, params: Params, *args: Any) -> Tensor:
    """Run ``module(*args)`` with ``params`` in place of its parameters (missing names: module's)."""
    return torch.func.functional_call(module, params, args, strict=False)


def loss_and_grad(
    module: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    task_params: Params,
    warp_params: Params,
    batch: tuple[Tensor, Tensor],
    create_graph: bool = False,
) -> tuple[Tensor, Params]:
    """Task loss on ``batch`` and its gradient w.r.t. the task parameters.

    With ``create_graph=True`` the returned gradient is itself differentiable (w.r.t. the task
    parameters and, through the warp layers, the warp parameters).
    """
    x, y = batch
    if not all(v.requires_grad for v in task_params.values()):
        task_params = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in task_params.items()}
    with torch.enable_grad():
        loss = loss_fn(functional_apply(module, combine(task_params, warp_params), x), y)
        grads = torch.autograd.grad(loss, list(task_params.values()), create_graph=create_graph)
    return loss, dict(zip(task_params.keys(), grads))


# ----------------------------------------------------------------------------- inner optimisers


@dataclass(frozen=True)
class InnerOptimizer:
    """A pure, differentiable optimiser: ``init(params) -> state``, ``update(g, s, p) -> (p, s)``.

    ``name`` and ``hyper`` describe it (for logs and checkpoints).
    """

    name: str
    hyper: dict[str, float]
    init: Callable[[Params], State]
    update: Callable[[Params, State, Params], tuple[Params, State]]


def sgd(lr: float) -> InnerOptimizer:
    """Plain gradient descent: θ ← θ − lr·g."""

    def init(params: Params) -> State:
        return {}

    def update(grads: Params, state: State, params: Params) -> tuple[Params, State]:
        return {k: params[k] - lr * grads[k] for k in params}, {}

    return InnerOptimizer("sgd", {"lr": lr}, init, update)


def momentum(lr: float, beta: float = 0.9) -> InnerOptimizer:
    """Heavy-ball momentum in PyTorch's convention: b ← β·b + g; θ ← θ − lr·b."""

    def init(params: Params) -> State:
        return {"buf": {k: torch.zeros_like(v) for k, v in params.items()}}

    def update(grads: Params, state: State, params: Params) -> tuple[Params, State]:
        buf = {k: beta * state["buf"][k] + grads[k] for k in params}
        return {k: params[k] - lr * buf[k] for k in params}, {"buf": buf}

    return InnerOptimizer("momentum", {"lr": lr, "beta": beta}, init, update)


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
            k: params[k] - lr * (m[k] / correction1) / (torch.sqrt(v[k] / correction2 + eps_root) + eps)
            for k in params
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
            raise ValueError(f"per_parameter_sgd has no learning rate for {sorted(missing)}")
        return {}

    def update(grads: Params, state: State, params: Params) -> tuple[Params, State]:
        return {k: params[k] - lrs[k] * grads[k] for k in params}, {}

    return InnerOptimizer("per_parameter_sgd", {}, init, update)


INNER_OPTIMIZERS: dict[str, Callable[..., InnerOptimizer]] = {"sgd": sgd, "momentum": momentum, "adam": adam}


def make_inner_optimizer(name: str, **hyper: float) -> InnerOptimizer:
    """Build an inner optimiser by name (``sgd``, ``momentum``, ``adam``)."""
    if name not in INNER_OPTIMIZERS:
        raise ValueError(f"unknown inner optimiser {name!r}; allowed: {', '.join(INNER_OPTIMIZERS)}")
    return INNER_OPTIMIZERS[name](**hyper)


def map_state(fn: Callable[[Tensor], Tensor], state: Any) -> Any:
    """Apply ``fn`` to every tensor in a (nested dict) optimiser state."""
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {k: map_state(fn, v) for k, v in state.items()}
    return state
