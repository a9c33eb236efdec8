"""Sine-wave regression (Finn et al. 2017), the toy benchmark of the MAML family.

A task is y = A·sin(x − b) with amplitude A ~ U[0.1, 5] and phase b ~ U[0, π], inputs
x ~ U[−5, 5]. Each task has a fixed K-shot training set (``shots`` points; its train batch) and a
held-out test set (``test_points`` points). Loss and metric: mean squared error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from warpgrad.errors import UsageError


@dataclass
class SineTask:
    amplitude: float
    phase: float
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    metric_name: str = "mse"
    lower_is_better: bool = True

    def train_batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return self.train_x, self.train_y

    def test_batch(self) -> tuple[Tensor, Tensor]:
        return self.test_x, self.test_y

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(prediction, target)

    def metric(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(prediction, target)


class SineFamily:
    """Samples :class:`SineTask` s.

    Args:
        shots: training points per task (K).
        test_points: held-out points per task.
        amplitude: range of the uniform amplitude.
        phase: range of the uniform phase.
        x_range: range of the uniform inputs.
        dtype: tensor dtype.
    """

    metric_name = "mse"
    lower_is_better = True

    def __init__(
        self,
        shots: int = 10,
        test_points: int = 100,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
        dtype: torch.dtype = torch.float32,
    ):
        if shots < 1 or test_points < 1:
            raise UsageError(f"shots and test_points must be >= 1, got {shots} and {test_points}")
        self.shots = shots
        self.test_points = test_points
        self.amplitude = amplitude
        self.phase = phase
        self.x_range = x_range
        self.dtype = dtype

    def _uniform(self, low: float, high: float, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)

    def sample(self, generator: torch.Generator) -> SineTask:
        amplitude = float(self._uniform(*self.amplitude, (), generator))
        phase = float(self._uniform(*self.phase, (), generator))
        x = self._uniform(*self.x_range, (self.shots + self.test_points, 1), generator)
        y = amplitude * torch.sin(x - phase)
        x, y = x.to(self.dtype), y.to(self.dtype)
        k = self.shots
        return SineTask(amplitude, phase, x[:k], y[:k], x[k:], y[k:])
