"""Learning curves from the ``history`` of results entries: one column (the maze's reward per
episode, ES-MAML's post-adaptation return, a learned optimiser's loss) against the history's
``step``, one line per method, the mean over seeds with a band from the lowest to the highest seed."""

from __future__ import annotations

import io
import os
from typing import Any, Sequence

from warpgrad.engine.checkpoint import atomic_write

CURVES_FILE = "reward_curves.png"


def seed_curves(
    results: Sequence[dict[str, Any]], column: str = "reward"
) -> dict[str, tuple[list[int], list[list[float]]]]:
    """method -> (steps, one curve of ``column`` per seed), over the steps every seed reached."""
    curves: dict[str, list[dict[int, float]]] = {}
    for result in results:
        for name, entry in result.get("methods", {}).items():
            curves.setdefault(name, []).append(
                {row["step"]: row[column] for row in entry.get("history", []) if column in row}
            )
    out = {}
    for name, per_seed in curves.items():
        episodes = sorted(set.intersection(*(set(c) for c in per_seed)))
        out[name] = (episodes, [[c[e] for e in episodes] for c in per_seed])
    return out


def plot_reward_curves(results: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    """Draw the reward curves of RL ``results`` (one results file per seed) into a PNG at ``path``."""
    plot_curves(results, path, "reward", "episode", "reward per episode (block mean)")


def plot_curves(
    results: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    column: str,
    xlabel: str,
    ylabel: str,
    log_y: bool = False,
) -> None:
    """Draw ``column`` of ``results``' histories (one results file per seed) into a PNG at ``path``."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2), dpi=120)
    axes = figure.subplots()
    for name, (episodes, per_seed) in seed_curves(results, column).items():
        if not episodes:
            continue
        columns = list(zip(*per_seed))
        mean = [sum(c) / len(c) for c in columns]
        seeds = f"{len(per_seed)} seed" + ("s" if len(per_seed) > 1 else "")
        (line,) = axes.plot(episodes, mean, linewidth=1.5, label=f"{name} ({seeds})")
        if len(per_seed) > 1:
            low, high = [min(c) for c in columns], [max(c) for c in columns]
            axes.fill_between(episodes, low, high, alpha=0.2, color=line.get_color())
    first = results[0] if results else {}
    seeds = sorted({r.get("seed") for r in results})
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if log_y:
        axes.set_yscale("log")
    band = "; band: lowest to highest seed" if len(seeds) > 1 else ""
    axes.set_title(f"{first.get('experiment')} ({first.get('profile')} profile, seeds {seeds}){band}", fontsize=9)
    axes.grid(True, alpha=0.3)
    if axes.lines:
        axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m warpgrad.engine.curves OUT.png PATH [PATH ...] [--column C]``: the curves of
    every ``results.json`` under the paths (e.g. one directory per seed) in one plot."""
    import argparse
    from pathlib import Path

    from warpgrad.engine.report import load_runs

    parser = argparse.ArgumentParser(prog="python -m warpgrad.engine.curves", description=main.__doc__)
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("paths", nargs="+", help="results.json files or directories holding them")
    parser.add_argument("--column", default="reward", help="the history column to draw (default: reward)")
    parser.add_argument("--xlabel", default="episode", help="the x axis label (default: episode)")
    parser.add_argument("--ylabel", help="the y axis label (default: the column)")
    parser.add_argument("--log-y", action="store_true", help="a logarithmic y axis")
    args = parser.parse_args(argv)
    runs = load_runs(args.paths)
    results = [{"experiment": r.experiment, "profile": r.profile, "seed": r.seed, "methods": r.methods} for r in runs]
    plot_curves(results, Path(args.out), args.column, args.xlabel, args.ylabel or args.column, args.log_y)
    print(f"{args.out}: {len(runs)} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
