"""What every meta-learner shares: roles, adaptation, evaluation, the shell that applies updates.

A meta-learner is a thin stateful shell around a model: its parameters split by the ``adapt``
filter into those the inner loop adapts (θ, starting from θ₀) and the rest (warp layers φ, a
frozen body, ...). It owns a pure inner optimiser and a :class:`~warpgrad.core.shell.MetaShell`
(meta-parameters and their ``torch.optim`` meta-optimisers). Its protocol:

* ``adapt(task, generator, steps=None) -> params``: the task-adapted parameter dict (the
  adapted parameters after ``steps`` inner steps from θ₀; the others unchanged);
* ``meta_gradients(tasks, generator, reduction) -> (grads per group, metrics)``: what a
  meta-step would apply, without applying it;
* ``meta_step(tasks, generator, reduction=LOCAL) -> metrics``: one outer update (the shell
  applies the meta-gradients, reduced across processes by ``reduction``);
* ``evaluate(tasks, generator, steps=None) -> dict[str, Tensor]``: per-task post-adaptation test
  loss and metric, with the model in eval mode;
* ``state_dict()`` / ``load_state_dict()``: everything needed to resume bit-exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from warpgrad.core.optim import InnerOptimizer
from warpgrad.core.params import Filter, combine, functional_apply, not_warp, partition, scored_loss
from warpgrad.core.shell import (
    LOCAL,
    META_OPTIMIZERS,
    MetaGradients,
    MetaShell,
    Reduction,
    make_meta_optimizer,
)
from warpgrad.core.tree import Params
from warpgrad.core.unroll import StepHook, unroll
from warpgrad.errors import UsageError
from warpgrad.methods.registry import register
from warpgrad.tasks.base import Task, evaluation, objective

__all__ = [
    "MetaLearner",
    "InitialisationLearner",
    "NoMetaLearning",
    "inner_loop",
    "task_loss",
    "check_no_running_statistics",
    "META_OPTIMIZERS",
    "make_meta_optimizer",
]


def task_loss(model: nn.Module, task: Task, frozen: Params):
    """``(θ, batch) -> loss``: the task's objective of ``model`` with θ adapted and ``frozen`` fixed."""
    return scored_loss(model, objective(task), frozen)


def inner_loop(
    model: nn.Module,
    inner_optimizer: InnerOptimizer,
    theta0: Params,
    frozen: Params,
    task: Task,
    steps: int,
    generator: torch.Generator,
    on_step: StepHook | None = None,
) -> tuple[Params, Any]:
    """Adapt θ for ``steps`` steps on ``task``'s training batches (no meta-graph); ``frozen`` is
    held fixed. ``on_step`` as in :func:`~warpgrad.core.unroll.unroll`. Returns (θ_K, state)."""
    frozen = {k: v.detach() for k, v in frozen.items()}
    batches = (task.train_batch(generator) for _ in range(steps))
    return unroll(task_loss(model, task, frozen), theta0, inner_optimizer, batches, on_step=on_step)


def check_no_running_statistics(model: nn.Module) -> None:
    """Raise if a batch-norm layer keeps running statistics.

    Inner loops run the model functionally (and under ``vmap``), where in-place updates of
    running statistics are wrong or impossible; few-shot learners use batch statistics only.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            raise UsageError(
                f"batch-norm layer {name!r} tracks running statistics; build it with "
                "track_running_stats=False (batch statistics only, the few-shot standard)"
            )


class eval_mode:
    """Context: ``model.eval()`` inside, the previous train/eval flags of every submodule after."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self) -> None:
        self.flags = [m.training for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc: Any) -> None:
        for m, flag in zip(self.model.modules(), self.flags):
            m.training = flag


class MetaLearner:
    """Base class: the model, the adapt filter, the inner optimiser and the meta-shell.

    Subclasses implement :meth:`meta_gradients` (and register their meta-parameter groups with
    ``self.shell.add_group``); :meth:`meta_step` applies what it returns.
    """

    name = "base"

    def __init__(
        self,
        model: nn.Module,
        inner_optimizer: InnerOptimizer,
        inner_steps: int,
        *,
        adapt: Filter = not_warp,
    ):
        if not isinstance(inner_steps, int) or inner_steps < 0:
            raise UsageError(f"inner_steps must be an integer >= 0, got {inner_steps!r}")
        check_no_running_statistics(model)
        self.model = model
        self.inner_optimizer = inner_optimizer
        self.inner_steps = inner_steps
        self.adapt_filter = adapt
        self.shell = MetaShell(model)

    # ---------------------------------------------------------------- parameters
    def parameters_by_role(self) -> tuple[Params, Params]:
        """``(θ₀, rest)``: the model's adapted parameters and the others (warps: φ)."""
        return partition(self.model, self.adapt_filter)

    # ---------------------------------------------------------------- protocol
    def adapt(self, task: Task, generator: torch.Generator, steps: int | None = None) -> Params:
        theta0, rest = self.parameters_by_role()
        theta, _ = inner_loop(
            self.model,
            self.inner_optimizer,
            theta0,
            rest,
            task,
            self.inner_steps if steps is None else steps,
            generator,
        )
        return combine(theta, {k: v.detach() for k, v in rest.items()})

    def meta_gradients(
        self, tasks: list[Task], generator: torch.Generator, reduction: Reduction = LOCAL
    ) -> MetaGradients:
        """``{group: {name: meta-gradient}}`` of one meta-step (with its ``.metrics``), not yet
        reduced across processes nor applied."""
        raise NotImplementedError

    def meta_step(
        self, tasks: list[Task], generator: torch.Generator, reduction: Reduction = LOCAL
    ) -> dict[str, float]:
        """One outer update: the meta-gradients of ``tasks``, reduced by ``reduction``, applied."""
        if not tasks:
            raise UsageError("meta_step needs at least one task")
        grads = self.meta_gradients(tasks, generator, reduction)
        for group, group_grads in grads.items():
            self.shell.apply(group, group_grads, reduction)
        return grads.metrics

    @torch.no_grad()
    def evaluate(self, tasks: list[Task], generator: torch.Generator, steps: int | None = None) -> dict[str, Tensor]:
        """Per-task test loss and metric after adaptation (tensors of shape ``[len(tasks)]``).

        The model runs in eval mode (dropout off), here and during the adaptation it scores.
        """
        if not tasks:
            raise UsageError("evaluate needs at least one task")
        losses, metrics = [], []
        with eval_mode(self.model):
            for task in tasks:
                params = self.adapt(task, generator, steps)
                loss, metric = evaluation(task)(
                    lambda *inputs, p=params: functional_apply(self.model, p, *inputs), task.test_batch()
                )
                losses.append(loss.detach())
                metrics.append(metric.detach())
        return {"loss": torch.stack(losses), tasks[0].metric_name: torch.stack(metrics)}

    def to(self, device: torch.device | str) -> MetaLearner:
        """Move every meta-parameter to ``device`` in place (before the first meta-step)."""
        self.shell.to(device)
        return self

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return self.shell.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shell.load_state_dict(state)


class InitialisationLearner(MetaLearner):
    """A meta-learner whose only meta-parameters are θ₀ (group ``init``), stepped along
    :meth:`meta_gradient`. Subclasses implement ``meta_gradient(tasks, generator) -> (∇θ₀,
    metrics)``; the other parameters (warp layers), if any, are held fixed."""

    def __init__(
        self,
        model: nn.Module,
        inner_optimizer: InnerOptimizer,
        inner_steps: int,
        *,
        meta_optimizer: str = "adam",
        meta_lr: float = 1e-3,
        adapt: Filter = not_warp,
    ):
        super().__init__(model, inner_optimizer, inner_steps, adapt=adapt)
        theta0, _ = self.parameters_by_role()
        self.shell.add_group("init", theta0, meta_optimizer, meta_lr)

    def meta_gradient(self, tasks: list[Task], generator: torch.Generator) -> tuple[Params, dict[str, float]]:
        raise NotImplementedError

    def meta_gradients(
        self, tasks: list[Task], generator: torch.Generator, reduction: Reduction = LOCAL
    ) -> MetaGradients:
        grad, metrics = self.meta_gradient(tasks, generator)
        return MetaGradients({"init": grad}, metrics)


class NoMetaLearning(MetaLearner):
    """Baseline without meta-learning: the same network and inner loop from its random init.

    ``meta_step`` does nothing; adaptation starts from the model's initial parameters every time.
    """

    name = "baseline"

    def meta_gradients(
        self, tasks: list[Task], generator: torch.Generator, reduction: Reduction = LOCAL
    ) -> MetaGradients:
        return MetaGradients()


@dataclass
class BaselineConfig:
    """The baseline has no options: the experiment's network and inner loop, no meta-learning."""


register(
    "baseline",
    NoMetaLearning,
    BaselineConfig,
    "no meta-learning: the WarpGrad network (identity warps) adapted from its random init",
    uses_warps=True,
)
