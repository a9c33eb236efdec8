"""Recurrent agents for reinforcement learning in the maze (:mod:`warpgrad.tasks.rl`) and the A2C
that trains them on two timescales: Warp-RNN (WarpGrad's RL agent) and its baselines."""

from warpgrad.methods.rl.a2c import A2C, A2CLoss, A2CUpdates, Rollout, a2c_loss, discounted_returns, run_episode
from warpgrad.methods.rl.backpropamine import Backpropamine
from warpgrad.methods.rl.base import RecurrentAgent, is_meta, partition
from warpgrad.methods.rl.hebbian import HebbianRNN
from warpgrad.methods.rl.rnn import RNNAgent
from warpgrad.methods.rl.warp_rnn import WarpRNN

#: the maze experiment's methods: name -> agent class
AGENTS = {"warp-rnn": WarpRNN, "rnn": RNNAgent, "hebbian": HebbianRNN, "backpropamine": Backpropamine}

__all__ = [
    "A2C",
    "AGENTS",
    "A2CLoss",
    "A2CUpdates",
    "Backpropamine",
    "HebbianRNN",
    "RNNAgent",
    "RecurrentAgent",
    "Rollout",
    "WarpRNN",
    "a2c_loss",
    "discounted_returns",
    "is_meta",
    "partition",
    "run_episode",
]
