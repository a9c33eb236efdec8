"""The Hebbian plastic recurrent agent of the maze baselines (Miconi, Clune & Stanley, ICML 2018).

Each recurrent connection has a fixed weight W and a plastic one α ⊙ Hebb, where the Hebbian
trace Hebb (one per episode and environment, zero at the episode's start) grows with the product
of post- and pre-synaptic activity and is clamped to [-1, 1]:

    h_t    = tanh(W_in x_t + b + (W + α ⊙ Hebb_{t-1}) h_{t-1})
    Hebb_t = clamp(Hebb_{t-1} + m_t · h_t h_{t-1}ᵀ, -1, 1)

For this agent the rate m_t = η is one learned scalar (initialised to 0.01); W and α start at
0.01·U(0, 1). The trace is additive and hard-clamped, with no decay: the maze baseline of the
papers, not the decaying trace of DHP (:mod:`warpgrad.methods.continual.dhp`). η, α, W and the rest
are learned by gradient across episodes; the trace is what changes within one.

:class:`~warpgrad.methods.rl.backpropamine.Backpropamine` replaces η by a rate the network
computes at every step (:meth:`HebbianRNN.rate`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from warpgrad.methods.rl.base import AgentState, RecurrentAgent


class HebbianRNN(RecurrentAgent):
    def __init__(self, observation_size: int, n_actions: int, hidden_size: int = 100) -> None:
        super().__init__(observation_size, n_actions, hidden_size)
        self.input = nn.Linear(observation_size, hidden_size)
        self.recurrent = nn.Parameter(0.01 * torch.rand(hidden_size, hidden_size))
        self.plasticity = nn.Parameter(0.01 * torch.rand(hidden_size, hidden_size))  # α
        self.eta = nn.Parameter(torch.full((1,), 0.01))

    def initial_state(self, batch: int) -> AgentState:
        """(h, Hebb): zero activity and a zero trace per environment."""
        return self.zeros(batch, self.hidden_size), self.zeros(batch, self.hidden_size, self.hidden_size)

    def rate(self, h: Tensor) -> Tensor:
        """m_t, shaped to broadcast against the (B, H) activity: here the learned η."""
        return self.eta.view(1, 1)

    def forward(self, x: Tensor, state: AgentState) -> tuple[Tensor, Tensor, AgentState]:
        h_prev, hebb = state
        plastic = torch.bmm(self.plasticity * hebb, h_prev.unsqueeze(2)).squeeze(2)
        h = torch.tanh(self.input(x) + h_prev @ self.recurrent.T + plastic)
        # Hebb + m_t · h_t h_{t-1}ᵀ in one batched product (m_t scales h_t)
        hebb = torch.baddbmm(hebb, (self.rate(h) * h).unsqueeze(2), h_prev.unsqueeze(1)).clamp(-1.0, 1.0)
        logits, value = self.heads(h)
        return logits, value, (h, hebb)
