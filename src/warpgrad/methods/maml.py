"""The MAML family: meta-learn through the inner loop (MAML, FOMAML, Meta-SGD).

MAML (Finn, Abbeel, Levine, ICML 2017) minimises the post-adaptation test loss

    C(θ₀) = E_τ L_τ^test(θ_K(θ₀)),    θ_{k+1} = U(θ_k, ∇L_τ^train(θ_k)),

differentiating through all K inner steps (second order). FOMAML drops the second-order terms
(the inner gradients are treated as constants), so ∇C ≈ E_τ ∇L_τ^test(θ_K). Meta-SGD (Li, Zhou,
Chen, Li, 2017) also meta-learns a learning rate per parameter element: θ ← θ − α ⊙ g, with α
updated by the same meta-gradient.

Tasks are batched with ``torch.func.vmap`` (``batched=True``): every task's inner loop runs at
once, the inner gradient via ``torch.func.grad``; a per-task loop gives the same result and is
used when the tasks' batches differ in shape or the model has modules vmap cannot batch (RNNs,
dropout, torch norm layers; :mod:`warpgrad.core.batching`). Batch-norm layers must keep no running statistics
(``track_running_stats=False``), as is standard in few-shot learning. On CPU, conv nets run
faster in the per-task loop (``batched=False``) with the learner's ``channels_last`` set, which
hands the model its image batches in NHWC memory layout (values unchanged; oneDNN's convolutions
and max-pooling are faster on it): see docs/benchmarks.md, MAML vs peers.

Which parameters adapt is the ``adapt`` filter (default: all but warp layers); which are
meta-learned is ``meta_filter`` (default: all but warp layers, so warps are held fixed). T-Nets
(:mod:`.tnets`) meta-learns the warps too; ANIL (:mod:`.anil`) adapts only the head.

References:
    Finn, Abbeel, Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks.
    ICML 2017. arXiv:1703.03400.
    Li, Zhou, Chen, Li. Meta-SGD: Learning to Learn Quickly for Few-Shot Learning. 2017.
    arXiv:1707.09835.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from warpgrad.core.batching import batching_allowed
from warpgrad.core.optim import InnerOptimizer, per_parameter_sgd
from warpgrad.core.params import Filter, not_warp, partition
from warpgrad.core.shell import LOCAL, MetaGradients, Reduction
from warpgrad.core.tree import Params, same_shapes, tree_map, tree_stack
from warpgrad.core.unroll import unroll
from warpgrad.errors import UsageError
from warpgrad.methods.base import MetaLearner, task_loss
from warpgrad.methods.registry import register
from warpgrad.tasks.base import Task, loss_function

Batch = Any


def adapted_test_loss(
    model: nn.Module,
    task: Task,
    inner_optimizer: InnerOptimizer,
    theta0: Params,
    frozen: Params,
    support: list[Batch],
    query: Batch,
    first_order: bool = False,
) -> Tensor:
    """L^test(θ_K): K differentiable inner steps on ``support`` batches, then the query loss.

    Pure in its tensor arguments, so it runs under ``torch.func.vmap``; its result is
    differentiable w.r.t. ``theta0``, ``frozen`` and tensors captured by ``inner_optimizer``.
    """
    loss = task_loss(model, task, frozen)
    theta, _ = unroll(loss, theta0, inner_optimizer, support, differentiable=True, first_order=first_order)
    return loss(theta, query)


def draw_support(tasks: list[Task], steps: int, generator: torch.Generator) -> list[list[Batch]]:
    """Each task's ``steps`` training batches, drawn task by task (the order both paths use)."""
    return [[task.train_batch(generator) for _ in range(steps)] for task in tasks]


def channels_last(batch: Batch) -> Batch:
    """``batch`` with every 4-d floating tensor copied into NHWC memory layout (same values).

    A single-channel image is NCHW and NHWC at once, so ``contiguous(memory_format=...)`` keeps it
    as it is and the first convolution would pick NCHW; an explicit NHWC copy makes it pick NHWC.
    """

    def convert(t: Tensor) -> Tensor:
        if t.dim() != 4 or not t.is_floating_point():
            return t
        return torch.empty_like(t, memory_format=torch.channels_last).copy_(t)

    return tree_map(convert, batch)


def mean_adapted_loss(
    model: nn.Module,
    inner_optimizer: InnerOptimizer,
    theta0: Params,
    frozen: Params,
    tasks: list[Task],
    steps: int,
    generator: torch.Generator,
    first_order: bool = False,
    batched: bool = True,
    nhwc: bool = False,
) -> Tensor:
    """Mean over ``tasks`` of :func:`adapted_test_loss` (vmapped when ``batched`` allows); ``nhwc``:
    the batches in :func:`channels_last` layout."""
    support = draw_support(tasks, steps, generator)
    queries = [task.test_batch() for task in tasks]
    if nhwc:
        support, queries = channels_last(support), channels_last(queries)
    same_family = len({loss_function(t) for t in tasks}) == 1
    if batched and len(tasks) > 1 and same_family and same_shapes(support) and same_shapes(queries):
        stacked_support = [tree_stack([s[k] for s in support]) for k in range(steps)]
        stacked_query = tree_stack(queries)

        def one(task_support: list[Batch], task_query: Batch) -> Tensor:
            return adapted_test_loss(
                model, tasks[0], inner_optimizer, theta0, frozen, task_support, task_query, first_order
            )

        return torch.func.vmap(one)(stacked_support, stacked_query).mean()
    losses = [
        adapted_test_loss(model, task, inner_optimizer, theta0, frozen, s, q, first_order)
        for task, s, q in zip(tasks, support, queries)
    ]
    return torch.stack(losses).mean()


def maml_gradient(
    model: nn.Module,
    inner_optimizer: InnerOptimizer,
    theta0: Params,
    frozen: Params,
    tasks: list[Task],
    steps: int,
    generator: torch.Generator,
    first_order: bool = False,
    batched: bool = True,
) -> tuple[Params, float]:
    """Mean over tasks of ∇_θ₀ L_τ^test(θ_K(θ₀)) with ``frozen`` held fixed; and the mean loss."""
    frozen = {k: v.detach() for k, v in frozen.items()}
    with torch.enable_grad():
        loss = mean_adapted_loss(model, inner_optimizer, theta0, frozen, tasks, steps, generator, first_order, batched)
        grads = torch.autograd.grad(loss, list(theta0.values()))
    return dict(zip(theta0, grads)), float(loss.detach())


@dataclass
class MAMLConfig:
    """MAML's options.

    Attributes:
        first_order: drop the second-order terms (FOMAML).
        meta_optimizer: ``adam`` or ``sgd``.
        meta_lr: the meta learning rate.
        batched: vmap over the tasks of a meta-batch when their batches have equal shapes and the
            model allows it (else a per-task loop with the same result).
        horizon: inner steps in the meta-objective (``None``: the experiment's ``inner_steps``);
            adaptation to a task still takes ``inner_steps``. A shorter horizon is how the WarpGrad
            and Leap papers run MAML on 100-step multi-shot tasks (5 steps).
    """

    first_order: bool = False
    meta_optimizer: str = "adam"
    meta_lr: float = 1e-3
    batched: bool = True
    horizon: int | None = None


@dataclass
class FOMAMLConfig(MAMLConfig):
    """First-order MAML's options (as MAML's, ``first_order`` on)."""

    first_order: bool = True


class MAML(MetaLearner):
    """MAML (``first_order=False``) and FOMAML (``first_order=True``).

    Args:
        model: the task learner.
        inner_optimizer: differentiable inner optimiser (SGD, momentum or Adam).
        inner_steps: K, the inner steps of adaptation, and of meta-training unless ``horizon``.
        first_order: drop second-order terms (FOMAML).
        meta_optimizer: ``adam`` or ``sgd``, with learning rate ``meta_lr``.
        batched: vmap over the tasks of a meta-batch when their batches have equal shapes.
        horizon: inner steps in the meta-objective (``None``: ``inner_steps``).
        adapt: which parameters the inner loop adapts (default: all but warp layers).
        meta_filter: which parameters are meta-learned (default: all but warp layers).

    Attributes:
        channels_last: hand the model its 4-d image batches in NHWC memory layout
            (:func:`channels_last`; default False): same values, faster conv nets on CPU. Set it
            on the learner; the model must not ``view`` its activations as NCHW.
    """

    name = "maml"

    def __init__(
        self,
        model: nn.Module,
        inner_optimizer: InnerOptimizer,
        inner_steps: int,
        *,
        first_order: bool = False,
        meta_optimizer: str = "adam",
        meta_lr: float = 1e-3,
        batched: bool = True,
        horizon: int | None = None,
        adapt: Filter = not_warp,
        meta_filter: Filter = not_warp,
    ):
        super().__init__(model, inner_optimizer, inner_steps, adapt=adapt)
        if horizon is not None and (not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1):
            raise UsageError(f"horizon must be an integer >= 1 or None, got {horizon!r}")
        self.horizon = inner_steps if horizon is None else horizon
        self.first_order = first_order
        self.meta_filter = meta_filter
        self.batched = batching_allowed(model, batched)
        self.channels_last = False
        self.shell.add_group("init", self.named_meta_parameters(), meta_optimizer, meta_lr)

    def named_meta_parameters(self) -> Params:
        """The tensors the meta-gradient is taken with respect to (θ₀, and what ``meta_filter`` adds)."""
        theta0, rest = self.parameters_by_role()
        learned = self.meta_filter(self.model)
        return {**{k: v for k, v in theta0.items() if k in learned}, **{k: v for k, v in rest.items() if k in learned}}

    def meta_parameters(self) -> list[Tensor]:
        return list(self.named_meta_parameters().values())

    def meta_loss(self, tasks: list[Task], generator: torch.Generator) -> Tensor:
        """Mean post-adaptation test loss over ``tasks``, differentiable w.r.t. the meta-parameters."""
        theta0, rest = self.parameters_by_role()
        learned = self.meta_filter(self.model)
        rest = {k: v if k in learned else v.detach() for k, v in rest.items()}
        return mean_adapted_loss(
            self.model,
            self.inner_optimizer,
            theta0,
            rest,
            tasks,
            self.horizon,
            generator,
            self.first_order,
            self.batched,
            self.channels_last,
        )

    def meta_gradients(
        self, tasks: list[Task], generator: torch.Generator, reduction: Reduction = LOCAL
    ) -> MetaGradients:
        params = self.named_meta_parameters()
        with torch.enable_grad():
            loss = self.meta_loss(tasks, generator)
            grads = torch.autograd.grad(loss, list(params.values()))
        return MetaGradients({"init": dict(zip(params, grads))}, {"meta_loss": float(loss.detach())})


@dataclass
class MetaSGDConfig(MAMLConfig):
    """Meta-SGD's options (as MAML's; the learning rates start at the experiment's ``inner_lr``)."""


class MetaSGD(MAML):
    """Meta-SGD: MAML with a meta-learned learning rate for every task-parameter element.

    The inner optimiser is θ ← θ − α ⊙ g with α initialised to ``inner_lr`` and meta-learned
    with θ₀ by the MAML meta-gradient (second order unless ``first_order``).
    """

    name = "metasgd"

    def __init__(self, model: nn.Module, inner_steps: int, *, inner_lr: float = 0.01, **kwargs: Any):
        theta0, _ = partition(model, kwargs.get("adapt", not_warp))
        lrs = {name: nn.Parameter(torch.full_like(p.detach(), inner_lr)) for name, p in theta0.items()}
        self.named_learning_rates = {f"lr:{name}": lr for name, lr in lrs.items()}
        super().__init__(model, per_parameter_sgd(lrs), inner_steps, **kwargs)
        for name, lr in lrs.items():  # one module holds every meta-parameter (and its checkpoint)
            self.shell.extra[name.replace(".", "/")] = lr

    @property
    def lr_names(self) -> list[str]:
        """The adapted parameters' names, in the order of :attr:`learning_rates`."""
        return [name.removeprefix("lr:") for name in self.named_learning_rates]

    @property
    def learning_rates(self) -> list[Tensor]:
        return list(self.named_learning_rates.values())

    def named_meta_parameters(self) -> Params:
        return {**super().named_meta_parameters(), **self.named_learning_rates}


def _inner_lr_options(options: dict[str, Any]) -> dict[str, Any]:
    return {"inner_lr": options["inner_lr"]}


register("maml", MAML, MAMLConfig, "MAML: second-order meta-gradient through the inner loop")
register("fomaml", MAML, FOMAMLConfig, "first-order MAML")
register(
    "metasgd",
    MetaSGD,
    MetaSGDConfig,
    "Meta-SGD: MAML with a learned learning rate per parameter",
    inner_optimizer=False,
    experiment_options=_inner_lr_options,
)

__all__ = [
    "MAML",
    "MetaSGD",
    "MAMLConfig",
    "FOMAMLConfig",
    "MetaSGDConfig",
    "maml_gradient",
    "adapted_test_loss",
    "channels_last",
]
