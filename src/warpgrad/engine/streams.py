"""Runs continual learners through image streams: accuracy matrices, metrics, plots, results.

A stream experiment trains each method through ``runs`` streams (seeds ``seed, seed+1, ...``): on
experience i the learner trains (``train_experience``), then sees the experience end
(``end_experience``, e.g. EWC's Fisher on ``fisher_samples`` training examples), then is tested
on every experience's test set: ``R[i, j]``. The reported metric is the average accuracy after
the stream (mean of R's last row), mean ± 95% CI over the runs; forgetting, backward transfer
and learning accuracy are recorded under ``extra``; a heatmap of the mean R per method is written
next to ``results.json``.

Task-incremental streams (``stream.scenario == "task-incremental"``, e.g. a split stream whose
labels are positions in each experience's ``classes``) are learned and tested with the output
mask of that experience: the learner gets ``classes=experience.classes`` in training, at the
experience's end and at test time, so only those output units compete (one masked head standing
for one head per task). Other scenarios use every output (``classes=None``).

The runner sets torch's intra-op threads to the profile option ``threads`` (when present) for
the run and restores them afterwards: the networks are small MLPs on minibatches of 32, for
which a second thread costs more than it saves (measured on a 2-core machine busy with other
work, 64-100-100-10: 1.3 ms per step with one thread, 21 ms with two).

With the profile option ``probe_samples`` (absent or 0: off) each run also fits linear probes on
the learner's representation (:func:`warpgrad.analysis.probes.probe_matrix`, probe samples drawn
from a generator seeded with the run's seed, apart from the training generator, so R is
unchanged): ``representational_forgetting`` is recorded under ``extra`` and the mean probe
matrix as ``probe_matrix``.

Stream runs are short and have no checkpoints: ``--resume`` is refused for them.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from warpgrad.continual.metrics import plot_accuracy_matrix, summarize
from warpgrad.engine.interrupt import check_finite
from warpgrad.engine.outdir import check_out_dir, start_fresh
from warpgrad.engine.results import (
    RESULTS_FILE,
    ResultsRecord,
    format_table,
    mean_ci95,
    mean_ci95_entry,
)
from warpgrad.engine.threads import torch_threads


@torch.no_grad()
def accuracy(learner: Any, x: Tensor, y: Tensor, batch_size: int = 1024, classes: Sequence[int] | None = None) -> float:
    """Fraction of ``x`` whose arg-max logit is ``y``; with ``classes``, the arg-max over those
    output units only (``learner.predict(x, classes=classes)``) and ``y`` are positions in ``classes``."""
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        logits = learner.predict(x[start : start + batch_size], classes=classes)
        correct += int((logits.argmax(-1) == y[start : start + batch_size]).sum())
    return correct / max(1, x.shape[0])


def output_mask(stream: Any, experience: Any) -> list[int] | None:
    """The output units a learner may use on ``experience``: its ``classes`` in a task-incremental
    stream, ``None`` (all outputs) otherwise."""
    return list(experience.classes) if getattr(stream, "scenario", None) == "task-incremental" else None


def accuracy_matrix_of(
    learner: Any,
    stream: Any,
    generator: torch.Generator,
    epochs: int,
    batch_size: int,
    fisher_samples: int,
    name: str = "the learner",
    after_experience: Callable[[int, list[Any]], None] | None = None,
) -> Tensor:
    """Train ``learner`` through ``stream`` and return ``R[i, j]`` (see the module docstring).

    ``after_experience(i, experiences)``, when given, is called after row ``i`` of R is measured
    (the learner as it is after experience ``i``; ``experiences`` is ``list(stream)``), e.g. by
    :func:`warpgrad.analysis.probes.probe_matrix` to probe the representation. It must not draw
    from ``generator`` if R is to stay that of a run without it.

    Raises:
        TrainingDiverged: naming ``name`` and the experience, when its training loss is not finite.
    """
    experiences = list(stream)
    masks = [output_mask(stream, e) for e in experiences]
    rows = []
    for i, (experience, classes) in enumerate(zip(experiences, masks)):
        metrics = learner.train_experience(
            experience.train_x, experience.train_y, generator, epochs=epochs, batch_size=batch_size, classes=classes
        )
        loss = {"mean training loss": metrics["loss"]} if metrics and "loss" in metrics else {}
        check_finite(name, f"experience {i + 1} of {len(experiences)}", loss)
        index = torch.randperm(experience.train_x.shape[0], generator=generator)[:fisher_samples]
        learner.end_experience(experience.train_x[index], experience.train_y[index], generator, classes=classes)
        rows.append([accuracy(learner, e.test_x, e.test_y, classes=m) for e, m in zip(experiences, masks)])
        if after_experience is not None:
            after_experience(i, experiences)
    return torch.tensor(rows, dtype=torch.float64)


def run_streams(
    experiment: Any,
    methods: list[str],
    profile: Any,
    seed: int,
    out_dir: str | Path,
    progress: bool = True,
    overwrite: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Run ``methods`` of a stream experiment; write and return the merged results.

    A method that already ran in ``out_dir`` is refused unless ``overwrite``. Each method's entry
    (and its heatmap) is written when it finishes, so a failure keeps the methods before it; a
    non-finite training loss stops the run (:class:`~warpgrad.errors.TrainingDiverged`).
    """
    out_dir = check_out_dir(out_dir)
    o = profile.options
    record = ResultsRecord(out_dir, experiment, profile, seed, command=command)  # checked before minutes of work
    start_fresh(record, methods, overwrite)
    results: dict[str, Any] = {}
    with torch_threads(o.get("threads")):  # nothing is written before the first method's entry
        for method in methods:  # each method's entry is recorded as soon as it finishes
            results = record.add({method: _run_method(experiment, method, profile, seed, out_dir, progress)})
    return results


def _run_method(experiment: Any, method: str, profile: Any, seed: int, out_dir: Path, progress: bool) -> dict:
    """One method's ``runs`` streams: its results entry (and its heatmap, written to ``out_dir``)."""
    o = profile.options
    started = time.perf_counter()
    matrices, summaries = [], []
    probes, probe_forgetting = [], []
    probe_samples = int(o.get("probe_samples") or 0)  # opt-in: linear probes of the representation
    for r in tqdm(range(o["runs"]), desc=f"{experiment.name}/{method}", unit="run", disable=not progress):
        run_seed = seed + r
        stream = experiment.make_stream(profile, run_seed)
        torch.manual_seed(run_seed)
        learner = experiment.method(method).build(profile)
        generator = torch.Generator().manual_seed(run_seed)
        if probe_samples > 0:
            from warpgrad.analysis.probes import probe_matrix, representational_forgetting

            R, P = probe_matrix(
                learner,
                stream,
                generator,
                o["epochs"],
                o["batch_size"],
                o["fisher_samples"],
                probe_samples=probe_samples,
                probe_generator=torch.Generator().manual_seed(run_seed),
                name=f"{method} (run {r + 1})",
            )
            probes.append(P)
            probe_forgetting.append(representational_forgetting(P))
        else:
            R = accuracy_matrix_of(
                learner, stream, generator, o["epochs"], o["batch_size"], o["fisher_samples"], f"{method} (run {r + 1})"
            )
        matrices.append(R)
        summaries.append(summarize(R))
    mean_R = torch.stack(matrices).mean(0)
    plot_accuracy_matrix(
        mean_R,
        out_dir / f"accuracy_matrix_{method}.png",
        f"{experiment.name}: {method} (mean of {len(matrices)} runs)",
    )
    average = torch.tensor([s["average_accuracy"] for s in summaries], dtype=torch.float64)
    mean, ci95 = mean_ci95(average)
    extra_keys: list[str] = ["forgetting", "backward_transfer", "learning_accuracy"]
    entry: dict[str, Any] = {
        "metric": "average_accuracy",
        "lower_is_better": False,
        "mean": mean,
        "ci95": ci95,
        "n_tasks": len(matrices),
        "steps": int(mean_R.shape[0]),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "per_task": average.tolist(),
        "extra": {key: mean_ci95_entry([s[key] for s in summaries]) for key in extra_keys},
        "accuracy_matrix": mean_R.tolist(),
    }
    if probes:
        mean_P = torch.stack(probes).mean(0)
        entry["extra"]["representational_forgetting"] = mean_ci95_entry(probe_forgetting)
        entry["probe_matrix"] = mean_P.tolist()
        plot_accuracy_matrix(
            mean_P,
            out_dir / f"probe_matrix_{method}.png",
            f"{experiment.name}: {method}, linear probes on the representation (mean of {len(probes)} runs)",
        )
    return entry


run = run_streams  # the runner protocol of warpgrad.experiments.StreamExperiment


def outputs(out_dir: str | Path) -> str:
    """What a stream run writes, for the CLI."""
    return f"results: {Path(out_dir) / RESULTS_FILE}\naccuracy matrices: {Path(out_dir)}/accuracy_matrix_METHOD.png"


def table(results: dict[str, Any]) -> str:
    """The comparison table, forgetting and the other stream metrics beside average accuracy (titled
    "validation" for runs evaluated on held-out training images, ``--set validation=FRACTION``)."""
    text = format_table(results)
    held_out = re.search(r"(?:^|,)validation=([^,]+)", results.get("settings") or "")
    if held_out and float(held_out.group(1)) > 0:
        title, rest = text.split("\n", 1)
        title = title.replace(": test ", f": validation ({held_out.group(1)} of the training images) ", 1)
        text = f"{title}\n{rest}"
    return text
