"""The functional core under its historical name: parameter dicts, roles, inner optimisers.

Everything here is defined once in :mod:`warpgrad.core` (``tree``, ``params``, ``optim``,
``batching``) and re-exported for code that imports ``warpgrad.functional``.

Example:
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), Warp(torch.nn.Linear(3, 3)))
    >>> theta, phi = partition(model)
    >>> sorted(phi)
    ['1.module.bias', '1.module.weight']
"""

from warpgrad.core.batching import batching_allowed, unbatchable_modules
from warpgrad.core.optim import (
    INNER_OPTIMIZERS,
    InnerOptimizer,
    adam,
    make_inner_optimizer,
    momentum,
    per_parameter_sgd,
    sgd,
)
from warpgrad.core.params import combine, functional_apply, partition, warp_parameter_names
from warpgrad.core.tree import Params, State, detach, tree_map

__all__ = [
    "Params",
    "State",
    "InnerOptimizer",
    "warp_parameter_names",
    "partition",
    "combine",
    "detach",
    "tree_map",
    "functional_apply",
    "batching_allowed",
    "unbatchable_modules",
    "sgd",
    "momentum",
    "adam",
    "per_parameter_sgd",
    "make_inner_optimizer",
    "INNER_OPTIMIZERS",
]
