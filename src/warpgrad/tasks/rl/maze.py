"""The grid maze of Miconi et al., vectorised over a batch of mazes in torch.

The maze is the navigation task of Miconi, Clune & Stanley, "Differentiable plasticity"
(ICML 2018, §4.5) and Miconi et al., "Backpropamine" (ICLR 2019, §4.2), used by WarpGrad
(Flennerhag et al., ICLR 2020) for its maze-navigation experiment. A square grid has walls on the
border and a pillar on every interior cell whose row and column are both even; the centre is
always free. Each episode hides a goal on a free cell other than the centre. The agent starts at
the centre and sees only the 3x3 patch of walls around itself, plus the time, its last reward and
its last action. Stepping onto the goal pays ``reward`` and teleports the agent to a random free
cell (never the goal), so within an episode the agent should learn where the goal is and go
back to it as fast as it can.

Observation (17 floats): ``[0:9]`` the 3x3 wall patch around the agent (1 = wall), row-major;
``[9]`` always 0 (a slot kept so the layout matches the reference code); ``[10]`` bias 1;
``[11]`` t / episode_length; ``[12]`` last reward; ``[13:17]`` one-hot of the last action
(action 0 before the first step). Actions: 0 up, 1 down, 2 left, 3 right.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from warpgrad.errors import UsageError

OBSERVATION_SIZE = 17
N_ACTIONS = 4
ACTION_OFFSETS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right as (row, col) steps


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def maze_layout(size: int) -> Tensor:
    """The walls of a ``size`` x ``size`` maze (True = wall): border, pillars at even (row, col), free centre."""
    if not _is_int(size) or size < 5 or size % 2 == 0:
        raise UsageError(f"maze size must be an odd integer >= 5, got {size!r}")
    index = torch.arange(size)
    even = index % 2 == 0
    layout = even[:, None] & even[None, :]
    layout[0, :] = layout[-1, :] = layout[:, 0] = layout[:, -1] = True
    layout[size // 2, size // 2] = False
    return layout


class Maze:
    """A batch of ``batch`` independent mazes of the same layout, each with its own goal.

    Args:
        size: side of the grid, border included (odd, >= 5; 13 gives an 11 x 11 interior).
        batch: number of mazes stepped together.
        episode_length: steps per episode; :meth:`step` refuses to go past it.
        reward: paid for stepping onto the goal.
        wall_penalty: paid (as ``-wall_penalty``) for bumping into a wall.
    """

    def __init__(
        self,
        size: int = 13,
        batch: int = 30,
        episode_length: int = 200,
        reward: float = 10.0,
        wall_penalty: float = 0.0,
    ):
        self.layout = maze_layout(size)
        if not _is_int(batch) or batch < 1:
            raise UsageError(f"maze batch must be an integer >= 1, got {batch!r}")
        if not _is_int(episode_length) or episode_length < 1:
            raise UsageError(f"maze episode_length must be an integer >= 1, got {episode_length!r}")
        if not isinstance(reward, (int, float)) or isinstance(reward, bool) or not math.isfinite(reward):
            raise UsageError(f"maze reward must be a finite number, got {reward!r}")
        if (
            not isinstance(wall_penalty, (int, float))
            or isinstance(wall_penalty, bool)
            or not math.isfinite(wall_penalty)
            or wall_penalty < 0
        ):
            raise UsageError(f"maze wall_penalty must be a finite number >= 0, got {wall_penalty!r}")
        self.size, self.batch, self.episode_length = size, batch, episode_length
        self.reward, self.wall_penalty = float(reward), float(wall_penalty)
        device = self.layout.device
        self.centre = torch.tensor([size // 2, size // 2], device=device)
        self.free_cells = (~self.layout).nonzero()  # (n, 2), row-major
        # cell_index[r, c]: the row of (r, c) in free_cells, -1 on walls
        self.cell_index = torch.full((size, size), -1, dtype=torch.long, device=device)
        rows, cols = self.free_cells.unbind(dim=1)
        self.cell_index[rows, cols] = torch.arange(len(self.free_cells), device=device)
        self.goal_cells = self.free_cells[(self.free_cells != self.centre).any(dim=1)]
        self._offsets = torch.tensor(ACTION_OFFSETS, device=device)
        patch = torch.arange(-1, 2, device=device)
        self._patch_rows = patch.repeat_interleave(3)  # -1 -1 -1 0 0 0 1 1 1
        self._patch_cols = patch.repeat(3)  # -1 0 1 -1 0 1 -1 0 1
        rows, cols = self.free_cells[:, :1] + self._patch_rows, self.free_cells[:, 1:] + self._patch_cols
        self._patches = self.layout[rows, cols].float()  # (n, 9): the 3 x 3 wall patch around each free cell
        self._next_cell = self.neighbours()
        self._unused_and_bias = torch.tensor([[0.0, 1.0]], device=device).expand(batch, 2)
        self._one_hot = torch.eye(N_ACTIONS, device=device)
        self.position: Tensor | None = None
        self.goal: Tensor | None = None
        self.t = 0
        self.last_reward = torch.zeros(batch, dtype=torch.float32, device=device)
        self.last_action = torch.zeros(batch, dtype=torch.long, device=device)

    @property
    def n_free(self) -> int:
        return len(self.free_cells)

    @property
    def done(self) -> bool:
        return self.t >= self.episode_length

    def reset(self, generator: torch.Generator) -> Tensor:
        """Start new episodes: a fresh goal per maze (uniform over free cells but the centre), agent at the centre."""
        device = self.layout.device
        pick = torch.randint(len(self.goal_cells), (self.batch,), generator=generator, device=device)
        self.goal = self.goal_cells[pick]
        self.position = self.centre.expand(self.batch, 2).clone()
        self.t = 0
        self.last_reward = torch.zeros(self.batch, dtype=torch.float32, device=device)
        self.last_action = torch.zeros(self.batch, dtype=torch.long, device=device)
        return self.observation()

    def step(self, actions: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Move every agent by its action; returns (observation (B, 17), reward (B,))."""
        if self.position is None or self.goal is None:
            raise UsageError("maze not started: call reset first")
        if self.done:
            raise UsageError(f"episode over after {self.episode_length} steps: reset first")
        if not isinstance(actions, Tensor) or actions.shape != (self.batch,) or actions.is_floating_point():
            shape = tuple(actions.shape) if isinstance(actions, Tensor) else type(actions).__name__
            raise UsageError(f"maze actions must be an integer tensor of shape ({self.batch},), got {shape}")
        if ((actions < 0) | (actions >= N_ACTIONS)).any():
            raise UsageError(f"maze actions must be in 0..{N_ACTIONS - 1}, got {actions.tolist()}")
        actions = actions.long()
        cell = self.cell_index[self.position[:, 0], self.position[:, 1]]
        goal = self.cell_index[self.goal[:, 0], self.goal[:, 1]]
        moved = self._next_cell[cell, actions]  # the cell itself where the action hits a wall
        bumped = moved == cell
        on_goal = moved == goal
        reward = self.reward * on_goal.float() - self.wall_penalty * bumped.float()
        # teleport: uniform over the free cells other than the goal (draw among n - 1, skip the goal's index)
        draw = torch.randint(self.n_free - 1, (self.batch,), generator=generator, device=self.layout.device)
        draw = draw + (draw >= goal).long()
        self.position = self.free_cells[torch.where(on_goal, draw, moved)]
        self.t += 1
        self.last_reward = reward
        self.last_action = actions
        return self.observation(), reward

    def observation(self) -> Tensor:
        """The (B, 17) float32 observation of the current state (layout in the module docstring)."""
        if self.position is None:
            raise UsageError("maze not started: call reset first")
        cell = self.cell_index[self.position[:, 0], self.position[:, 1]]
        time = torch.full((self.batch, 1), self.t / self.episode_length, device=self.layout.device)
        parts = [
            self._patches[cell],
            self._unused_and_bias,
            time,
            self.last_reward[:, None],
            self._one_hot[self.last_action],
        ]
        return torch.cat(parts, dim=1)

    def neighbours(self) -> Tensor:
        """(n, 4) long: the free-cell index each action leads to from each free cell (itself if a wall)."""
        target = self.free_cells[:, None, :] + self._offsets[None, :, :]
        index = self.cell_index[target[..., 0], target[..., 1]]
        return torch.where(index < 0, torch.arange(self.n_free, device=index.device)[:, None], index)

    def distances(self) -> Tensor:
        """(n, n) long: shortest-path steps between free cells (breadth-first, all sources at once)."""
        neighbours = self.neighbours()
        n = self.n_free
        reached = torch.eye(n, dtype=torch.bool, device=neighbours.device)
        distance = torch.where(reached, 0, -1)
        for steps in range(1, n):
            grown = reached | reached[:, neighbours].any(dim=2)  # j is reached if a neighbour of j was
            if torch.equal(grown, reached):
                break
            distance[grown & ~reached] = steps
            reached = grown
        return distance


def random_policy_reward(size: int, episodes: int, generator: torch.Generator, episode_length: int = 200) -> Tensor:
    """Total reward per episode of a uniformly random policy, (episodes,), run as one batch of mazes."""
    maze = Maze(size, batch=episodes, episode_length=episode_length)
    maze.reset(generator)
    total = torch.zeros(episodes, dtype=torch.float32)
    while not maze.done:
        actions = torch.randint(N_ACTIONS, (episodes,), generator=generator, device=maze.layout.device)
        total += maze.step(actions, generator)[1]
    return total


def oracle_reward(size: int, episodes: int, generator: torch.Generator, episode_length: int = 200) -> Tensor:
    """Total reward per episode of a policy that knows the goal and walks a shortest path to it.

    At each step it takes an action that brings it one step closer (the lowest-numbered one on ties).
    """
    maze = Maze(size, batch=episodes, episode_length=episode_length)
    maze.reset(generator)
    distance, neighbours = maze.distances(), maze.neighbours()
    goal = maze.cell_index[maze.goal[:, 0], maze.goal[:, 1]]
    total = torch.zeros(episodes, dtype=torch.float32)
    while not maze.done:
        here = maze.cell_index[maze.position[:, 0], maze.position[:, 1]]
        after = distance[neighbours[here], goal[:, None]]  # (B, 4): distance to the goal after each action
        total += maze.step(after.argmin(dim=1), generator)[1]  # argmin returns the first minimum
    return total
