"""The point-mass navigation tasks of ES-MAML, vectorised in torch.

ES-MAML (Song, Gao, Yang, Choromanski, Pacchiano, Tang, "ES-MAML: Simple Hessian-Free Meta
Learning", ICLR 2020, arXiv:1910.01215) meta-trains deterministic policies on two cheap task
families where a point in the plane must reach a goal it cannot see; only the rewards reveal it.

One rollout of a policy π on a task with goal g, for t = 1..horizon (default 100):

    1. a_t = clip(π(p_{t−1}), −0.1, 0.1) per coordinate              (p_0 = 0)
    2. p_t = p_{t−1} + a_t, clipped to the box [−bound, bound]² if the task has a bound
    3. r_t = reward(p_t, g)
    4. return += alive_t · r_t, where alive_t = 0 once an earlier step reached the goal

The goal is reached when ‖p_t − g‖² ≤ 0.01 (within 0.1 of it); the episode ends after that
step, so its reward counts and every later one counts as 0. ``alive`` is a mask, not a
``break``: a rollout has no data-dependent Python control flow and runs under ``torch.func.vmap``
over stacked policy parameters.

- :class:`Navigation2D`: g ~ U[−1, 1]², dense reward r = −‖p − g‖², no bound. The goal-reached
  rule is then exactly r ≥ −0.01.
- :class:`FourCorners`: g uniform over the four corners (±2, ±2), positions bounded to [−5, 5]²,
  sparse reward r = max(0, 4 − ‖p − g‖²) − 4 = −min(‖p − g‖², 4): a flat −4 everywhere farther
  than 2 from the goal (every corner is 2√2 from the start, so no goal is visible there), rising to
  0 at the goal. It is the dense reward clipped at −4, so the goal-reached rule is again r ≥ −0.01.

Policies are deterministic, given as parameter dicts: linear, a = W·[p; 1] (``{"weight": (2, 3)}``),
or, with ``hidden`` units, a tanh MLP ``{"w1": (h, 2), "b1": (h,), "w2": (2, h), "b2": (2,)}``.
Every random number (goals, initial MLP weights) comes from a ``torch.Generator`` the caller passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from warpgrad.core.tree import Params
from warpgrad.errors import UsageError

__all__ = [
    "ACTION_LIMIT",
    "GOAL_RADIUS_SQ",
    "PointTask",
    "Navigation2D",
    "FourCorners",
    "policy_action",
    "rollout_return",
    "returns",
]

ACTION_LIMIT = 0.1
GOAL_RADIUS_SQ = 0.01  # the episode ends once ‖p − g‖² ≤ this
REWARDS = ("dense", "sparse")
_LINEAR_KEYS = ("weight",)
_MLP_KEYS = ("w1", "b1", "w2", "b2")


@dataclass(frozen=True, eq=False)
class PointTask:
    """One navigation task.

    Attributes:
        goal: the goal, a tensor of shape (2,).
        reward_kind: ``dense`` (−‖p − g‖²) or ``sparse`` (−min(‖p − g‖², 4)).
        bound: positions are clipped to [−bound, bound]²; None for no bound.
        horizon: the default number of steps of a rollout.
    """

    goal: Tensor
    reward_kind: str = "dense"
    bound: float | None = None
    horizon: int = 100

    def reward(self, position: Tensor) -> Tensor:
        """The reward at ``position`` (shape (..., 2)), one per position."""
        distance_sq = (position - self.goal).pow(2).sum(-1)
        if self.reward_kind == "sparse":
            return distance_sq.clamp(max=4.0).neg()
        return distance_sq.neg()

    def rollout_return(self, params: Params, horizon: int | None = None) -> Tensor:
        """The total reward of one deterministic rollout of the policy ``params``: see :func:`rollout_return`."""
        return rollout_return(params, self, horizon)


class _PointMassFamily:
    """Sampling goals and making policies; the subclasses say how a goal is drawn."""

    reward_kind = "dense"
    bound: float | None = None
    metric_name = "return"
    lower_is_better = False

    def __init__(self, horizon: int = 100, hidden: int | None = None) -> None:
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise UsageError(f"horizon must be an integer >= 1, got {horizon!r}")
        if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1):
            raise UsageError(f"hidden must be None (a linear policy) or an integer >= 1, got {hidden!r}")
        self.horizon = horizon
        self.hidden = hidden

    def sample(self, generator: torch.Generator) -> PointTask:
        """A task with a goal drawn from ``generator``."""
        _check_generator(generator)
        return PointTask(self._draw_goal(generator), self.reward_kind, self.bound, self.horizon)

    def _draw_goal(self, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def init_params(self, generator: torch.Generator | None = None) -> Params:
        """Initial policy parameters: a zero linear policy (it stands still), or an MLP with
        weights ~ U(±1/√fan_in) from ``generator`` and a zero output layer (it also stands still)."""
        if self.hidden is None:
            return {"weight": torch.zeros(2, 3)}
        _check_generator(generator)
        h = self.hidden
        scale = 2.0**-0.5
        return {
            "w1": (torch.rand(h, 2, generator=generator) * 2 - 1) * scale,
            "b1": (torch.rand(h, generator=generator) * 2 - 1) * scale,
            "w2": torch.zeros(2, h),
            "b2": torch.zeros(2),
        }


class Navigation2D(_PointMassFamily):
    """Goals uniform on [−1, 1]², dense reward −‖p − g‖², unbounded positions."""

    def _draw_goal(self, generator: torch.Generator) -> Tensor:
        return torch.rand(2, generator=generator) * 2 - 1


class FourCorners(_PointMassFamily):
    """Goals uniform over (±2, ±2), sparse reward −min(‖p − g‖², 4), positions in [−5, 5]²."""

    reward_kind = "sparse"
    bound = 5.0

    def _draw_goal(self, generator: torch.Generator) -> Tensor:
        corner = int(torch.randint(4, (), generator=generator))
        return torch.tensor([2.0 if corner & 1 else -2.0, 2.0 if corner & 2 else -2.0])


def policy_action(params: Params, position: Tensor) -> Tensor:
    """The policy's action at ``position`` before clipping: linear if ``params`` has ``weight``,
    a tanh MLP if it has ``w1, b1, w2, b2``."""
    if set(params) == set(_LINEAR_KEYS):
        weight = params["weight"]
        return weight[:, :2] @ position + weight[:, 2]
    if set(params) == set(_MLP_KEYS):
        hidden = torch.tanh(params["w1"] @ position + params["b1"])
        return params["w2"] @ hidden + params["b2"]
    raise UsageError(
        f"policy parameters must have the keys {list(_LINEAR_KEYS)} (linear) or {list(_MLP_KEYS)} (MLP), "
        f"got {sorted(params)}"
    )


def rollout_return(params: Params, task: PointTask, horizon: int | None = None) -> Tensor:
    """The total reward (a scalar) of one deterministic rollout of the policy ``params`` on ``task``
    for ``horizon`` steps (the task's own by default), in the order of the module docstring."""
    if not isinstance(task, PointTask):
        raise UsageError(f"task must be a PointTask, got {type(task).__name__}")
    steps = task.horizon if horizon is None else horizon
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UsageError(f"horizon must be an integer >= 1, got {horizon!r}")
    first = next(iter(params.values()))
    position = torch.zeros(2, dtype=first.dtype, device=first.device)
    alive = torch.ones((), dtype=first.dtype, device=first.device)
    total = torch.zeros((), dtype=first.dtype, device=first.device)
    for _ in range(steps):
        action = policy_action(params, position).clamp(-ACTION_LIMIT, ACTION_LIMIT)
        position = position + action
        if task.bound is not None:
            position = position.clamp(-task.bound, task.bound)
        reward = task.reward(position)
        total = total + alive * reward
        reached = (position - task.goal).pow(2).sum() <= GOAL_RADIUS_SQ
        alive = alive * (~reached).to(alive.dtype)
    return total


def returns(stacked_params: Params, task: PointTask, horizon: int | None = None) -> Tensor:
    """:func:`rollout_return` of each of the stacked policies (leading dimension n), shape (n,)."""
    return torch.func.vmap(lambda params: rollout_return(params, task, horizon))(stacked_params)


def _check_generator(generator: object) -> None:
    if not isinstance(generator, torch.Generator):
        raise UsageError(f"generator must be a torch.Generator (seeded by the caller), got {type(generator).__name__}")
