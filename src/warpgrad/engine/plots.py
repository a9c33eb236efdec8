"""Learning-curve plot: validation metric against meta-step, one line per method."""

from __future__ import annotations

import io
import os
from typing import Any

from warpgrad.engine.checkpoint import atomic_write

LOG_SCALE_METRICS = {"mse", "loss", "nll"}


def plot_learning_curves(results: dict[str, Any], path: str | os.PathLike) -> None:
    """Draw each method's validation curve from ``results`` (its ``history``) into a PNG.

    The y-axis is logarithmic for error metrics such as MSE when all values are positive.
    """
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    metric = results.get("metric") or "metric"
    key = f"val_{metric}"
    figure = Figure(figsize=(6.4, 4.2), dpi=120)
    axes = figure.subplots()
    values: list[float] = []
    for name, entry in results.get("methods", {}).items():
        points = [(row["step"], row[key]) for row in entry.get("history", []) if row.get(key) is not None]
        if not points:
            continue
        steps, ys = zip(*points)
        values.extend(ys)
        axes.plot(steps, ys, marker="o", markersize=3, linewidth=1.5, label=name)
    if metric in LOG_SCALE_METRICS and values and min(values) > 0:
        axes.set_yscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")  # 0.01, 1, 4 rather than 10⁻², 10⁰, 4×10⁰
        axes.yaxis.set_major_formatter(plain)
        # label the minor ticks too where the curves span less than a decade (few major ticks)
        axes.yaxis.set_minor_formatter(plain if max(values) / min(values) < 10 else NullFormatter())
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("meta-step")
    axes.set_ylabel(f"validation {metric}")
    axes.set_title(f"{results.get('experiment')} ({results.get('profile')} profile, seed {results.get('seed')})")
    axes.grid(True, which="both", alpha=0.3)
    if values:
        axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
