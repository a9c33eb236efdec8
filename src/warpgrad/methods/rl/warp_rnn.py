"""Warp-RNN: the recurrent agent of WarpGrad's maze navigation (Flennerhag et al., ICLR 2020).

A task RNN (parameters θ) whose every matrix product is gated by a recurrent warp (parameters φ).
At step t, with input x_t and the RNN's previous state h_{t-1}:

    (z_t, c_t) = LSTMCell([x_t ; h_{t-1}], (z_{t-1}, c_{t-1}))              the warp (φ)
    [π_x, π_h, π_i, π_r, π_b] = tanh(V z_t)                                 V without bias (φ)
    h_t = tanh(π_i ⊙ W_ih(π_x ⊙ x_t) + π_r ⊙ W_hh(π_h ⊙ h_{t-1}) + π_b ⊙ b)  the task RNN (θ)
    logits, value = heads(h_t)                                              (θ)

The gates are tanh, so they can scale and flip the inputs of each product, its outputs and the
bias, depending on the data and the state within the episode. W_ih and W_hh start orthogonal, b
at zero; the warp's LSTM cell and V use torch's default initialisation.

One departure from the reference code (flennerhag/alstm's aRNN), which projects z to 517 values
of which the last 100 are never read: V here produces only the 417 gates used. The function and
the initial distribution of every used gate are the same; φ has 129,300 numbers instead of
139,300.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from warpgrad.methods.rl.base import AgentState, RecurrentAgent


class WarpRNN(RecurrentAgent):
    META = ("warp", "project")

    def __init__(self, observation_size: int, n_actions: int, hidden_size: int = 100, warp_size: int = 100) -> None:
        super().__init__(observation_size, n_actions, hidden_size)
        self.warp_size = warp_size
        self.warp = nn.LSTMCell(observation_size + hidden_size, warp_size)
        self.gate_sizes = [observation_size, hidden_size, hidden_size, hidden_size, hidden_size]
        self.project = nn.Linear(warp_size, sum(self.gate_sizes), bias=False)
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, observation_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        nn.init.orthogonal_(self.weight_ih)
        nn.init.orthogonal_(self.weight_hh)

    def initial_state(self, batch: int) -> AgentState:
        """(h, z, c): the RNN's and the warp's states, all zero."""
        return self.zeros(batch, self.hidden_size), self.zeros(batch, self.warp_size), self.zeros(batch, self.warp_size)

    def gates(self, x: Tensor, h: Tensor, z: Tensor, c: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """The warp's step: the five gates [π_x, π_h, π_i, π_r, π_b] and its new state (z, c)."""
        z, c = self.warp(torch.cat([x, h], dim=-1), (z, c))
        return list(torch.tanh(self.project(z)).split(self.gate_sizes, dim=-1)), z, c

    def forward(self, x: Tensor, state: AgentState) -> tuple[Tensor, Tensor, AgentState]:
        h, z, c = state
        (pi_x, pi_h, pi_i, pi_r, pi_b), z, c = self.gates(x, h, z, c)
        h = torch.tanh(
            pi_i * ((pi_x * x) @ self.weight_ih.T) + pi_r * ((pi_h * h) @ self.weight_hh.T) + pi_b * self.bias
        )
        logits, value = self.heads(h)
        return logits, value, (h, z, c)
