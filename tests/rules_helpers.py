"""Shared by the learned-rule tests: random online episodes, a looping copy of a rule, and the
check that every prediction precedes its own label."""

import copy

import torch

from warpgrad.rules.base import Episodes, run_episodes


def random_episodes(count=3, length=8, dim=6, classes=3, seed=0):
    """``count`` episodes of ``length`` standard normal inputs with uniformly random labels."""
    generator = torch.Generator().manual_seed(seed)
    return Episodes(
        torch.randn(count, length, dim, generator=generator),
        torch.randint(classes, (count, length), generator=generator),
        classes,
    )


def looping(rule):
    """A copy of ``rule`` whose episodes run in a Python loop rather than under vmap."""
    loop = copy.copy(rule)
    loop.vectorizable = False
    return loop


def assert_predictions_precede_labels(rule, meta, episodes):
    """Changing the label of step 5 of a one-episode batch leaves the predictions of steps 0..5
    unchanged (they were made before it was fed back) and changes step 6's (it learned from it)."""
    logits = run_episodes(rule, meta, episodes, torch.Generator().manual_seed(1))
    changed_y = episodes.y.clone()
    changed_y[0, 5] = (changed_y[0, 5] + 1) % episodes.n_classes
    changed = run_episodes(
        rule, meta, Episodes(episodes.x, changed_y, episodes.n_classes), torch.Generator().manual_seed(1)
    )
    assert torch.equal(logits[0, :6], changed[0, :6])
    assert not torch.equal(logits[0, 6], changed[0, 6])
