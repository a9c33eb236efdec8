"""The stateful shell: owns the meta-parameters and meta-optimisers, applies meta-gradients.

Methods *compute* meta-gradients, one list of tensors per parameter group (``"init"`` for θ₀,
``"warp"`` for φ, ``"lr"`` for Meta-SGD's learning rates, ...); the :class:`MetaShell` *applies*
them: it reduces them across processes with the :class:`Reduction` it is handed (explicitly, per
meta-step: no module globals), sets ``.grad`` and steps the group's ``torch.optim`` optimiser.
It holds every meta-parameter in one ``nn.Module`` (the model, plus any extra meta-parameters a
method registers) and gives one ``state_dict``.

Example:
    >>> shell = MetaShell(model)
    >>> shell.add_group("init", dict(model.named_parameters()), "adam", 1e-3)
    >>> shell.apply("init", grads)                      # one process
    >>> shell.apply("init", grads, cluster.reduction(n)) # a shard of a distributed meta-batch
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from warpgrad.errors import UsageError

__all__ = ["Reduction", "LOCAL", "MetaShell", "MetaGradients", "META_OPTIMIZERS", "make_meta_optimizer"]

META_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


def _identity(grads: list[Tensor]) -> list[Tensor]:
    return list(grads)


@dataclass(frozen=True)
class Reduction:
    """How this process's part of a meta-batch combines with the others'.

    ``gradients`` maps this shard's mean meta-gradients to the whole meta-batch's (a weighted
    all-reduce in :class:`warpgrad.distributed.Cluster`; the identity in one process). ``share``
    is this process's fraction of the meta-batch: methods that keep a budget per meta-batch rather
    than per task (WarpGrad's replay buffer and warp batch) spend ``budget(n)`` of it here.
    """

    gradients: Callable[[list[Tensor]], list[Tensor]] = field(default=_identity)
    share: float = 1.0

    def budget(self, n: int) -> int:
        """``n`` times this process's share, rounded, at least 1."""
        return max(1, round(n * self.share))


LOCAL = Reduction()


class MetaGradients(dict):
    """``{group: {parameter name: meta-gradient}}`` of one meta-step, and its ``metrics``."""

    def __init__(self, groups: dict[str, dict[str, Tensor]] | None = None, metrics: dict[str, float] | None = None):
        super().__init__(groups or {})
        self.metrics: dict[str, float] = dict(metrics or {})


def make_meta_optimizer(name: str, params: list[Tensor], lr: float) -> torch.optim.Optimizer:
    """A ``torch.optim`` meta-optimiser by name (``sgd`` or ``adam``)."""
    if name not in META_OPTIMIZERS:
        raise UsageError(f"unknown meta_optimizer {name!r}; allowed: {', '.join(META_OPTIMIZERS)}")
    if not params:
        raise UsageError("the meta-optimiser has no parameters to learn")
    return META_OPTIMIZERS[name](params, lr=lr)


class MetaShell:
    """Every meta-parameter (``module``: the model and ``extra`` meta-parameters) and one
    meta-optimiser per named group."""

    def __init__(self, model: nn.Module):
        self.module = nn.ModuleDict({"model": model, "extra": nn.ParameterDict()})
        self.groups: dict[str, tuple[dict[str, Tensor], torch.optim.Optimizer]] = {}

    @property
    def extra(self) -> nn.ParameterDict:
        return self.module["extra"]  # type: ignore[return-value]

    def add_parameter(self, name: str, value: Tensor) -> nn.Parameter:
        """Register an extra meta-parameter (e.g. a learning rate) and return it."""
        self.extra[name] = nn.Parameter(value)
        return self.extra[name]

    def add_group(self, name: str, params: dict[str, Tensor], optimizer: str, lr: float) -> torch.optim.Optimizer:
        """Meta-parameter group ``name``: ``params`` (by name) stepped by ``optimizer`` at ``lr``."""
        if name in self.groups:
            raise UsageError(f"meta-parameter group {name!r} defined twice")
        self.groups[name] = (dict(params), make_meta_optimizer(optimizer, list(params.values()), lr))
        return self.groups[name][1]

    def parameters(self, name: str) -> dict[str, Tensor]:
        return self.groups[name][0]

    def optimizer(self, name: str) -> torch.optim.Optimizer:
        return self.groups[name][1]

    def apply(self, name: str, grads: dict[str, Tensor] | list[Tensor], reduction: Reduction = LOCAL) -> None:
        """Reduce ``grads`` (by parameter name, or a list in the group's order) over processes,
        set them as ``.grad`` of group ``name`` and step its meta-optimiser."""
        params, optimizer = self.groups[name]
        ordered = [grads[k] for k in params] if isinstance(grads, dict) else list(grads)
        for p, g in zip(params.values(), reduction.gradients(ordered), strict=True):
            p.grad = g.detach().clone()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def to(self, device: torch.device | str) -> None:
        """Move every meta-parameter in place (the optimisers hold the same tensor objects)."""
        for p in self.module.parameters():
            p.data = p.data.to(device)
        for b in self.module.buffers():
            b.data = b.data.to(device)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.module["model"].state_dict(),
            **({"extra": self.extra.state_dict()} if len(self.extra) else {}),
            "optimizers": {name: opt.state_dict() for name, (_, opt) in self.groups.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module["model"].load_state_dict(state["model"])
        if len(self.extra):
            self.extra.load_state_dict(state["extra"])
        saved = state["optimizers"]
        if set(saved) != set(self.groups):
            raise UsageError(f"checkpoint has meta-optimisers {sorted(saved)}, this learner {sorted(self.groups)}")
        for name, (_, opt) in self.groups.items():
            opt.load_state_dict(saved[name])
