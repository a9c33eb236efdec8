"""Learned learning rules (issue: VS-ML, BLUR, Gregor-style local rules) and the protocol they share.

See :mod:`warpgrad.rules.base` for the protocol and the online episodes, :mod:`warpgrad.rules.online`
for the online SGD/Adam baseline, :mod:`warpgrad.rules.blur` for BLUR (Sandler et al. 2021),
:mod:`warpgrad.rules.vsml` for VS-ML (Kirsch & Schmidhuber 2021), :mod:`warpgrad.rules.local_rules`
for Gregor-style local rules (after Gregor 2020; not a reproduction).
"""

from warpgrad.rules.base import Episodes, LearnedRule, episode_loss, online_metrics, run_episodes
from warpgrad.rules.blur import BLUR, backprop_genome
from warpgrad.rules.local_rules import LocalRules, meta_train_remember, remember_loss
from warpgrad.rules.online import OnlineGradient
from warpgrad.rules.vsml import VSML, clone_backprop

__all__ = [
    "BLUR",
    "Episodes",
    "LearnedRule",
    "LocalRules",
    "OnlineGradient",
    "VSML",
    "backprop_genome",
    "clone_backprop",
    "episode_loss",
    "meta_train_remember",
    "online_metrics",
    "remember_loss",
    "run_episodes",
]
