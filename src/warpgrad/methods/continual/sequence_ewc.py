"""EWC on continual WarpGrad's sequences (continual sine): the comparison Algorithm 3 asks for.

The network and inner loop of :class:`~.warpgrad.SequentialBaseline` (warps held at the
identity, nothing meta-learned), trained through each sequence with Kirkpatrick et al.'s penalty:
after experience s, the diagonal Fisher F_s at θ*_s and the anchor θ*_s are kept, and every step
on a later experience t descends

    L_t(θ) + Σ_{s<t} (λ/2) F_s ⊙ (θ − θ*_s)²

(the gradient of the penalty, λ Σ_s F_s ⊙ (θ − θ*_s), is added to the task gradient in closed
form). For regression the Fisher is that of a unit-variance Gaussian likelihood around the
network's output, F = mean_n (∂f(x_n; θ)/∂θ)², over the experience's training inputs. The
minibatches are drawn exactly as the baseline and continual WarpGrad draw them, so the three
differ only in what they do with the same data.

References:
    Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", PNAS 2017.
    Flennerhag et al., "Meta-Learning with Warped Gradient Descent", ICLR 2020, Section 4.3.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from warpgrad.core.params import scored_loss
from warpgrad.core.tree import tree_stack
from warpgrad.core.unroll import _loss_and_grad
from warpgrad.errors import UsageError
from warpgrad.functional import Params, detach, partition
from warpgrad.methods.continual.warpgrad import Experience, SequentialBaseline, _take, equal_length


def gaussian_fisher_diagonal(model: nn.Module, theta: Params, frozen: Params, x: Tensor) -> Params:
    """mean_n (∂f(x_n)/∂θ)² for a network ``f = model(θ ∪ frozen)`` with one output per example."""

    output = scored_loss(model, lambda forward, xi: forward(xi.unsqueeze(0)).sum(), frozen)
    per_example = torch.func.vmap(torch.func.grad(output), in_dims=(None, 0))(detach(theta), x)
    return {name: (g**2).mean(0) for name, g in per_example.items()}


class SequenceEWC(SequentialBaseline):
    """The sequential baseline with EWC's penalty between experiences (module docstring).

    Args:
        model, inner_optimizer, steps, batch_size, loss_fn: as for :class:`~.warpgrad.ContinualWarpGrad`.
        lam: λ, the penalty's weight (0: the baseline exactly).
    """

    name = "ewc"

    def __init__(self, model: nn.Module, inner_optimizer: Any, steps: int, *, lam: float = 1.0, **options: Any):
        if not isinstance(lam, (int, float)) or lam < 0:
            raise UsageError(f"ewc.lam must be a number >= 0, got {lam!r}")
        super().__init__(model, inner_optimizer, steps, **options)
        self.lam = float(lam)

    def train_sequences(
        self,
        sequences: Sequence[Sequence[Experience]],
        generator: torch.Generator,
        on_experience: Callable[[int, Params], None] | None = None,
        meta_gradient: list[Tensor] | None = None,
    ) -> tuple[Params, float, int]:
        """Train θ from θ₀ through every sequence (one after another, minibatches drawn as the
        baseline draws them); ``on_experience(t, θ stacked over sequences)`` after each experience."""
        if meta_gradient is not None:
            raise UsageError("EWC meta-learns nothing: it has no meta-gradient")
        sequences = equal_length(sequences)
        plans = [self._plan(s, generator, False) for s in sequences]
        theta0, phi = partition(self.model)
        phi = detach(phi)
        paths = [self._train_one(s, plan, theta0, phi) for s, plan in zip(sequences, plans)]
        per_experience = [tree_stack([path[t] for path in paths]) for t in range(len(sequences[0]))]
        if on_experience is not None:
            for t, theta in enumerate(per_experience):
                on_experience(t, theta)
        return per_experience[-1], 0.0, 0

    def _train_one(
        self, sequence: list[Experience], plan: list[list[Any]], theta0: Params, phi: Params
    ) -> list[Params]:
        """θ after each experience of one sequence."""
        loss = scored_loss(self.model, lambda forward, batch: self.loss_fn(forward(batch[0]), batch[1]), phi)
        theta = detach(theta0)
        state = self.inner_optimizer.init(theta)
        fisher_sum = {k: torch.zeros_like(v) for k, v in theta.items()}  # Σ_s F_s
        weighted_anchor = {k: torch.zeros_like(v) for k, v in theta.items()}  # Σ_s F_s θ*_s
        points = []
        for t, experience in enumerate(sequence):
            for rows, _ in plan[t]:
                _, grads = _loss_and_grad(loss, theta, _take(experience.train_x, experience.train_y, rows))
                grads = {k: g + self.lam * (fisher_sum[k] * theta[k] - weighted_anchor[k]) for k, g in grads.items()}
                with torch.no_grad():
                    theta, state = self.inner_optimizer.update(grads, state, theta)
                theta = detach(theta)
            fisher = gaussian_fisher_diagonal(self.model, theta, phi, experience.train_x)
            for k in theta:
                fisher_sum[k] = fisher_sum[k] + fisher[k]
                weighted_anchor[k] = weighted_anchor[k] + fisher[k] * theta[k]
            points.append(theta)
        return points


__all__ = ["SequenceEWC", "gaussian_fisher_diagonal"]
