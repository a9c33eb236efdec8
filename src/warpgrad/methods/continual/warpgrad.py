"""Continual WarpGrad (Algorithm 3 of the WarpGrad paper): warps that prevent forgetting.

A *sequence* is a list of experiences (sub-tasks) presented one after another, e.g. a sine
function whose input range [−5, 5] is split into consecutive sub-intervals. The task parameters θ
start from a fixed θ₀ and take ``steps`` inner steps on each experience in turn; nothing is reset
between experiences. The warp parameters φ are meta-learned so that a step on the current
experience does not undo the previous ones: at every point θ visited while training on
experience t, the meta-loss takes WarpGrad's one-step look-ahead on experience t's batch and
evaluates it on the current *and all previous* experiences,

    L_meta(θ; φ) = (1/t) Σ_{s ≤ t} L_s(θ − α ∇L_t(θ; φ); φ),

averaged over all points of the meta-batch's sequences (accumulated as the sequences run, O(1)
memory in their length; Algorithm 1 style). ``objective`` is ``exact`` (through the inner gradient),
``first_order`` or ``approx`` (no look-ahead), exactly as in :func:`warpgrad.methods.warpgrad.warp_objective`.

References:
    Flennerhag, Rusu, Pascanu, Visin, Yin, Hadsell. Meta-Learning with Warped Gradient Descent.
    ICLR 2020, Section 4.3 and Algorithm 3. arXiv:1909.00025.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from warpgrad.core.batching import batching_allowed
from warpgrad.core.lockstep import Step, lockstep, unstack
from warpgrad.core.shell import LOCAL, MetaShell, Reduction
from warpgrad.errors import UsageError
from warpgrad.functional import InnerOptimizer, Params, combine, functional_apply, partition
from warpgrad.methods.base import check_no_running_statistics
from warpgrad.methods.warp_objective import warp_objectives
from warpgrad.methods.warpgrad import OBJECTIVES


class Experience(Protocol):
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


def _index(n: int, size: int | None, generator: torch.Generator) -> Tensor | None:
    """A minibatch's rows (``None``: every row), drawn as the sequential loop draws them."""
    return None if size is None or size >= n else torch.randperm(n, generator=generator)[:size]


def equal_length(sequences: Sequence[Sequence[Experience]]) -> list[list[Experience]]:
    """``sequences`` as lists, or UsageError if they differ in length (they train together)."""
    sequences = [list(s) for s in sequences]
    if len({len(s) for s in sequences}) != 1:
        raise UsageError(f"sequences trained together need equal lengths, got {[len(s) for s in sequences]}")
    return sequences


def _take(x: Tensor, y: Tensor, index: Tensor | None) -> tuple[Tensor, Tensor]:
    return (x, y) if index is None else (x[index], y[index])


class _PlannedExperience:
    """Experience ``t`` of one sequence as a task whose training batches are drawn in advance."""

    def __init__(self, experience: Experience, rows: list[Tensor | None], loss_fn: Callable[[Tensor, Tensor], Tensor]):
        self.experience, self.rows, self.loss = experience, iter(rows), loss_fn

    def train_batch(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        return _take(self.experience.train_x, self.experience.train_y, next(self.rows))


class ContinualWarpGrad:
    """Meta-learns warp layers over sequences of experiences (see the module docstring).

    Args:
        model: task learner with :class:`warpgrad.Warp` layers; its task parameters are the fixed θ₀.
        inner_optimizer: the optimiser that trains θ through each sequence.
        steps: inner steps per experience.
        objective: ``exact``, ``first_order`` or ``approx``.
        meta_optimizer, warp_lr: meta-optimiser of φ.
        batch_size: minibatch per inner step and per experience in the meta-loss (None: all data).
        loss_fn: the task loss (MSE for continual sine regression).
        batched: train the sequences of a meta-batch in lockstep with ``vmap`` when the model allows.
        compile: compile the sequences' batched inner step with ``torch.compile`` (see
            :mod:`warpgrad.core.lockstep`).
    """

    name = "warpgrad-continual"

    def __init__(
        self,
        model: nn.Module,
        inner_optimizer: InnerOptimizer,
        steps: int,
        *,
        objective: str = "exact",
        meta_optimizer: str = "adam",
        warp_lr: float = 1e-3,
        batch_size: int | None = None,
        loss_fn: Callable[[Tensor, Tensor], Tensor] = F.mse_loss,
        batched: bool = True,
        compile: bool = False,
    ):
        if objective not in OBJECTIVES:
            raise UsageError(f"unknown objective {objective!r}; allowed: {', '.join(OBJECTIVES)}")
        if not isinstance(steps, int) or steps < 1:
            raise UsageError(f"steps must be an integer >= 1, got {steps!r}")
        check_no_running_statistics(model)
        _, phi = partition(model)
        if not phi:
            raise UsageError("ContinualWarpGrad needs a model with at least one warpgrad.Warp layer; found none")
        self.model, self.inner_optimizer, self.steps = model, inner_optimizer, steps
        self.objective, self.batch_size, self.loss_fn = objective, batch_size, loss_fn
        self.batched, self.compile = batching_allowed(model, batched), compile
        self.shell = MetaShell(model)
        self.shell.add_group("warp", phi, meta_optimizer, warp_lr)

    def _plan(self, sequence: list[Experience], generator: torch.Generator, meta: bool) -> list[list[Any]]:
        """Every minibatch's rows of ``sequence``, in the order training it alone draws them: per
        experience t and step, the step's rows, then (``meta``) the rows of experiences 0 … t."""
        plan = []
        for t, experience in enumerate(sequence):
            steps = []
            for _ in range(self.steps):
                rows = _index(len(experience.train_x), self.batch_size, generator)
                seen = [_index(len(e.train_x), self.batch_size, generator) for e in sequence[: t + 1]] if meta else []
                steps.append((rows, seen))
            plan.append(steps)
        return plan

    def train_sequences(
        self,
        sequences: Sequence[Sequence[Experience]],
        generator: torch.Generator,
        on_experience: Callable[[int, Params], None] | None = None,
        meta_gradient: list[Tensor] | None = None,
    ) -> tuple[Params, float, int]:
        """Train θ from θ₀ through every sequence, the sequences in lockstep (vmapped when their
        experiences have equal shapes); return (θ stacked over sequences, summed meta-loss, number
        of points). Minibatches are drawn first, sequence after sequence, exactly as training each
        sequence alone would draw them.

        ``on_experience(t, θ)`` is called after each experience with θ stacked over sequences. When
        ``meta_gradient`` (one tensor per warp parameter) is given, ∇φ of the meta-loss at every
        point is added to it.
        """
        sequences = equal_length(sequences)
        plans = [self._plan(s, generator, meta_gradient is not None) for s in sequences]
        theta0, phi = partition(self.model)
        totals = {"loss": 0.0, "points": 0}

        def meta_gradient_at(t: int, step: Step) -> None:
            inner, meta = [], []
            for i, sequence in enumerate(sequences):
                rows, seen_rows = plans[i][t][step.k]
                inner.append(_take(sequence[t].train_x, sequence[t].train_y, rows))
                seen = [_take(e.train_x, e.train_y, r) for e, r in zip(sequence[: t + 1], seen_rows)]
                meta.append((torch.cat([b[0] for b in seen]), torch.cat([b[1] for b in seen])))
            with torch.enable_grad():
                values = warp_objectives(
                    self.model, [self.loss_fn] * len(inner), self.inner_optimizer, step.theta, step.state, phi,
                    list(zip(inner, meta)), self.objective, self.batched,
                )  # fmt: skip
                for acc, g in zip(meta_gradient, torch.autograd.grad(values.sum(), list(phi.values()))):
                    acc += g
            totals["loss"] += float(values.detach().sum())
            totals["points"] += len(values)

        resume = None
        for t in range(len(sequences[0])):
            tasks = [
                _PlannedExperience(s[t], [rows for rows, _ in plans[i][t]], self.loss_fn)
                for i, s in enumerate(sequences)
            ]
            hook = None if meta_gradient is None else (lambda step, t=t: meta_gradient_at(t, step))
            theta, _, state = lockstep(
                self.model, self.inner_optimizer, theta0, phi, tasks, self.steps, generator, self.batched, hook,
                resume=resume, final_loss=False, compile=self.compile,
            )  # fmt: skip
            resume = (theta, state)
            if on_experience is not None:
                on_experience(t, theta)
        return resume[0], totals["loss"], totals["points"]

    def train_sequence(
        self,
        experiences: Sequence[Experience],
        generator: torch.Generator,
        on_experience: Callable[[int, Params], None] | None = None,
        meta_gradient: list[Tensor] | None = None,
    ) -> tuple[Params, float, int]:
        """Train θ from θ₀ through ``experiences``; return (θ, summed meta-loss, number of points).

        ``on_experience(t, θ)`` is called after each experience. When ``meta_gradient`` (one
        tensor per warp parameter) is given, ∇φ of the meta-loss at every point is added to it.
        """
        hook = None if on_experience is None else (lambda t, theta: on_experience(t, unstack(theta, 0)))
        theta, loss_sum, points = self.train_sequences([experiences], generator, hook, meta_gradient)
        return unstack(theta, 0), loss_sum, points

    def meta_gradient(self, sequences: Sequence[Sequence[Experience]], generator: torch.Generator) -> list[Tensor]:
        """The mean over all points of all sequences of ∇φ L_meta (without applying it)."""
        _, phi = partition(self.model)
        total = [torch.zeros_like(p) for p in phi.values()]
        count = self.train_sequences(sequences, generator, meta_gradient=total)[2]
        return [g / count for g in total]

    def meta_step(
        self, sequences: Sequence[Sequence[Experience]], generator: torch.Generator, reduction: Reduction = LOCAL
    ) -> dict[str, float]:
        if not sequences:
            raise UsageError("meta_step needs at least one sequence")
        _, phi = partition(self.model)
        total = [torch.zeros_like(p) for p in phi.values()]
        _, loss_sum, count = self.train_sequences(sequences, generator, meta_gradient=total)
        self.shell.apply("warp", [g / count for g in total], reduction)
        return {"warp_loss": loss_sum / count}

    @torch.no_grad()
    def loss_matrix(self, sequence: Sequence[Experience], generator: torch.Generator) -> Tensor:
        """``R[i, j]``: test loss on experience j after training through experience i (φ fixed)."""
        _, phi = partition(self.model)
        rows: list[Tensor] = []

        def record(t: int, theta: Params) -> None:
            params = combine(theta, {k: v.detach() for k, v in phi.items()})
            rows.append(
                torch.stack([self.loss_fn(functional_apply(self.model, params, e.test_x), e.test_y) for e in sequence])
            )

        self.train_sequence(sequence, generator, on_experience=record)
        return torch.stack(rows)

    def evaluate(self, tasks: Sequence[Sequence[Experience]], generator: torch.Generator) -> dict[str, Tensor]:
        """Per sequence: ``mse`` (= ``loss``), the test loss averaged over *all* experiences after
        training through the whole sequence; ``forgetting``, the mean over experiences j < T−1 of
        R[T−1, j] − R[j, j] (how much a part's loss rose after later parts were learned)."""
        finals, forgetting = [], []
        for sequence in tasks:
            R = self.loss_matrix(list(sequence), generator)
            finals.append(R[-1].mean())
            T = R.shape[0]
            forgetting.append((R[-1, : T - 1] - R.diagonal()[: T - 1]).mean() if T > 1 else R.new_zeros(()))
        final = torch.stack(finals)
        return {"loss": final, "mse": final, "forgetting": torch.stack(forgetting)}

    def to(self, device: torch.device | str) -> ContinualWarpGrad:
        """Stay on the CPU (the sub-task sequences are CPU tensors); another device is an error."""
        if torch.device(device).type != "cpu":
            raise UsageError(f"{self.name} runs on the CPU only (its sequences are CPU tensors); use --device cpu")
        return self

    def state_dict(self) -> dict[str, Any]:
        return self.shell.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shell.load_state_dict(state)


class SequentialBaseline(ContinualWarpGrad):
    """The same network and inner loop trained through each sequence, with no meta-learning
    (identity warps stay the identity): the SGD baseline that forgets."""

    name = "baseline"

    def meta_step(
        self, sequences: Sequence[Sequence[Experience]], generator: torch.Generator, reduction: Reduction = LOCAL
    ) -> dict[str, float]:
        return {}
