"""Advantage actor-critic on batches of maze episodes, with WarpGrad's two timescales.

Per episode (Mnih et al. 2016's A2C as used by Miconi et al. 2018/2019 and WarpGrad's maze): run
the agent for T steps in B environments, sampling a_t ~ softmax(logits_t); then, with returns to
the episode's end and no bootstrap,

    R_t = r_t + γ R_{t+1},    A_t = R_t − V_t
    L   = mean_{t,b} [ −log p(a_t) · stopgrad(A_t) + c_v · A_t² + c_p · Ω(p_t) ]

where Ω is the reference code's penalty Σ_a p_a² (default: the published curves were produced
with it and c_p = 0.03 was tuned for it) or, with ``regulariser="entropy"``, the negative Shannon
entropy Σ_a p_a log p_a.

The reference code (WarpGrad's run.py and the backpropamine maze code it derives from) subtracts
the value of batch element 0 from every environment's return, in the advantage and in the value
loss. ``value_baseline="per-env"`` (default) uses each environment's own value;
``value_baseline="first-env"`` reproduces the reference behaviour, e.g. to compare with its
published curves.

:class:`A2C` applies the updates. The agent's task parameters θ take an Adam step after every
episode; its meta parameters φ (:func:`~warpgrad.methods.rl.base.partition`) take one every
``meta_every`` episodes on the gradient summed over those episodes: WarpGrad's approximate
objective applied online (Flennerhag et al. 2020, maze navigation), where φ's gradient is that of
the same loss at the current θ. No parameter changes in the first ``burn_in`` episodes (their
gradients are not computed; the reference accumulates φ's through them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from warpgrad.errors import UsageError
from warpgrad.methods.rl.base import RecurrentAgent, partition

REGULARISERS = ("sum-p2", "entropy")
VALUE_BASELINES = ("per-env", "first-env")


@dataclass(frozen=True)
class A2CLoss:
    gamma: float = 0.9
    value_coef: float = 0.1
    regulariser: str = "sum-p2"
    regulariser_coef: float = 0.03
    value_baseline: str = "per-env"

    def __post_init__(self) -> None:
        if self.regulariser not in REGULARISERS:
            raise UsageError(f"regulariser {self.regulariser!r} is not one of {', '.join(REGULARISERS)}")
        if self.value_baseline not in VALUE_BASELINES:
            raise UsageError(f"value_baseline {self.value_baseline!r} is not one of {', '.join(VALUE_BASELINES)}")
        if not 0 <= self.gamma <= 1:
            raise UsageError(f"gamma must be in [0, 1], got {self.gamma!r}")


@dataclass(frozen=True)
class Rollout:
    """One episode of B environments: (T, B, actions) logits, (T, B) values, actions and rewards."""

    logits: Tensor
    values: Tensor
    actions: Tensor
    rewards: Tensor


def run_episode(
    agent: RecurrentAgent, maze: Any, maze_generator: torch.Generator, action_generator: torch.Generator
) -> Rollout:
    """Reset ``maze`` and let ``agent`` act in it to the episode's end (its graph kept for the loss).

    The maze draws goals and teleports with ``maze_generator``, the agent its actions with
    ``action_generator``: a maze generator seeded by the episode gives every agent the same goals.
    """
    observation = maze.reset(maze_generator)
    state = agent.initial_state(maze.batch)
    logits, values, actions, rewards = [], [], [], []
    for _ in range(maze.episode_length):
        step_logits, value, state = agent(observation, state)
        probs = F.softmax(step_logits.detach(), dim=-1)
        action = torch.multinomial(probs, 1, generator=action_generator).squeeze(-1)
        observation, reward = maze.step(action, maze_generator)
        logits.append(step_logits)
        values.append(value)
        actions.append(action)
        rewards.append(reward)
    return Rollout(torch.stack(logits), torch.stack(values), torch.stack(actions), torch.stack(rewards))


def discounted_returns(rewards: Tensor, gamma: float) -> Tensor:
    """R_t = r_t + γ R_{t+1} along the first (time) axis, R_T = 0."""
    returns = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def a2c_loss(rollout: Rollout, config: A2CLoss) -> tuple[Tensor, dict[str, float]]:
    """The episode's loss L (module docstring) and its parts as floats."""
    returns = discounted_returns(rollout.rewards, config.gamma)
    values = rollout.values
    if config.value_baseline == "first-env":
        values = values[:, :1].expand_as(values)
    advantage = returns - values
    log_probs = F.log_softmax(rollout.logits, dim=-1)
    probs = log_probs.exp()
    chosen = log_probs.gather(-1, rollout.actions.unsqueeze(-1)).squeeze(-1)
    policy_loss = -(chosen * advantage.detach()).mean()
    value_loss = advantage.pow(2).mean()
    if config.regulariser == "sum-p2":
        penalty = probs.pow(2).sum(-1).mean()
    else:
        penalty = (probs * log_probs).sum(-1).mean()
    loss = policy_loss + config.value_coef * value_loss + config.regulariser_coef * penalty
    parts = {
        name: float(part.detach())
        for name, part in (("policy_loss", policy_loss), ("value_loss", value_loss), ("penalty", penalty))
    }
    return loss, parts


@dataclass(frozen=True)
class A2CUpdates:
    """How the losses become parameter changes: Adam for θ every episode (``lr``, ``adam_eps``, the
    gradient norm clipped to ``clip`` when > 0) and for φ every ``meta_every`` episodes."""

    lr: float = 1e-3
    adam_eps: float = 1e-8
    clip: float = 0.0
    meta_lr: float = 1e-3
    meta_every: int = 30
    burn_in: int = 0

    def __post_init__(self) -> None:
        for name in ("lr", "adam_eps", "meta_lr"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.clip < 0 or self.burn_in < 0 or self.meta_every < 1:
            raise UsageError(f"need clip >= 0, burn_in >= 0 and meta_every >= 1; got {asdict(self)}")


class A2C:
    """Trains ``agent`` one episode at a time (:meth:`train_episode`); :meth:`state_dict` holds
    everything a resumed run needs (optimisers, φ's accumulated gradient, the episode count)."""

    def __init__(self, agent: RecurrentAgent, loss: A2CLoss, updates: A2CUpdates) -> None:
        self.agent, self.loss, self.updates = agent, loss, updates
        task, meta = partition(agent)
        self.task_parameters = list(task.values())
        self.meta_parameters = list(meta.values())
        self.task_optimizer = torch.optim.Adam(self.task_parameters, lr=updates.lr, eps=updates.adam_eps)
        self.meta_optimizer = (
            torch.optim.Adam(self.meta_parameters, lr=updates.meta_lr, eps=updates.adam_eps)
            if self.meta_parameters
            else None
        )
        self.episode = 0

    def train_episode(
        self, maze: Any, maze_generator: torch.Generator, action_generator: torch.Generator
    ) -> dict[str, float]:
        """One episode (:func:`run_episode`) and its updates: the mean (over environments) total
        reward, the loss and its parts."""
        learning = self.episode >= self.updates.burn_in
        with torch.set_grad_enabled(learning):
            rollout = run_episode(self.agent, maze, maze_generator, action_generator)
            loss, parts = a2c_loss(rollout, self.loss)
        if learning:
            for p in self.task_parameters:
                p.grad = None
            loss.backward()  # θ's gradient for this episode; φ's adds to the sum since its last step
            if self.updates.clip > 0:
                torch.nn.utils.clip_grad_norm_(self.task_parameters, self.updates.clip)
            self.task_optimizer.step()
            if (
                self.meta_optimizer is not None
                and (self.episode + 1 - self.updates.burn_in) % self.updates.meta_every == 0
            ):
                self.meta_optimizer.step()
                self.meta_optimizer.zero_grad(set_to_none=True)
        self.episode += 1
        return {"reward": float(rollout.rewards.sum(0).mean()), "loss": float(loss.detach()), **parts}

    def state_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent.state_dict(),
            "task_optimizer": self.task_optimizer.state_dict(),
            "meta_optimizer": None if self.meta_optimizer is None else self.meta_optimizer.state_dict(),
            "meta_grad": [None if p.grad is None else p.grad.clone() for p in self.meta_parameters],
            "episode": self.episode,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state["agent"])
        self.task_optimizer.load_state_dict(state["task_optimizer"])
        if self.meta_optimizer is not None:
            self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        for p, grad in zip(self.meta_parameters, state["meta_grad"]):
            p.grad = None if grad is None else grad.clone()
        self.episode = int(state["episode"])
