"""Meta-training a learned rule on sampled episodes, by backpropagation through time or by ES,
with checkpoints that resume to the uninterrupted result.

One meta-step, in this order:

    1. draw ``episodes`` episodes from the sampler (every draw from the run's generator);
    2. estimate the gradient of the meta-loss (:func:`~warpgrad.rules.base.episode_loss`, the mean
       online cross-entropy) with respect to the meta-parameters:
       - ``bptt``: exactly, by backpropagation through the whole episodes;
       - ``es``: antithetic ES (:class:`~warpgrad.estimators.ES`, σ ``es_sigma``, ``es_population``
         pairs), every member on the same episodes and the same initial learner states (common
         random numbers), no gradient of anything;
    3. clip its global norm to ``clip`` (0: no clipping) and take an Adam step (``lr``).

A checkpoint (the meta-parameters, Adam's state, the generator's state, the step and the history of
meta-losses) is written every ``checkpoint_every`` steps and at the end; :func:`meta_train` with
``resume=True`` continues from it, and the result equals an uninterrupted run's exactly.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from warpgrad.core.tree import Params
from warpgrad.errors import TrainingDiverged, UsageError
from warpgrad.rules.base import LearnedRule, episode_loss

__all__ = ["MetaTrainConfig", "meta_train", "TRAINERS"]

TRAINERS = ("bptt", "es")
CHECKPOINT_KEYS = ("config", "step", "meta", "adam", "generator", "history")


@dataclass(frozen=True)
class MetaTrainConfig:
    """How to meta-train a rule (see the module docstring)."""

    steps: int = 100
    episodes: int = 8
    lr: float = 1e-3
    clip: float = 25.0
    trainer: str = "bptt"
    es_sigma: float = 0.05
    es_population: int = 16
    checkpoint_every: int = 25

    def __post_init__(self) -> None:
        if self.trainer not in TRAINERS:
            raise UsageError(f"trainer={self.trainer!r}: allowed are {', '.join(map(repr, TRAINERS))}")
        for name in ("steps", "episodes", "es_population", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "steps" else 1):
                raise UsageError(f"{name}={value!r}: must be a positive integer")
        for name in ("lr", "es_sigma"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise UsageError(f"{name}={value!r}: must be a positive number")
        if not (isinstance(self.clip, (int, float)) and math.isfinite(self.clip) and self.clip >= 0):
            raise UsageError(f"clip={self.clip!r}: must be >= 0 (0: no clipping)")


def _estimate(rule: LearnedRule, meta: Params, episodes: Any, config: MetaTrainConfig, generator: torch.Generator):
    """(meta-loss, gradient) of step 2."""
    init_seed = int(torch.randint(2**62, (), generator=generator))  # the same initial learners for every member

    def loss(params: Params) -> torch.Tensor:
        return episode_loss(rule, params, episodes, torch.Generator().manual_seed(init_seed))

    if config.trainer == "bptt":
        leaves = {k: v.detach().requires_grad_(True) for k, v in meta.items()}
        value = loss(leaves)
        grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
        grad = {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(leaves.items(), grads)}
        return float(value.detach()), grad
    from warpgrad.estimators import ES

    estimate = ES(config.es_sigma, config.es_population).estimate(loss, meta, generator)
    return estimate.mean_value, estimate.grad


def meta_train(
    rule: LearnedRule,
    meta: Params,
    sampler: Any,
    config: MetaTrainConfig,
    seed: int,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = False,
) -> tuple[Params, list[dict[str, float]]] | None:
    """Meta-train ``meta`` for ``config.steps`` steps; the meta-parameters and the history (one row
    per step: ``step``, ``meta_loss``, ``grad_norm``), or ``None`` when ``stop_after`` steps of this
    call stopped it first (checkpoint saved)."""
    from tqdm import tqdm

    from warpgrad.engine.checkpoint import load_checkpoint, save_checkpoint

    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in meta.items()}
    adam = torch.optim.Adam(list(leaves.values()), lr=config.lr)
    generator = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    step = 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint, keys=CHECKPOINT_KEYS)
        if state["config"] != {**asdict(config), "seed": seed}:
            raise UsageError(f"checkpoint {checkpoint} was written with {state['config']}, not these settings")
        with torch.no_grad():
            for k, v in state["meta"].items():
                leaves[k].copy_(v)
        adam.load_state_dict(state["adam"])
        generator.set_state(state["generator"])
        history, step = list(state["history"]), int(state["step"])

    def save() -> None:
        if checkpoint is not None:
            save_checkpoint(
                checkpoint,
                {
                    "config": {**asdict(config), "seed": seed},
                    "step": step,
                    "meta": {k: v.detach().clone() for k, v in leaves.items()},
                    "adam": copy.deepcopy(adam.state_dict()),
                    "generator": generator.get_state(),
                    "history": history,
                },
            )

    start = step
    for _ in tqdm(range(step, config.steps), desc=f"meta-train {rule.name}", disable=not progress):
        episodes = sampler.sample(config.episodes, generator)
        value, grad = _estimate(rule, {k: v.detach() for k, v in leaves.items()}, episodes, config, generator)
        norm = float(torch.sqrt(sum(g.pow(2).sum() for g in grad.values())))
        if not math.isfinite(value) or not math.isfinite(norm):
            raise TrainingDiverged(f"{rule.name}: meta-step {step}: meta-loss {value}, gradient norm {norm}")
        scale = min(1.0, config.clip / (norm + 1e-12)) if config.clip > 0 else 1.0
        for k, leaf in leaves.items():
            leaf.grad = grad[k] * scale
        adam.step()
        step += 1
        history.append({"step": step, "meta_loss": value, "grad_norm": norm})
        if step % config.checkpoint_every == 0 or step == config.steps:
            save()
        if stop_after is not None and step - start >= stop_after and step < config.steps:
            save()
            return None
    if step == start:
        save()
    return {k: v.detach().clone() for k, v in leaves.items()}, history
