"""Runs reinforcement-learning experiments (the maze): agents trained episode by episode with
checkpoints, resume, per-method ``metrics.csv``, ``results.json`` and reward curves.

Each method trains one agent (built with the run's seed) for ``profile.meta_steps`` episodes of
``profile.meta_batch`` mazes with :class:`~warpgrad.methods.rl.A2C`. Episode e's maze draws its
goals and teleports from a generator seeded by (seed, e), so every method meets the same goals in
the same episodes; the agent samples its actions from its own generator, saved in checkpoints. The
reported number is the mean reward per episode (summed over its steps, averaged over the mazes)
over the last ``final_episodes`` episodes, with a Student's t interval over those episodes (each
episode is a task: a new goal); ``warpgrad report`` over several seeds intervals the seeds' means.

A checkpoint (``METHOD/checkpoint.pt``) is written before the first episode, every
``checkpoint_every`` episodes, on Ctrl-C and at the end; ``--resume`` continues from it and gives
the same numbers as an uninterrupted run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from warpgrad.engine.checkpoint import check_config, checkpoint_path, load_checkpoint, save_checkpoint
from warpgrad.engine.curves import CURVES_FILE, plot_reward_curves
from warpgrad.engine.interrupt import TrainingInterrupted, _DeferredInterrupt, check_finite
from warpgrad.engine.outdir import check_out_dir, removed_on_failure, start_fresh
from warpgrad.engine.resolve import _check_stop_after
from warpgrad.engine.results import RESULTS_FILE, ResultsRecord, format_table, mean_ci95, write_metrics_csv
from warpgrad.engine.threads import torch_threads
from warpgrad.errors import FileFormatError
from warpgrad.methods.rl import A2C, A2CLoss, A2CUpdates

CHECKPOINTS = True  # this runner resumes (see warpgrad.cli.run)
METRICS_FILE = "metrics.csv"
KEYS = ("config", "step", "trainer", "action_generator", "rewards", "losses", "elapsed_s")


def maze_seed(seed: int, episode: int) -> int:
    """The seed of episode ``episode``'s maze generator in a run with seed ``seed``."""
    return (seed * 1_000_003 + episode) % 2**63


class MazeRun:
    """One method's training: the maze, the agent and its A2C, the action generator, the history."""

    def __init__(self, experiment: Any, method: str, profile: Any, seed: int) -> None:
        o = profile.options
        self.config = {
            "experiment": experiment.name,
            "method": method,
            "profile": profile.name,
            "seed": seed,
            "settings": profile.settings,
        }
        self.method, self.seed, self.episodes = method, seed, profile.meta_steps
        self.maze = experiment.make_env(profile)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            agent = experiment.method(method).build(profile)
        self.trainer = A2C(agent, A2CLoss(**o["a2c"]), A2CUpdates(**o[method]))
        self.action_generator = torch.Generator().manual_seed(seed)
        self.rewards: list[float] = []
        self.losses: list[float] = []
        self.elapsed_s = 0.0

    @property
    def episode(self) -> int:
        return self.trainer.episode

    def train_episode(self) -> dict[str, float]:
        maze_generator = torch.Generator().manual_seed(maze_seed(self.seed, self.episode))
        metrics = self.trainer.train_episode(self.maze, maze_generator, self.action_generator)
        check_finite(self.method, f"episode {self.episode}", metrics)
        self.rewards.append(metrics["reward"])
        self.losses.append(metrics["loss"])
        return metrics

    def checkpoint(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "step": self.episode,
            "trainer": self.trainer.state_dict(),
            "action_generator": self.action_generator.get_state(),
            "rewards": torch.tensor(self.rewards, dtype=torch.float64),
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "elapsed_s": self.elapsed_s,
        }

    def restore(self, checkpoint: dict[str, Any], path: Path) -> None:
        check_config(checkpoint, self.config, path)
        episode = checkpoint["step"]
        if not isinstance(episode, int) or not 0 <= episode <= self.episodes:
            raise FileFormatError(f"checkpoint {path} is at episode {episode!r}, outside 0..{self.episodes}")
        if len(checkpoint["rewards"]) != episode or len(checkpoint["losses"]) != episode:
            raise FileFormatError(f"checkpoint {path} is at episode {episode} but records {len(checkpoint['rewards'])}")
        self.trainer.load_state_dict(checkpoint["trainer"])
        self.action_generator.set_state(checkpoint["action_generator"])
        self.rewards = checkpoint["rewards"].tolist()
        self.losses = checkpoint["losses"].tolist()
        self.elapsed_s = float(checkpoint["elapsed_s"])

    def history(self, block: int) -> list[dict[str, Any]]:
        """One row per ``block`` episodes: their mean reward and loss (what ``metrics.csv`` holds)."""
        rows = []
        for start in range(0, len(self.rewards), block):
            rewards, losses = self.rewards[start : start + block], self.losses[start : start + block]
            rows.append(
                {
                    "step": start + len(rewards),
                    "reward": sum(rewards) / len(rewards),
                    "loss": sum(losses) / len(losses),
                }
            )
        return rows

    def entry(self, final_episodes: int, block: int) -> dict[str, Any]:
        """The results entry: the mean reward over the last ``final_episodes`` episodes and more."""
        final = torch.tensor(self.rewards[-final_episodes:], dtype=torch.float64)
        first = torch.tensor(self.rewards[:final_episodes], dtype=torch.float64)
        mean, ci95 = mean_ci95(final)
        first_mean, first_ci95 = mean_ci95(first)
        return {
            "metric": "reward",
            "lower_is_better": False,
            "mean": mean,
            "ci95": ci95,
            "n_tasks": int(final.numel()),
            "steps": self.episode,
            "wall_time_s": round(self.elapsed_s, 3),
            "episodes_per_s": round(self.episode / self.elapsed_s, 3) if self.elapsed_s > 0 else None,
            "per_task": final.tolist(),
            "extra": {"first_episodes": {"mean": first_mean, "ci95": first_ci95, "n": int(first.numel())}},
            "history": self.history(block),
        }


def _load(experiment: Any, method: str, profile: Any, seed: int, out_dir: Path) -> tuple[MazeRun, Path]:
    run = MazeRun(experiment, method, profile, seed)
    path = checkpoint_path(out_dir, method)
    run.restore(load_checkpoint(path, keys=KEYS), path)
    return run, path


def train_method(
    experiment: Any,
    method: str,
    profile: Any,
    seed: int,
    out_dir: Path,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Continue ``method`` from its checkpoint in ``out_dir`` to its last episode; its results
    entry, or ``None`` when ``stop_after`` episodes stopped it first (checkpoint saved)."""
    run, path = _load(experiment, method, profile, seed, out_dir)
    o = profile.options
    clock, resumed_elapsed = time.perf_counter(), run.elapsed_s

    def save() -> None:
        run.elapsed_s = resumed_elapsed + time.perf_counter() - clock
        save_checkpoint(path, run.checkpoint())
        write_metrics_csv(out_dir / method / METRICS_FILE, run.history(profile.eval_every))

    bar = tqdm(
        total=run.episodes,
        initial=run.episode,
        desc=f"{experiment.name}/{method}",
        unit="episode",
        disable=not progress,
        file=sys.stderr,
        mininterval=0.1 if sys.stderr.isatty() else 10.0,
        miniters=1,  # a log file gets a line every 10 s however the pace changes
        dynamic_ncols=True,
    )
    start = run.episode
    try:
        with _DeferredInterrupt(bar) as interrupt:
            while run.episode < run.episodes:
                metrics = run.train_episode()
                bar.update(1)
                if run.episode % profile.eval_every == 0:
                    recent = run.rewards[-profile.eval_every :]
                    bar.set_postfix({"reward": f"{sum(recent) / len(recent):.1f}", "loss": f"{metrics['loss']:.3g}"})
                last = run.episode == run.episodes
                stop = stop_after is not None and run.episode - start >= stop_after
                if run.episode % profile.checkpoint_every == 0 or last or stop or interrupt.requested:
                    save()
                if interrupt.requested and not last:
                    raise TrainingInterrupted(method, run.episode, run.episodes, path)
                if stop and not last:
                    return None
    finally:
        bar.close()
    return run.entry(min(o["final_episodes"], run.episode), profile.eval_every)


def run(
    experiment: Any,
    methods: list[str],
    profile: Any,
    seed: int,
    out_dir: str | Path,
    progress: bool = True,
    overwrite: bool = False,
    command: str | None = None,
    resume: bool = False,
    stop_after: int | None = None,
) -> dict[str, Any] | None:
    """Train ``methods`` one after another; write and return the merged results (``None`` when
    ``stop_after`` stopped a method before its end).

    Everything is checked before the first episode: the output directory, the results file and,
    with ``resume``, every method's checkpoint. A fresh run writes every method's episode-0
    checkpoint first, so any stop can be resumed; each finished method's entry is recorded at once.
    """
    _check_stop_after(stop_after)
    out_dir = check_out_dir(out_dir)
    record = ResultsRecord(out_dir, experiment, profile, seed, command=command)
    if resume:
        for method in methods:
            _load(experiment, method, profile, seed, out_dir)
    else:
        start_fresh(record, methods, overwrite)
        with removed_on_failure(out_dir, methods):
            for method in methods:
                fresh = MazeRun(experiment, method, profile, seed)
                save_checkpoint(checkpoint_path(out_dir, method), fresh.checkpoint())
    results: dict[str, Any] | None = None
    with torch_threads(profile.options.get("threads")):
        for method in methods:
            entry = train_method(experiment, method, profile, seed, out_dir, stop_after, progress)
            if entry is None:
                return None
            measured = f"training (last {profile.options['final_episodes']} episodes)"
            results = record.add({method: entry}, metric="reward", lower_is_better=False, measured=measured)
            plot_reward_curves([results], out_dir / CURVES_FILE)
    return results


def table(results: dict[str, Any]) -> str:
    return format_table(results)


def outputs(out_dir: str | Path) -> str:
    """What a maze run writes, for the CLI."""
    out_dir = Path(out_dir)
    return (
        f"results: {out_dir / RESULTS_FILE}\nreward curves: {out_dir / CURVES_FILE}\n"
        f"per-method {METRICS_FILE} and checkpoint.pt: {out_dir}/METHOD/"
    )


def after_seeds(out_dirs: list[Path]) -> str:
    """After ``--seeds``: the curves of every seed in one plot (mean and band over seeds), written
    next to the seeds' directories; what was written, for the CLI."""
    from warpgrad.engine.results import load_results

    results = [r for r in (load_results(d / RESULTS_FILE) for d in out_dirs) if r is not None]
    path = out_dirs[0].parent / CURVES_FILE
    plot_reward_curves(results, path)
    return f"reward curves over {len(results)} seeds: {path}"
