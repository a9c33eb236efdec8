"""Reinforcement-learning tasks: the grid maze of Miconi et al. (the WarpGrad maze-navigation experiment)."""

from warpgrad.tasks.rl.maze import N_ACTIONS, OBSERVATION_SIZE, Maze, maze_layout, oracle_reward, random_policy_reward

__all__ = ["Maze", "maze_layout", "OBSERVATION_SIZE", "N_ACTIONS", "random_policy_reward", "oracle_reward"]
