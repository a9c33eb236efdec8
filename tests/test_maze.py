"""The grid maze of Miconi et al. (warpgrad.tasks.rl): layout, dynamics, observations, baselines, gym wrapper."""

import math
import subprocess
import sys

import pytest
import torch

from warpgrad.errors import UsageError
from warpgrad.tasks.rl import N_ACTIONS, OBSERVATION_SIZE, Maze, maze_layout, oracle_reward, random_policy_reward


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def started(size=13, batch=1, **kwargs):
    maze = Maze(size, batch=batch, **kwargs)
    maze.reset(gen())
    return maze


def put(maze, position, goal):
    maze.position = torch.tensor(position).reshape(-1, 2)
    maze.goal = torch.tensor(goal).reshape(-1, 2)


# --- layout ---


def test_layout_by_hand():
    assert maze_layout(5).int().tolist() == [
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 1],
        [1, 0, 0, 0, 1],  # (2, 2) would be a pillar but is the centre
        [1, 0, 0, 0, 1],
        [1, 1, 1, 1, 1],
    ]
    assert maze_layout(7).int().tolist() == [
        [1, 1, 1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0, 0, 1],
        [1, 0, 1, 0, 1, 0, 1],
        [1, 0, 0, 0, 0, 0, 1],
        [1, 0, 1, 0, 1, 0, 1],
        [1, 0, 0, 0, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 1],
    ]


def test_layout_13_centre_free_and_counts():
    layout = maze_layout(13)
    assert layout.shape == (13, 13) and layout.dtype == torch.bool
    assert not layout[6, 6]  # an even/even cell, freed because it is the centre
    assert layout[4, 4] and layout[6, 4] and layout[8, 8]
    assert (~layout).sum() == 11 * 11 - 5 * 5 + 1
    maze = Maze(13)
    assert maze.centre.tolist() == [6, 6]
    assert maze.free_cells.shape == (97, 2)
    assert maze.free_cells[:3].tolist() == [[1, 1], [1, 2], [1, 3]]  # row-major
    assert maze.free_cells[-1].tolist() == [11, 11]


@pytest.mark.parametrize("size", [4, 3, 12, 1, -5, 7.0, True])
def test_layout_rejects_bad_sizes(size):
    with pytest.raises(UsageError, match=r"odd integer >= 5.*" + str(size)):
        maze_layout(size)
    with pytest.raises(UsageError):
        Maze(size)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"batch": 0}, "batch"),
        ({"episode_length": 0}, "episode_length"),
        ({"reward": math.nan}, "reward"),
        ({"reward": math.inf}, "reward"),
        ({"wall_penalty": -0.1}, "wall_penalty"),
        ({"wall_penalty": math.inf}, "wall_penalty"),
    ],
)
def test_maze_rejects_bad_arguments(kwargs, words):
    with pytest.raises(UsageError, match=words):
        Maze(**kwargs)


# --- walls, moves ---


@pytest.mark.parametrize("wall_penalty", [0.0, 0.05])
def test_walls_and_pillars_block(wall_penalty):
    maze = started(size=7, batch=4, wall_penalty=wall_penalty)
    put(maze, [[1, 2], [1, 1], [3, 2], [3, 3]], [[5, 5]] * 4)
    # down into pillar (2,2); up into the border; up into pillar (2,2); right into free (3,4)
    _, reward = maze.step(torch.tensor([1, 0, 0, 3]), gen())
    assert maze.position.tolist() == [[1, 2], [1, 1], [3, 2], [3, 4]]
    assert reward.tolist() == pytest.approx([-wall_penalty] * 3 + [0.0])
    assert reward.dtype == torch.float32


def test_moves_by_the_action_offset():
    maze = started(size=7, batch=4)
    put(maze, [[3, 3]] * 4, [[1, 1]] * 4)
    _, reward = maze.step(torch.tensor([0, 1, 2, 3]), gen())
    assert maze.position.tolist() == [[2, 3], [4, 3], [3, 2], [3, 4]]
    assert reward.tolist() == [0.0] * 4


def test_step_validation():
    maze = Maze(7, batch=2, episode_length=2)
    with pytest.raises(UsageError, match="reset"):
        maze.step(torch.tensor([0, 0]), gen())
    maze.reset(gen())
    for bad in (torch.tensor([0, 4]), torch.tensor([-1, 0]), torch.tensor([0]), torch.tensor([[0, 0]]), [0, 0]):
        with pytest.raises(UsageError, match="maze actions"):
            maze.step(bad, gen())
    with pytest.raises(UsageError, match="maze actions"):
        maze.step(torch.tensor([0.0, 1.0]), gen())
    assert maze.t == 0  # refused steps change nothing
    maze.step(torch.tensor([0, 1]), gen())
    assert not maze.done
    maze.step(torch.tensor([0, 1]), gen())
    assert maze.done
    with pytest.raises(UsageError, match="episode over.*reset first"):
        maze.step(torch.tensor([0, 1]), gen())


# --- goals and teleports ---


def test_goal_pays_and_teleports_uniformly():
    batch = 20000
    maze = started(size=13, batch=batch)
    put(maze, [[1, 2]] * batch, [[1, 1]] * batch)  # the goal is free cell 0, one step left
    _, reward = maze.step(torch.full((batch,), 2), gen(1))
    assert (reward == 10.0).all()
    assert not maze.layout[maze.position[:, 0], maze.position[:, 1]].any()
    index = maze.cell_index[maze.position[:, 0], maze.position[:, 1]]
    assert (index != 0).all()  # never the goal
    counts = torch.bincount(index, minlength=97)
    expected = batch / 96
    assert counts[0] == 0 and ((counts[1:] - expected).abs() < 0.5 * expected).all(), counts


def test_teleports_avoid_any_goal():
    batch = 4000
    maze = started(size=13, batch=batch)
    goal = maze.goal.clone()
    row, col = goal[:, 0], goal[:, 1]
    # a free neighbour of each goal: on odd rows left (right on column 1), on even rows the cell above
    odd = row % 2 == 1
    start_col = torch.where(col > 1, col - 1, col + 1)
    start = torch.stack([torch.where(odd, row, row - 1), torch.where(odd, start_col, col)], dim=1)
    action = torch.where(odd, torch.where(col > 1, 3, 2), 1)
    maze.position = start.clone()
    assert not maze.layout[start[:, 0], start[:, 1]].any()
    _, reward = maze.step(action, gen(2))
    assert (reward == 10.0).all()
    assert not maze.layout[maze.position[:, 0], maze.position[:, 1]].any()
    assert not (maze.position == goal).all(dim=1).any()
    assert (maze.goal == goal).all()  # the goal stays for the episode


@pytest.mark.parametrize("size, n_goals", [(5, 8), (13, 96)])
def test_goals_never_centre_or_wall(size, n_goals):
    maze = Maze(size, batch=5000)
    maze.reset(gen(3))
    goal = maze.goal
    assert not maze.layout[goal[:, 0], goal[:, 1]].any()
    assert not (goal == maze.centre).all(dim=1).any()
    assert len(torch.unique(goal, dim=0)) == n_goals  # every other free cell is used
    assert (maze.position == maze.centre).all()
    assert maze.t == 0 and (maze.last_reward == 0).all() and (maze.last_action == 0).all()


# --- observations ---


def test_observation_at_reset_by_hand():
    maze = Maze(11, batch=2)
    obs = maze.reset(gen())
    # centre (5, 5): the four diagonal cells are pillars
    expected = [1, 0, 1, 0, 0, 0, 1, 0, 1] + [0, 1, 0, 0] + [1, 0, 0, 0]
    assert obs.shape == (2, OBSERVATION_SIZE) and obs.dtype == torch.float32
    assert obs.tolist() == [expected, expected]
    assert Maze(13, batch=1).reset(gen())[0, :9].tolist() == [0.0] * 9  # centre of 13 is open all round


def test_observation_after_steps_by_hand():
    maze = started(size=13, batch=2, wall_penalty=0.05)
    put(maze, [[1, 2], [1, 1]], [[9, 9], [9, 9]])
    obs, _ = maze.step(torch.tensor([3, 0]), gen())  # 0 moves to (1, 3); 1 bumps the border at (1, 1)
    assert maze.position.tolist() == [[1, 3], [1, 1]]
    expected = [
        [1, 1, 1, 0, 0, 0, 1, 0, 1] + [0, 1, 1 / 200, 0] + [0, 0, 0, 1],
        [1, 1, 1, 1, 0, 0, 1, 0, 1] + [0, 1, 1 / 200, -0.05] + [1, 0, 0, 0],
    ]
    torch.testing.assert_close(obs, torch.tensor(expected))
    obs, _ = maze.step(torch.tensor([2, 1]), gen())  # 0 back to (1, 2), above pillar (2, 2); 1 to (2, 1)
    expected = [
        [1, 1, 1, 0, 0, 0, 0, 1, 0] + [0, 1, 2 / 200, 0] + [0, 0, 1, 0],
        [1, 0, 0, 1, 0, 1, 1, 0, 0] + [0, 1, 2 / 200, 0] + [0, 1, 0, 0],
    ]
    torch.testing.assert_close(obs, torch.tensor(expected))
    assert torch.equal(obs, maze.observation())
    put(maze, [[9, 8], [9, 8]], [[9, 9], [9, 9]])
    obs, _ = maze.step(torch.tensor([3, 3]), gen())
    assert obs[:, 12].tolist() == [10.0, 10.0] and obs[:, 16].tolist() == [1.0, 1.0]


# --- seeding ---


def rollout(seed, steps=50):
    maze = Maze(13, batch=30)
    generator, policy = gen(seed), gen(seed + 1000)
    observations, rewards = [maze.reset(generator)], []
    for _ in range(steps):
        obs, reward = maze.step(torch.randint(N_ACTIONS, (30,), generator=policy), generator)
        observations.append(obs)
        rewards.append(reward)
    return maze.goal.clone(), torch.stack(observations), torch.stack(rewards)


def test_seeding():
    first, again, other = rollout(0), rollout(0), rollout(1)
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], other[0])


# --- distances and baselines ---


def test_distances_by_hand():
    maze = Maze(7)
    distance = maze.distances()
    index = maze.cell_index
    assert distance[index[1, 1], index[5, 5]] == 8
    assert distance[index[1, 2], index[3, 2]] == 4  # around the pillar at (2, 2)
    assert distance[index[3, 3], index[3, 3]] == 0
    assert torch.equal(distance, distance.T) and (distance >= 0).all()


def test_random_and_oracle_baselines():
    n = 400
    random = random_policy_reward(11, n, gen(4))
    assert random.shape == (n,)
    # simulated: 7.7 +- 9.4 reward per episode at size 11
    assert abs(random.mean().item() - 7.7) < 4 * 9.4 / math.sqrt(n) + 0.5
    assert ((random % 10) == 0).all()  # only goal rewards without a wall penalty
    oracle = oracle_reward(11, 100, gen(5))
    assert oracle.mean() > 200 and oracle.mean() > 20 * random.mean()
    longest = Maze(11).distances().max().item()
    assert longest == 16  # corner to corner
    assert oracle.min() >= 10 * (200 // longest)  # every goal is at most `longest` steps away


def test_package_does_not_import_gymnasium():
    code = "import sys, warpgrad.tasks.rl; assert 'gymnasium' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- gymnasium wrapper ---


def test_gym_check_env():
    pytest.importorskip("gymnasium")
    from gymnasium.utils.env_checker import check_env

    from warpgrad.tasks.rl.gym import MazeEnv

    check_env(MazeEnv(size=11), skip_render_check=True)
    check_env(MazeEnv(size=7, wall_penalty=0.05, reward=-3.0), skip_render_check=True)


def test_gym_seeded_reset_reproduces():
    pytest.importorskip("gymnasium")
    import numpy as np

    from warpgrad.tasks.rl.gym import MazeEnv

    env = MazeEnv(size=11)

    def run():
        obs, info = env.reset(seed=3)
        trace = [obs, info["goal"], info["position"]]
        for step in range(60):
            obs, reward, terminated, truncated, info = env.step(step % 4)
            trace += [obs, np.array([reward]), info["position"]]
        return trace

    first, second = run(), run()
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert first[0].dtype == np.float32 and first[0].shape == (17,)


def test_gym_make_and_truncation():
    gymnasium = pytest.importorskip("gymnasium")
    from warpgrad.tasks.rl.gym import register_maze

    register_maze()
    register_maze()  # idempotent
    env = gymnasium.make("warpgrad/Maze-v0", size=11, episode_length=5)
    assert env.unwrapped.maze.size == 11
    env.reset(seed=0)
    flags = [env.step(0)[2:4] for _ in range(5)]
    assert flags == [(False, False)] * 4 + [(False, True)]
