"""Mechanics the estimators share: argument checks, drawing noise for a parameter dict, and
flattening a parameter dict to one vector and back.

Noise is drawn in one place so that every estimator turns the same generator state into the same
perturbations: ES and PES (with one truncation per horizon) then see identical noise.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from warpgrad.core.tree import Params
from warpgrad.errors import UsageError

__all__ = ["check_sigma", "check_count", "check_generator", "check_params", "draw_noise", "flatten", "unflatten"]


def check_sigma(sigma: float, name: str = "sigma") -> float:
    """``sigma`` as a float if it is a finite number > 0, else a :class:`UsageError`."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise UsageError(f"{name} must be a finite number > 0, got {sigma!r}")
    return float(sigma)


def check_count(value: int, name: str, minimum: int = 1) -> int:
    """``value`` if it is an integer >= ``minimum``, else a :class:`UsageError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_generator(generator: torch.Generator) -> torch.Generator:
    """``generator`` if it is a ``torch.Generator``: the estimators never draw from the global one."""
    if not isinstance(generator, torch.Generator):
        raise UsageError(f"generator must be a torch.Generator (seeded by the caller), got {type(generator).__name__}")
    return generator


def check_params(params: Params) -> Params:
    """Detached copies of a non-empty ``dict[str, Tensor]`` of floating-point tensors."""
    if not isinstance(params, dict) or not params:
        raise UsageError(f"params must be a non-empty dict[str, Tensor], got {type(params).__name__}")
    for name, value in params.items():
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise UsageError(f"params[{name!r}] must be a floating-point tensor, got {type(value).__name__}")
    return {name: value.detach().clone() for name, value in params.items()}


def draw_noise(params: Params, population: int, generator: torch.Generator) -> Params:
    """Standard normal noise, one tensor of shape ``(population, *p.shape)`` per parameter ``p``,
    drawn from ``generator`` in the dict's order."""
    return {
        name: torch.randn((population, *p.shape), generator=generator, dtype=p.dtype, device=p.device)
        for name, p in params.items()
    }


def flatten(params: Params) -> Tensor:
    """The parameters concatenated, in the dict's order, into one vector."""
    return torch.cat([p.reshape(-1) for p in params.values()])


def unflatten(vector: Tensor, like: Params) -> Params:
    """``vector`` cut into tensors with the names, shapes, dtypes and devices of ``like``."""
    size = sum(p.numel() for p in like.values())
    if vector.numel() != size:
        raise UsageError(f"a vector of {vector.numel()} numbers cannot fill parameters of {size} numbers")
    out, start = {}, 0
    for name, p in like.items():
        out[name] = vector[start : start + p.numel()].reshape(p.shape).to(dtype=p.dtype, device=p.device)
        start += p.numel()
    return out
