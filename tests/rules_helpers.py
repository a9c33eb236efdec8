"""Shared by the learned-rule tests: random online episodes."""

import torch

from warpgrad.rules.base import Episodes


def random_episodes(count=3, length=8, dim=6, classes=3, seed=0):
    """``count`` episodes of ``length`` standard normal inputs with uniformly random labels."""
    generator = torch.Generator().manual_seed(seed)
    return Episodes(
        torch.randn(count, length, dim, generator=generator),
        torch.randint(classes, (count, length), generator=generator),
        classes,
    )
