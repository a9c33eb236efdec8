"""Maze navigation (WarpGrad, Flennerhag et al. ICLR 2020; Miconi et al. 2018, 2019): :data:`MAZE`.

A recurrent agent must find a hidden goal in a grid maze, remember where it is and return to it
as often as it can within an episode of 200 steps (:mod:`warpgrad.tasks.rl`); each episode is a
new goal, so within-episode learning is what the agents must acquire across episodes.
Methods: ``warp-rnn`` (WarpGrad's agent: an RNN gated by a meta-learned LSTM warp), and the
papers' baselines ``rnn`` (L2RL), ``hebbian`` (plastic RNN) and ``backpropamine`` (neuromodulated
plasticity), all trained by A2C (:mod:`warpgrad.methods.rl.a2c`).

A profile's schedule counts episodes: ``meta_steps`` episodes of ``meta_batch`` mazes, a curve
point (``metrics.csv`` row) per ``eval_every`` episodes, a checkpoint per ``checkpoint_every``.
"""

from __future__ import annotations

from typing import Any

from warpgrad.experiments.base import MethodSpec, Profile, RLExperiment, _with

_A2C = {"gamma": 0.9, "value_coef": 0.1, "regulariser": "sum-p2", "regulariser_coef": 0.03, "value_baseline": "per-env"}

# The reference settings: WarpGrad's run.py for warp-rnn (Adam 1e-3 for θ and φ, φ every 30 episodes,
# no clipping), Miconi's maze runs for the baselines (Adam lr 1e-4, eps 1e-4, gradient norm clipped
# to 4); no updates in the first 101 episodes (the reference starts at episode 101).
_REFERENCE = {
    "warp-rnn": {"lr": 1e-3, "adam_eps": 1e-8, "clip": 0.0, "meta_lr": 1e-3, "meta_every": 30, "burn_in": 101},
    "rnn": {"lr": 1e-4, "adam_eps": 1e-4, "clip": 4.0, "burn_in": 101},
    "hebbian": {"lr": 1e-4, "adam_eps": 1e-4, "clip": 4.0, "burn_in": 101},
    "backpropamine": {"lr": 1e-4, "adam_eps": 1e-4, "clip": 4.0, "burn_in": 101},
}

_BASE: dict[str, Any] = {
    "size": 13,
    "episode_length": 200,
    "reward": 10.0,
    "wall_penalty": 0.0,
    "hidden_size": 100,
    "final_episodes": 1000,
    "threads": 1,
    "a2c": _A2C,
    **_REFERENCE,
}


def _schedule(episodes: int, batch: int, block: int, checkpoint_every: int) -> dict[str, int]:
    return {
        "meta_steps": episodes,
        "meta_batch": batch,
        "eval_every": block,
        "val_tasks": 0,
        "test_tasks": 0,
        "checkpoint_every": checkpoint_every,
    }


def _make_env(profile: Profile) -> Any:
    from warpgrad.tasks.rl import Maze

    o = profile.options
    return Maze(o["size"], profile.meta_batch, o["episode_length"], o["reward"], o["wall_penalty"])


def _agent(name: str):
    def build(profile: Profile):
        from warpgrad.methods.rl import AGENTS
        from warpgrad.tasks.rl import N_ACTIONS, OBSERVATION_SIZE

        return AGENTS[name](OBSERVATION_SIZE, N_ACTIONS, profile.options["hidden_size"])

    return build


_SMOKE = {"warp-rnn": {"meta_every": 2}}
_QUICK_LR = {"lr": 1e-3, "adam_eps": 1e-8, "clip": 4.0}

MAZE = RLExperiment(
    "maze",
    "Maze navigation (WarpGrad's RL setting; Miconi et al. 2018/2019): find a hidden goal, remember it, return; "
    "mean reward per episode over the last episodes.",
    {
        "smoke": Profile(
            "smoke",
            "seconds: a 7×7 maze, episodes of 20 steps, 4 mazes, hidden 16 (tests)",
            **_schedule(6, 4, 2, 3),
            options=_with(
                _BASE,
                size=7,
                episode_length=20,
                hidden_size=16,
                final_episodes=3,
                **{m: {**o, "burn_in": 0, **_SMOKE.get(m, {})} for m, o in _REFERENCE.items()},
            ),
        ),
        "quick": Profile(
            "quick",
            "about 2 hours per seed for the four methods on one CPU core: size 11, 30 mazes, 1,500 episodes; "
            "every method at Adam lr 1e-3, gradient norm clipped to 4 (3 seeds: --seeds 0-2)",
            **_schedule(1500, 30, 50, 250),
            options=_with(
                _BASE,
                size=11,
                final_episodes=300,
                **{m: {**o, **_QUICK_LR} for m, o in _REFERENCE.items()},
            ),
        ),
        "paper": Profile(
            "paper",
            "the papers' protocol: size 13, 30 mazes, 200,000 episodes, the reference optimiser settings "
            "(run 10 seeds: --seeds 0-9)",
            **_schedule(200_000, 30, 100, 1000),
            options=_with(_BASE),
        ),
    },
    make_family=lambda p: None,  # type: ignore[arg-type,return-value]
    methods={
        "warp-rnn": MethodSpec("Warp-RNN: an RNN gated by a meta-learned LSTM warp (WarpGrad)", _agent("warp-rnn")),
        "rnn": MethodSpec("plain RNN, learning to reinforcement learn (L2RL)", _agent("rnn")),
        "hebbian": MethodSpec("RNN with Hebbian plastic recurrent weights (Miconi et al. 2018)", _agent("hebbian")),
        "backpropamine": MethodSpec("RNN with neuromodulated plasticity (Backpropamine)", _agent("backpropamine")),
    },
    make_env=_make_env,
)
