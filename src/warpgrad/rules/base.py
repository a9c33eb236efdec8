"""Learned learning rules: the protocol every rule implements and the online episodes they share.

A learned rule replaces gradient descent: a learner whose *learning algorithm* is a function of
meta-parameters (a genome, the weights of a shared LSTM or of update networks), meta-trained
across tasks and then run, frozen, on new ones. At test time no gradient of the task loss is
computed; the learner only sees inputs and, one step late, the labels.

The protocol (:class:`LearnedRule`) is functional, over one episode and one example at a time:

    meta = rule.init_meta(generator)                    # the meta-parameters, a dict of tensors
    state = rule.init_state(meta, generator)            # a fresh learner (its "weights" and memory)
    state, logits = rule.step(meta, state, x, feedback) # x: (in_dim,), feedback: (n_classes,)

``feedback`` at step t is the one-hot label of step t − 1's input (zeros at t = 0): each
prediction is made before its label is seen, so the online accuracy over an episode measures
learning, not memorisation. What a rule does with the label (an error signal, the label itself
injected into a neuron, nothing) is the rule's business.

:func:`run_episodes` runs E episodes side by side with ``torch.func.vmap`` over the episodes (each
has its own learner state), so the same code serves meta-training by backpropagation through
time (:func:`episode_loss` is differentiable in ``meta``), meta-training by ES or CMA-ES
(:mod:`warpgrad.estimators`, with ``vmap`` over a population where the rule allows it) and
meta-testing. A rule whose ``step`` cannot run under vmap sets ``vectorizable = False`` and its
episodes run in a loop (the same numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from warpgrad.core.tree import Params
from warpgrad.errors import UsageError

__all__ = ["Episodes", "LearnedRule", "episode_loss", "online_metrics", "run_episodes"]

State = Any  # a dict (or nested dicts) of tensors


class LearnedRule(Protocol):
    """What every learned rule provides (see the module docstring)."""

    name: str
    in_dim: int
    n_classes: int
    vectorizable: bool

    def init_meta(self, generator: torch.Generator) -> Params: ...

    def init_state(self, meta: Params, generator: torch.Generator) -> State: ...

    def step(self, meta: Params, state: State, x: Tensor, feedback: Tensor) -> tuple[State, Tensor]: ...


@dataclass(frozen=True, eq=False)
class Episodes:
    """E online episodes of T examples: inputs ``x`` (E, T, in_dim), labels ``y`` (E, T) in
    0..n_classes − 1."""

    x: Tensor
    y: Tensor
    n_classes: int

    def __post_init__(self) -> None:
        if self.x.dim() != 3 or self.y.shape != self.x.shape[:2]:
            shapes = f"{tuple(self.x.shape)} and {tuple(self.y.shape)}"
            raise UsageError(f"episodes need x (E, T, D) and y (E, T), got {shapes}")


def _stack(states: list[State]) -> State:
    return torch.utils._pytree.tree_map(lambda *leaves: torch.stack(leaves), *states)


def run_episodes(rule: LearnedRule, meta: Params, episodes: Episodes, generator: torch.Generator) -> Tensor:
    """The logits (E, T, n_classes) the rule predicts for every example of every episode, each
    before its label was fed back. Initial states are drawn from ``generator``, episode by episode."""
    if episodes.n_classes != rule.n_classes or episodes.x.shape[-1] != rule.in_dim:
        raise UsageError(
            f"{rule.name} takes {rule.in_dim} inputs and {rule.n_classes} classes; the episodes have "
            f"{episodes.x.shape[-1]} and {episodes.n_classes}"
        )
    count, length = episodes.y.shape
    state = _stack([rule.init_state(meta, generator) for _ in range(count)])
    feedback = torch.zeros(count, rule.n_classes, dtype=episodes.x.dtype)
    labels = F.one_hot(episodes.y, rule.n_classes).to(episodes.x.dtype)
    if rule.vectorizable:
        step = torch.func.vmap(rule.step, in_dims=(None, 0, 0, 0))
    else:

        def step(meta: Params, state: State, x: Tensor, feedback: Tensor) -> tuple[State, Tensor]:
            outputs = [
                rule.step(meta, torch.utils._pytree.tree_map(lambda s: s[e], state), x[e], feedback[e])
                for e in range(count)
            ]
            return _stack([o[0] for o in outputs]), torch.stack([o[1] for o in outputs])

    logits = []
    for t in range(length):
        state, out = step(meta, state, episodes.x[:, t], feedback)
        logits.append(out)
        feedback = labels[:, t]
    return torch.stack(logits, 1)


def episode_loss(rule: LearnedRule, meta: Params, episodes: Episodes, generator: torch.Generator) -> Tensor:
    """The meta-loss: the mean cross-entropy of the online predictions over every step of every
    episode (VS-ML's "mean" loss; differentiable in ``meta``)."""
    logits = run_episodes(rule, meta, episodes, generator)
    return F.cross_entropy(logits.flatten(0, 1), episodes.y.flatten())


def online_metrics(logits: Tensor, y: Tensor, final_fraction: float = 0.25) -> dict[str, Tensor]:
    """Per episode: ``online_accuracy`` (the mean accuracy of the predictions over the whole
    episode, the area under its learning curve), ``final_accuracy`` (over its last
    ``final_fraction``) and ``curve`` (accuracy at each step, shape (E, T))."""
    correct = (logits.argmax(-1) == y).to(torch.float64)
    tail = max(1, round(final_fraction * y.shape[1]))
    return {"online_accuracy": correct.mean(1), "final_accuracy": correct[:, -tail:].mean(1), "curve": correct}
