"""A method's training state (:class:`TrainingState`): what a checkpoint holds, one meta-step on a
rank's shard of the meta-batch, and evaluation on tasks whose per-task results are gathered."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from warpgrad.distributed import Cluster
from warpgrad.engine.interrupt import check_finite
from warpgrad.engine.seeding import (
    EVAL_SEED_OFFSET,
    STEP_SEED_OFFSET,
    TASK_SEED_OFFSET,
    VAL_SEED_OFFSET,
    _draw_seed,
    _generator,
    _sample_tasks,
    _seeded,
    _task_seeds,
    _TaskPrefetcher,
)
from warpgrad.errors import FileFormatError, UsageError
from warpgrad.experiments import Experiment, Profile, build_method
from warpgrad.methods.base import MetaLearner
from warpgrad.tasks.base import Task, TaskFamily, family_split, shardable

CHECKPOINT_FORMAT = 2
CHECKPOINT_KEYS = ("format", "step", "learner", "generators", "torch_rng", "elapsed_s", "history", "config")


def run_config(experiment: Experiment, method: str, profile: Profile, seed: int) -> dict[str, Any]:
    """What identifies a method's run; a checkpoint must match it to be resumed."""
    return {
        "experiment": experiment.name,
        "method": method,
        "profile": profile.name,
        "seed": seed,
        "settings": profile.settings,
    }


@dataclass
class TrainingState:
    """Everything one method's training needs; its mutable part is what a checkpoint holds."""

    experiment: Experiment
    method: str
    profile: Profile
    seed: int
    learner: MetaLearner
    family: TaskFamily
    val_tasks: list[Task]  # this rank's shard
    task_generator: torch.Generator
    step_generator: torch.Generator
    cluster: Cluster
    step: int = 0
    elapsed_s: float = 0.0
    history: list[dict[str, Any]] | None = None
    prefetcher: _TaskPrefetcher | None = None
    precision: str = "fp32"
    # this invocation's seconds drawing tasks, in meta-steps (whose collectives the cluster times),
    # validating and writing checkpoints
    clock: dict[str, float] = field(
        default_factory=lambda: {
            "sample_s": 0.0,
            "meta_step_s": 0.0,
            "meta_step_collective_s": 0.0,
            "validation_s": 0.0,
            "checkpoint_s": 0.0,
        }
    )

    def autocast(self) -> Any:
        """bf16 autocast on this rank's device for ``precision="bf16"``, else nothing."""
        if self.precision == "bf16":
            return torch.autocast(device_type=self.cluster.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @classmethod
    def start(
        cls, experiment: Experiment, method: str, profile: Profile, seed: int, cluster: Cluster | None = None
    ) -> TrainingState:
        cluster = Cluster() if cluster is None else cluster
        cluster.check_divisible_work("meta_batch", profile.meta_batch)
        learner = build_method(experiment, method, profile, seed).to(cluster.device)  # seeds the global RNG
        family = experiment.make_family(profile)
        seeds = _task_seeds(_generator(VAL_SEED_OFFSET + seed), profile.val_tasks)
        val_tasks = _sample_tasks(family_split(family, "val"), seeds, cluster.shard(profile.val_tasks))
        if cluster.distributed and val_tasks and not shardable(val_tasks[0]):
            raise UsageError(
                f"{experiment.name}'s tasks are sequences their learner walks itself; its meta-batches cannot be "
                "split across processes: run it in one process"
            )
        return cls(
            experiment,
            method,
            profile,
            seed,
            learner,
            family,
            val_tasks,
            _generator(TASK_SEED_OFFSET + seed),
            _generator(STEP_SEED_OFFSET + seed),
            cluster,
            history=[],
        )

    @property
    def metric(self) -> str:
        return self.family.metric_name

    def checkpoint(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "learner": self.learner.state_dict(),
            "generators": {
                "tasks": self.task_generator.get_state(),
                "meta_step": self.step_generator.get_state(),
            },
            "torch_rng": torch.get_rng_state(),
            "elapsed_s": self.elapsed_s,
            "history": [dict(row) for row in self.history],
            "config": run_config(self.experiment, self.method, self.profile, self.seed),
        }

    def restore(self, checkpoint: dict[str, Any], path: Path) -> None:
        """Continue from ``checkpoint`` (read from ``path``).

        Raises:
            FileFormatError: if its content does not fit this method's learner and generators.
        """
        try:
            self._restore(checkpoint)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            detail = " ".join(str(error).split())[:300] or type(error).__name__
            raise FileFormatError(f"checkpoint {path} does not fit {self.method}'s learner: {detail}") from None

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        self.learner.load_state_dict(checkpoint["learner"])
        self.task_generator.set_state(checkpoint["generators"]["tasks"])
        self.step_generator.set_state(checkpoint["generators"]["meta_step"])
        torch.set_rng_state(checkpoint["torch_rng"])
        self.step = int(checkpoint["step"])
        self.elapsed_s = float(checkpoint["elapsed_s"])
        self.history = [dict(row) for row in checkpoint["history"]]

    def meta_step(self) -> dict[str, float]:
        """One meta-step on this rank's shard of the next meta-batch; metrics averaged over ranks."""
        started = time.perf_counter()
        n = self.profile.meta_batch
        family = family_split(self.family, "train")
        seeds = _task_seeds(self.task_generator, n)
        shard = self.cluster.shard(n)
        tasks = self.prefetcher.take(seeds) if self.prefetcher is not None else None
        if tasks is None:
            tasks = _sample_tasks(family, seeds, shard)
        if self.prefetcher is not None and self.step + 1 < self.profile.meta_steps:
            self.prefetcher.request(family, self.task_generator, n, shard)
        tasks = _seeded(tasks, [seeds[i][1] for i in shard], self.cluster.device)
        generator = _generator(_draw_seed(self.step_generator))
        sampled, waited = time.perf_counter(), self.cluster.clock["collective_s"]
        with self.autocast():
            metrics = self.learner.meta_step(tasks, generator, self.cluster.reduction(n))
        metrics = self.cluster.mean_metrics(metrics, n)
        self.clock["sample_s"] += sampled - started
        self.clock["meta_step_s"] += time.perf_counter() - sampled
        self.clock["meta_step_collective_s"] += self.cluster.clock["collective_s"] - waited
        return metrics

    def timing(self) -> dict[str, float]:
        """This rank's seconds of this invocation: drawing tasks, meta-steps, the collectives within
        meta-steps, validation, checkpoints, and all collectives (waiting for the other ranks included)."""
        return {
            **{k: round(v, 3) for k, v in self.clock.items()},
            "collective_s": round(self.cluster.clock["collective_s"], 3),
        }

    def evaluate(self, tasks: list[Task], n_total: int) -> dict[str, Tensor]:
        """Per-task results (float64, CPU) of all ``n_total`` tasks, of which ``tasks`` is this
        rank's shard; batches from per-task seeds of a fresh evaluation generator."""
        generator = _generator(EVAL_SEED_OFFSET + self.seed)
        batch_seeds = [b for _, b in _task_seeds(generator, n_total)]
        shard = self.cluster.shard(n_total)
        rows: list[dict[str, float]] = []
        if tasks:
            seeded = _seeded(tasks, [batch_seeds[i] for i in shard], self.cluster.device)
            with self.autocast():
                out = self.learner.evaluate(seeded, _generator(_draw_seed(generator)))
            values = {k: v.detach().double().cpu() for k, v in out.items()}
            rows = [{k: float(v[j]) for k, v in values.items()} for j in range(len(tasks))]
        rows = self.cluster.gather(rows)
        return {k: torch.tensor([r[k] for r in rows], dtype=torch.float64) for k in rows[0]}

    def validation_row(self, step: int, elapsed_s: float, train_metrics: dict[str, float]) -> dict[str, Any]:
        started = time.perf_counter()
        out = self.evaluate(self.val_tasks, self.profile.val_tasks)
        self.clock["validation_s"] += time.perf_counter() - started
        check_finite(self.method, step, {f"validation {k}": float(v.mean()) for k, v in out.items()})
        row: dict[str, Any] = {
            "step": step,
            "time_s": round(elapsed_s, 3),
            f"val_{self.metric}": float(out[self.metric].mean()),
            "val_loss": float(out["loss"].mean()),
        }
        for key, value in train_metrics.items():
            row[key if key not in row else f"meta_{key}"] = float(value)
        return row
