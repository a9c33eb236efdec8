"""A gymnasium wrapper around one :class:`~warpgrad.tasks.rl.maze.Maze` (needs the ``rl`` extra).

Use :class:`MazeEnv` directly, or call :func:`register_maze` once and then
``gymnasium.make("warpgrad/Maze-v0", size=11)``.

Randomness comes from a ``torch.Generator`` seeded by ``reset(seed=...)``; a first reset without a
seed draws the generator's seed from gymnasium's ``np_random``, so it follows gymnasium's seeding.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

from warpgrad.tasks.rl.maze import N_ACTIONS, OBSERVATION_SIZE, Maze

MAZE_ID = "warpgrad/Maze-v0"


class MazeEnv(gymnasium.Env):
    """One maze (batch 1). Episodes end by truncation after ``episode_length`` steps; never terminated."""

    metadata = {"render_modes": []}

    def __init__(self, size: int = 13, episode_length: int = 200, reward: float = 10.0, wall_penalty: float = 0.0):
        self.maze = Maze(size, batch=1, episode_length=episode_length, reward=reward, wall_penalty=wall_penalty)
        # every slot lies in [0, 1] but the last reward, which is one of 0, -wall_penalty, reward and
        # reward - wall_penalty; the margin absorbs float32 rounding
        rewards = (0.0, -float(wall_penalty), float(reward), float(reward) - float(wall_penalty))
        margin = 1e-4 * (1.0 + max(abs(r) for r in rewards))
        low = np.zeros(OBSERVATION_SIZE, dtype=np.float32)
        high = np.ones(OBSERVATION_SIZE, dtype=np.float32)
        low[12], high[12] = min(rewards) - margin, max(rewards) + margin
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Discrete(N_ACTIONS)
        self._generator: torch.Generator | None = None

    def _info(self) -> dict:
        return {"goal": self.maze.goal[0].numpy().copy(), "position": self.maze.position[0].numpy().copy()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._generator = torch.Generator().manual_seed(int(seed))
        elif self._generator is None:
            self._generator = torch.Generator().manual_seed(int(self.np_random.integers(0, 2**63 - 1)))
        obs = self.maze.reset(self._generator)
        return obs[0].numpy(), self._info()

    def step(self, action):
        if self._generator is None:
            raise gymnasium.error.ResetNeeded("call reset before step")
        obs, reward = self.maze.step(torch.tensor([int(action)]), self._generator)
        return obs[0].numpy(), float(reward[0]), False, self.maze.done, self._info()


def register_maze() -> None:
    """Register ``warpgrad/Maze-v0`` with gymnasium (does nothing if it is registered already)."""
    if MAZE_ID not in gymnasium.registry:
        gymnasium.register(id=MAZE_ID, entry_point="warpgrad.tasks.rl.gym:MazeEnv")
