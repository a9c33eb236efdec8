"""What every meta-learner shares: the inner loop, adaptation, evaluation, checkpoint state.

A meta-learner is a thin stateful shell around a model (whose parameters are the
meta-parameters: θ₀ for task layers, φ for warp layers), a pure inner optimiser and a
``torch.optim`` meta-optimiser. Its protocol:

* ``adapt(task, generator, steps=None) -> params``: the task-adapted parameter dict (task
  parameters after ``steps`` inner steps from θ₀; warp parameters unchanged);
* ``meta_step(tasks, generator) -> dict[str, float]``: one outer update;
* ``evaluate(tasks, generator, steps=None) -> dict[str, Tensor]``: per-task post-adaptation
  test loss and metric;
* ``state_dict()`` / ``load_state_dict()``: everything needed to resume bit-exactly.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from warpgrad.distributed import reduce_gradients
from warpgrad.functional import (
    InnerOptimizer,
    Params,
    State,
    combine,
    detach,
    functional_apply,
    loss_and_grad,
    partition,
)
from warpgrad.tasks.base import Task

META_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}

StepCallback = Callable[[int, Params, State, Tensor, Params], None]


def inner_loop(
    model: nn.Module,
    inner_optimizer: InnerOptimizer,
    theta0: Params,
    phi: Params,
    task: Task,
    steps: int,
    generator: torch.Generator,
    on_step: StepCallback | None = None,
) -> tuple[Params, State]:
    """Adapt task parameters for ``steps`` steps on ``task``'s training batches (no meta-graph).

    Starts from a detached copy of ``theta0``; ``phi`` is held fixed. ``on_step(k, θ_k, s_k,
    L_k, g_k)`` is called before the k-th update with the point, optimiser state, loss and
    gradient (all detached). Returns the final parameters θ_K and optimiser state.
    """
    phi = {k: v.detach() for k, v in phi.items()}
    theta = detach(theta0)
    state = inner_optimizer.init(theta)
    for k in range(steps):
        loss, grads = loss_and_grad(model, task.loss, theta, phi, task.train_batch(generator))
        theta = {n: v.detach() for n, v in theta.items()}
        if on_step is not None:
            on_step(k, theta, state, loss.detach(), grads)
        with torch.no_grad():
            theta, state = inner_optimizer.update(grads, state, theta)
    return theta, state


def make_meta_optimizer(name: str, params: list[Tensor], lr: float) -> torch.optim.Optimizer:
    """A ``torch.optim`` meta-optimiser by name (``sgd`` or ``adam``)."""
    if name not in META_OPTIMIZERS:
        raise ValueError(f"unknown meta_optimizer {name!r}; allowed: {', '.join(META_OPTIMIZERS)}")
    if not params:
        raise ValueError("the meta-optimiser has no parameters to learn")
    return META_OPTIMIZERS[name](params, lr=lr)


def apply_gradients(optimizer: torch.optim.Optimizer, params: list[Tensor], grads: list[Tensor]) -> None:
    """Set ``.grad`` of ``params`` to ``grads`` and take one step of ``optimizer``.

    In a distributed meta-step the gradients are first averaged over the ranks' shards of the
    meta-batch (:func:`warpgrad.distributed.reduce_gradients`).
    """
    grads = reduce_gradients(grads)
    for p, g in zip(params, grads, strict=True):
        p.grad = g.detach().clone()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def check_no_running_statistics(model: nn.Module) -> None:
    """Raise if a batch-norm layer keeps running statistics.

    Inner loops run the model functionally (and under ``vmap``), where in-place updates of
    running statistics are wrong or impossible; few-shot learners use batch statistics only.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            raise ValueError(
                f"batch-norm layer {name!r} tracks running statistics; build it with "
                "track_running_stats=False (batch statistics only, the few-shot standard)"
            )


class MetaLearner:
    """Base class: owns the model, the inner optimiser and the meta-optimiser.

    Subclasses implement :meth:`meta_step` (and extend ``state_dict`` if they keep more state).
    """

    name = "base"

    def __init__(
        self,
        model: nn.Module,
        inner_optimizer: InnerOptimizer,
        inner_steps: int,
        meta_optimizer: torch.optim.Optimizer | None = None,
    ):
        if not isinstance(inner_steps, int) or inner_steps < 0:
            raise ValueError(f"inner_steps must be an integer >= 0, got {inner_steps!r}")
        check_no_running_statistics(model)
        self.model = model
        self.inner_optimizer = inner_optimizer
        self.inner_steps = inner_steps
        self.meta_optimizer = meta_optimizer

    # ---------------------------------------------------------------- parameters
    def parameters_by_role(self) -> tuple[Params, Params]:
        """``(θ₀, φ)``: the model's task and warp ``nn.Parameter`` s."""
        return partition(self.model)

    # ---------------------------------------------------------------- protocol
    def adapt(self, task: Task, generator: torch.Generator, steps: int | None = None) -> Params:
        theta0, phi = self.parameters_by_role()
        theta, _ = inner_loop(
            self.model, self.inner_optimizer, theta0, phi, task,
            self.inner_steps if steps is None else steps, generator,
        )
        return combine(theta, {k: v.detach() for k, v in phi.items()})

    def meta_step(self, tasks: list[Task], generator: torch.Generator) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(
        self, tasks: list[Task], generator: torch.Generator, steps: int | None = None
    ) -> dict[str, Tensor]:
        """Per-task test loss and metric after adaptation (tensors of shape ``[len(tasks)]``)."""
        if not tasks:
            raise ValueError("evaluate needs at least one task")
        losses, metrics = [], []
        for task in tasks:
            params = self.adapt(task, generator, steps)
            x, y = task.test_batch()
            prediction = functional_apply(self.model, params, x)
            losses.append(task.loss(prediction, y).detach())
            metrics.append(task.metric(prediction, y).detach())
        return {"loss": torch.stack(losses), tasks[0].metric_name: torch.stack(metrics)}

    def to(self, device: torch.device | str) -> MetaLearner:
        """Move every meta-parameter to ``device`` in place (before the first meta-step)."""
        self.model.to(device)
        return self

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"model": self.model.state_dict()}
        if self.meta_optimizer is not None:
            state["meta_optimizer"] = self.meta_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.meta_optimizer is not None:
            self.meta_optimizer.load_state_dict(state["meta_optimizer"])


class InitialisationLearner(MetaLearner):
    """A meta-learner whose only meta-parameters are θ₀, stepped along :meth:`meta_gradient`.

    Subclasses implement ``meta_gradient(tasks, generator) -> (∇θ₀, metrics)``; warp layers in
    the model, if any, are held fixed.
    """

    def __init__(
        self,
        model: nn.Module,
        inner_optimizer: InnerOptimizer,
        inner_steps: int,
        *,
        meta_optimizer: str = "adam",
        meta_lr: float = 1e-3,
    ):
        super().__init__(model, inner_optimizer, inner_steps)
        theta0, _ = self.parameters_by_role()
        self.meta_optimizer = make_meta_optimizer(meta_optimizer, list(theta0.values()), meta_lr)

    def meta_gradient(self, tasks: list[Task], generator: torch.Generator) -> tuple[Params, dict[str, float]]:
        raise NotImplementedError

    def meta_step(self, tasks: list[Task], generator: torch.Generator) -> dict[str, float]:
        if not tasks:
            raise ValueError("meta_step needs at least one task")
        grad, metrics = self.meta_gradient(tasks, generator)
        theta0, _ = self.parameters_by_role()
        apply_gradients(self.meta_optimizer, list(theta0.values()), [grad[k] for k in theta0])
        return metrics


class NoMetaLearning(MetaLearner):
    """Baseline without meta-learning: the same network and inner loop from its random init.

    ``meta_step`` does nothing; adaptation starts from the model's initial parameters every time.
    """

    name = "baseline"

    def meta_step(self, tasks: list[Task], generator: torch.Generator) -> dict[str, float]:
        return {}
