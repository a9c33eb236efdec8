"""The plain recurrent agent: the "learning to reinforcement learn" baseline (L2RL).

Wang et al. (2016) and Duan et al. (2016) showed that a recurrent network trained by RL across
many tasks, with its previous reward and action among its inputs, learns in its activations to
solve a new task within an episode. The maze baselines of Miconi et al. (2018, 2019) use this
network:

    h_t = tanh(W_in x_t + b + W h_{t-1}),     logits, value = heads(h_t)

with W initialised to 0.01·U(0, 1) element-wise and W_in, b, the heads at torch's default.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from warpgrad.methods.rl.base import AgentState, RecurrentAgent


class RNNAgent(RecurrentAgent):
    def __init__(self, observation_size: int, n_actions: int, hidden_size: int = 100) -> None:
        super().__init__(observation_size, n_actions, hidden_size)
        self.input = nn.Linear(observation_size, hidden_size)
        self.recurrent = nn.Parameter(0.01 * torch.rand(hidden_size, hidden_size))

    def initial_state(self, batch: int) -> AgentState:
        return (self.zeros(batch, self.hidden_size),)

    def forward(self, x: Tensor, state: AgentState) -> tuple[Tensor, Tensor, AgentState]:
        (h,) = state
        h = torch.tanh(self.input(x) + h @ self.recurrent.T)
        logits, value = self.heads(h)
        return logits, value, (h,)
