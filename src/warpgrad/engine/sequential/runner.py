"""The sequential runner: option checks, meta-training, :func:`run`, the plot and the table.

:func:`run` meta-trains every method on the same :class:`~.sampling.TrajectorySampler` samples
(:func:`meta_train`), meta-tests it (:func:`~.meta_test.evaluate`) and writes ``results.json``
and ``accuracy_vs_classes.png``; :func:`table` and :func:`outputs` are what the CLI prints.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from warpgrad.continual.metrics import plot_accuracy_vs_classes
from warpgrad.engine.outdir import check_out_dir, start_fresh
from warpgrad.engine.results import (
    RESULTS_FILE,
    ResultsRecord,
    format_table,
    mean_ci95,
    mean_ci95_entry,
)
from warpgrad.engine.sequential.meta_test import evaluate, parse_lr_grid
from warpgrad.engine.sequential.probes import PROBE_PLOT_FILE, add_probes, plot_probes
from warpgrad.engine.sequential.sampling import TrajectorySampler
from warpgrad.engine.threads import torch_threads
from warpgrad.errors import UsageError
from warpgrad.methods.continual.oml import HEAD_RESETS

PLOT_FILE = "accuracy_vs_classes.png"
METRIC = "final_accuracy"


# ------------------------------------------------------------------------------ meta-training


def _reset_rows(head: nn.Module, label: int) -> None:
    """Zero output unit ``label`` of a linear head (its weight row and bias)."""
    with torch.no_grad():
        head.weight[label].zero_()
        if getattr(head, "bias", None) is not None:
            head.bias[label].zero_()


def meta_train(
    learner: Any,
    sampler: TrajectorySampler,
    steps: int,
    *,
    reset_class_row: bool = False,
    progress: bool = False,
    desc: str = "meta-train",
) -> list[float]:
    """``steps`` meta-steps of ``learner`` on samples of ``sampler``; returns the meta-losses.

    With ``reset_class_row`` the output row of the trajectory's class in ``learner.head`` is
    zeroed before each step (see the package docstring, :mod:`warpgrad.engine.sequential`).

    Raises:
        FloatingPointError: naming the step, if a meta-loss is not finite.
    """
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress)
    for step in bar:
        tx, ty, rx, ry, label = sampler.sample()
        if reset_class_row:
            _reset_rows(learner.head, label)
        loss = float(learner.meta_step(tx, ty, rx, ry).get("meta_loss", float("nan")))
        if not math.isfinite(loss):
            raise FloatingPointError(f"{desc}: meta-loss {loss} at meta-step {step + 1}; lower the meta learning rate")
        losses.append(loss)
        if step % 20 == 0:
            bar.set_postfix(meta_loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    return losses


# ------------------------------------------------------------------------------ the runner


def _check_options(o: dict[str, Any], dataset: Any) -> int:
    """Validate the profile against the dataset; return the number of train classes to meta-train on."""
    for key in ("trajectory", "test_classes", "stream_per_class", "held_out_per_class", "runs", "tune_runs", "outputs"):
        if not isinstance(o[key], int) or o[key] < 1:
            raise UsageError(f"setting {key} must be a positive integer, got {o[key]!r}")
    for key in ("remember", "meta_classes", "threads"):
        if not isinstance(o[key], int) or o[key] < 0:
            raise UsageError(f"setting {key} must be a non-negative integer, got {o[key]!r}")
    for key, least in (("probe_samples", 0), ("probe_groups", 1)):
        value = o.get(key, least if key == "probe_samples" else 5)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise UsageError(f"setting {key} must be an integer >= {least}, got {value!r}")
    if o["head_reset"] not in HEAD_RESETS:
        raise UsageError(f"setting head_reset={o['head_reset']!r}; allowed: {', '.join(HEAD_RESETS)}")
    parse_lr_grid(o["lr_grid"])
    for split in ("train", "val", "test"):
        if not dataset.splits.get(split):
            raise UsageError(f"{dataset.name} has no {split!r} classes")
    train = list(dataset.splits["train"])
    n_meta = len(train) if o["meta_classes"] == 0 else o["meta_classes"]
    if not 1 <= n_meta <= len(train):
        raise UsageError(f"setting meta_classes={o['meta_classes']}: {dataset.name} has {len(train)} train classes")
    if o["test_classes"] > len(dataset.splits["test"]):
        raise UsageError(
            f"setting test_classes={o['test_classes']}: {dataset.name} has {len(dataset.splits['test'])} test classes"
        )
    need = o["stream_per_class"] + o["held_out_per_class"]
    fewest = min(dataset.count(c) for split in ("val", "test") for c in dataset.splits[split])
    if fewest < need:
        raise UsageError(
            f"stream_per_class + held_out_per_class = {need}, but some val/test class of {dataset.name} has only "
            f"{fewest} images"
        )
    if o["outputs"] < max(n_meta, o["test_classes"]):
        raise UsageError(
            f"setting outputs={o['outputs']}: the head needs at least max(meta_classes, test_classes) = "
            f"{max(n_meta, o['test_classes'])} outputs"
        )
    return n_meta


def meta_train_classes(dataset: Any, options: dict[str, Any], seed: int) -> list[int]:
    """The train classes meta-trained on: ``meta_classes`` of them (all when 0), a random subset
    drawn with ``seed`` (every method of a run gets the same)."""
    train = list(dataset.splits["train"])
    n = _check_options(options, dataset)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    return [train[i] for i in sorted(order)]


def run(
    experiment: Any,
    methods: list[str],
    profile: Any,
    seed: int,
    out_dir: str | Path,
    progress: bool = True,
    overwrite: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Meta-train and meta-test ``methods`` of a sequential experiment; write and return the results.

    The profile option ``threads`` (> 0) sets torch's intra-op threads for the run (restored after).
    """
    with torch_threads(int(profile.options["threads"]) or None):  # 0: leave torch's setting
        return _run(experiment, methods, profile, seed, check_out_dir(out_dir), progress, overwrite, command)


def _run(
    experiment: Any,
    methods: list[str],
    profile: Any,
    seed: int,
    out_dir: Path,
    progress: bool,
    overwrite: bool,
    command: str | None,
) -> dict[str, Any]:
    o = profile.options
    record = ResultsRecord(out_dir, experiment, profile, seed, command=command, metric=METRIC, lower_is_better=False)
    start_fresh(record, methods, overwrite)
    dataset = experiment.load_data(profile)  # a missing dataset fails here, before anything is written
    classes = meta_train_classes(dataset, o, seed)
    streams: dict[tuple[str, int], list[Any]] = {}
    entries: dict[str, dict[str, Any]] = {}
    for method in methods:
        started = time.perf_counter()
        torch.manual_seed(seed)
        learner = experiment.method(method).build(profile)
        losses: list[float] = []
        if getattr(learner, "meta_trains", True):
            # every method meta-trains on the same samples (the dataset caches the images)
            sampler = TrajectorySampler(
                dataset, classes, o["trajectory"], o["remember"], torch.Generator().manual_seed(seed)
            )
            losses = meta_train(
                learner,
                sampler,
                profile.meta_steps,
                reset_class_row=bool(o["reset_class_row"]) and getattr(learner, "resets_class_row", False),
                progress=progress,
                desc=f"{experiment.name}/{method}",
            )
        trained = time.perf_counter()
        result = evaluate(learner, dataset, o, seed, streams)
        mean_curve = result["curves"].mean(0)
        tail = losses[-max(1, len(losses) // 10) :]
        mean, ci95 = mean_ci95(result["final"])
        n = int(mean_curve.numel())
        entries[method] = {
            "metric": METRIC,
            "lower_is_better": False,
            "mean": mean,
            "ci95": ci95,
            "n_tasks": int(result["final"].numel()),
            "n_classes": n,
            "steps": profile.meta_steps if losses else 0,
            "wall_time_s": round(time.perf_counter() - started, 3),
            "per_task": result["final"].tolist(),
            "lr": result["lr"],
            "curve": mean_curve.tolist(),
            "extra": {
                "train_accuracy": mean_ci95_entry(result["train_final"]),
                "tuning": {
                    "split": "val",
                    "classes": result["n_val_classes"],
                    "runs": o["tune_runs"],
                    "accuracy": {repr(k): v for k, v in result["tuning"].items()},
                },
                "meta_training": {
                    "steps": len(losses),
                    "classes": len(classes),
                    "time_s": round(trained - started, 3),
                    "final_meta_loss": sum(tail) / len(tail) if losses else None,
                },
            },
        }
        if "probes" in result:
            add_probes(entries[method], result["probes"], o["probe_samples"])
    out_dir.mkdir(parents=True, exist_ok=True)
    results = record.add(entries)
    plot(results, out_dir / PLOT_FILE)
    if any("probes" in entry for entry in entries.values()):
        plot_probes(results, out_dir)
    return results


def plot(results: dict[str, Any], path: str | Path) -> None:
    """The mean accuracy-vs-classes curve of every method in ``results``, in one PNG."""
    curves = {
        name: list(enumerate(entry["curve"], start=1))
        for name, entry in results["methods"].items()
        if entry.get("curve")
    }
    title = f"{results.get('experiment')} ({results.get('profile')}): held-out accuracy, mean over runs"
    plot_accuracy_vs_classes(curves, path, title)


def outputs(out_dir: str | Path) -> str:
    """What a sequential run writes, for the CLI."""
    text = f"results: {Path(out_dir) / RESULTS_FILE}\naccuracy vs classes: {Path(out_dir) / PLOT_FILE}"
    if (Path(out_dir) / PROBE_PLOT_FILE).exists():
        text += f"\nprobes: {Path(out_dir) / PROBE_PLOT_FILE}, {Path(out_dir)}/probe_matrix_METHOD.png"
    return text


def _cell(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    return f"{stat['mean']:.3f}" + ("" if stat.get("ci95") is None else f" ± {stat['ci95']:.3f}")


def table(results: dict[str, Any]) -> str:
    """The comparison table, then per method the chosen lr, the train accuracy and the curve at a few points."""
    lines = [
        format_table(results),
        "",
        "per method: meta-test lr (chosen on val), train accuracy, held-out accuracy after 1/10/25/N classes:",
    ]
    for name, entry in results["methods"].items():
        curve = entry.get("curve") or []
        points = [k for k in (1, 10, 25) if k < len(curve)] + ([len(curve)] if curve else [])
        at = ", ".join(f"{k}: {curve[k - 1]:.3f}" for k in points)
        extra = entry.get("extra", {})
        lines.append(f"  {name:10s} lr {entry.get('lr')!s:7s} train {_cell(extra.get('train_accuracy')):15s} {at}")
        probes = entry.get("probes")
        if probes and curve:
            pairs = ", ".join(f"{k}: {curve[k - 1]:.3f} / {p:.3f}" for k, p in zip(probes["points"], probes["curve"]))
            lines.append(f"  {'':10s} output / linear probe ({probes['samples_per_class']} per class) after {pairs}")
    return "\n".join(lines)
