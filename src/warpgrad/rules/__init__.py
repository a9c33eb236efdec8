"""Learned learning rules (issue: VS-ML, BLUR, Gregor-style local rules) and the protocol they share.

See :mod:`warpgrad.rules.base` for the protocol and the online episodes, :mod:`warpgrad.rules.online`
for the online SGD/Adam baseline.
"""

from warpgrad.rules.base import Episodes, LearnedRule, episode_loss, online_metrics, run_episodes
from warpgrad.rules.online import OnlineGradient

__all__ = ["Episodes", "LearnedRule", "OnlineGradient", "episode_loss", "online_metrics", "run_episodes"]
