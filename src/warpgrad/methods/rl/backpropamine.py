"""Backpropamine: neuromodulated Hebbian plasticity (Miconi, Rawal, Clune & Stanley, ICLR 2019).

The Hebbian agent of :mod:`warpgrad.methods.rl.hebbian` with a rate the network decides at every
step ("simple neuromodulation"): a learned read-out of the new hidden state,

    M_t    = tanh(w_M · h_t + b_M)              one scalar per environment
    Hebb_t = clamp(Hebb_{t-1} + M_t · h_t h_{t-1}ᵀ, -1, 1)

so the network itself switches plasticity on, off or into reverse (M_t < 0), e.g. on the step it
finds the reward. As in the paper's maze runs there is no separate η: M_t is the whole rate.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from warpgrad.methods.rl.hebbian import HebbianRNN


class Backpropamine(HebbianRNN):
    def __init__(self, observation_size: int, n_actions: int, hidden_size: int = 100) -> None:
        super().__init__(observation_size, n_actions, hidden_size)
        del self.eta
        self.modulator = nn.Linear(hidden_size, 1)

    def rate(self, h: Tensor) -> Tensor:
        return torch.tanh(self.modulator(h))  # (B, 1)
