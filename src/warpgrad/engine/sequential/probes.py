"""Representational forgetting in the sequential (OML/ANML) meta-test: linear probes after each group of classes.

In the meta-test a learner learns ``n`` test classes online, one after another. With the profile
option ``probe_samples`` (> 0) the classes are cut into ``probe_groups`` consecutive groups of
(nearly) equal size (:func:`group_ends`: 50 classes, 5 groups → after classes 10, 20, 30, 40, 50;
the streams' experiments also have 5 experiences), and after the last class of group ``i`` the
learner's *current* representation is probed (:class:`StreamProbe`), with
:func:`warpgrad.analysis.probes.probe_accuracy` (the streams' probe: multinomial logistic
regression on standardised features, fitted by L-BFGS, deterministic):

- ``P[i, j]``: a probe telling apart the classes of group ``j``, fitted on the first
  ``probe_samples`` stream images of each (all of them if fewer; the stream is already in random
  order), scored on their held-out images. Like the streams' ``P``, entries ``i < j`` probe a
  representation that has not seen group ``j`` yet;
- ``R[i, j]``: the output accuracy at the same points: the learner's own prediction (arg-max over
  all its outputs, as the protocol scores it) on group ``j``'s held-out images; for ``j ≤ i`` the
  per-class accuracies of the meta-test averaged over the group;
- ``curve[i]``: one probe telling apart *every* class seen so far (groups ``0..i``), fitted and
  scored the same way: what a re-fitted output layer reads from the representation, next to the
  meta-test's held-out accuracy after the same class.

``representational_forgetting`` is :func:`warpgrad.analysis.probes.representational_forgetting`
of ``P`` and ``forgetting`` the same of ``R`` (best earlier accuracy of a group minus its final
one, averaged over all but the last group).

The representation: OML's RLN output, ANML's neuromodulated features ``h ⊙ m`` (both
``frozen_features``), and for the baselines the input of the last linear layer (``sgd``: the
network's body as it is being trained online; ``pretrain``: its frozen body). A learner takes part
through a keyword ``after_class`` of its ``meta_test``, called after each class ``c`` with
``(c, represent, head)``: ``represent`` maps images to the current representation and ``head``
maps that representation to the current logits. Probing reads the learner and changes nothing:
its meta-test results are the same with and without probes.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from warpgrad.analysis.probes import probe_accuracy, representational_forgetting
from warpgrad.errors import UsageError

Represent = Callable[[Tensor], Tensor]
AfterClass = Callable[[int, Represent, Represent], None]

__all__ = ["group_ends", "StreamProbe", "summarize_probes", "add_probes", "plot_probes", "PROBE_PLOT_FILE"]


def group_ends(n_classes: int, groups: int) -> list[int]:
    """The number of classes seen at the end of each of ``min(groups, n_classes)`` consecutive
    groups of nearly equal size: ``group_ends(50, 5) == [10, 20, 30, 40, 50]``.

    Raises:
        UsageError: if ``n_classes`` or ``groups`` is not a positive integer.
    """
    for name, value in (("n_classes", n_classes), ("probe_groups", groups)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value!r}")
    g = min(groups, n_classes)
    return [round((k + 1) * n_classes / g) for k in range(g)]


class StreamProbe:
    """Probes one meta-test stream: pass the object as ``after_class`` (see the module docstring).

    Args:
        stream: the stream's experiences, one per class in order (``train_x`` the stream images,
            ``test_x`` the held-out images, ``train_y[0]`` the label).
        probe_samples: stream images per class to fit the probes on (the first ones).
        groups: number of groups (:func:`group_ends`).
    """

    def __init__(self, stream: Sequence[Any], probe_samples: int, groups: int):
        if not isinstance(probe_samples, int) or probe_samples < 1:
            raise UsageError(f"probe_samples must be a positive integer, got {probe_samples!r}")
        self.experiences = list(stream)
        self.ends = group_ends(len(self.experiences), groups)
        self.starts = [0, *self.ends[:-1]]
        self.labels = [int(e.train_y[0]) for e in self.experiences]
        self.probe_x = [e.train_x[:probe_samples] for e in self.experiences]
        self.R: list[list[float]] = []
        self.P: list[list[float]] = []
        self.curve: list[float] = []

    def __call__(self, c: int, represent: Represent, head: Represent) -> None:
        if c + 1 not in self.ends:
            return
        with torch.no_grad():
            fit = [represent(x).flatten(1) for x in self.probe_x]
            held_out = [represent(e.test_x).flatten(1) for e in self.experiences]
            predicted = [head(f).argmax(-1) for f in held_out]
        fit_y = [torch.full((f.shape[0],), y, dtype=torch.long) for f, y in zip(fit, self.labels)]
        test_y = [torch.full((f.shape[0],), y, dtype=torch.long) for f, y in zip(held_out, self.labels)]

        def probe(lo: int, hi: int) -> float:
            return probe_accuracy(
                torch.cat(fit[lo:hi]), torch.cat(fit_y[lo:hi]), torch.cat(held_out[lo:hi]), torch.cat(test_y[lo:hi])
            )

        def output(lo: int, hi: int) -> float:
            correct = torch.cat([p == y for p, y in zip(predicted[lo:hi], test_y[lo:hi])])
            return float(correct.double().mean())

        groups = list(zip(self.starts, self.ends))
        self.P.append([probe(lo, hi) for lo, hi in groups])
        self.R.append([output(lo, hi) for lo, hi in groups])
        self.curve.append(probe(0, c + 1))

    def result(self) -> dict[str, Tensor]:
        """``R``, ``P`` (``[groups, groups]``), ``curve`` (``[groups]``), float64.

        Raises:
            UsageError: if the stream was not probed after every group (the meta-test stopped early
                or the learner never called ``after_class``).
        """
        if len(self.P) != len(self.ends):
            raise UsageError(
                f"the meta-test probed {len(self.P)} of {len(self.ends)} groups: the learner's meta_test must call "
                "after_class after every class"
            )
        as_tensor = lambda rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731
        return {"R": as_tensor(self.R), "P": as_tensor(self.P), "curve": as_tensor(self.curve)}


def summarize_probes(results: Sequence[dict[str, Tensor]], ends: Sequence[int]) -> dict[str, Any]:
    """Per-run forgetting of ``R`` and ``P`` and the means over runs of ``R``, ``P`` and the probe curve."""
    from warpgrad.continual.metrics import forgetting

    stack = {key: torch.stack([r[key] for r in results]) for key in ("R", "P", "curve")}
    return {
        "points": list(ends),
        "forgetting": [forgetting(r["R"]) for r in results],
        "representational_forgetting": [representational_forgetting(r["P"]) for r in results],
        "probe_final": stack["curve"][:, -1],
        "accuracy_matrix": stack["R"].mean(0),
        "probe_matrix": stack["P"].mean(0),
        "probe_curve": stack["curve"].mean(0),
    }


# ------------------------------------------------------------------------------ results and plots

PROBE_PLOT_FILE = "probes_vs_classes.png"


def add_probes(entry: dict[str, Any], probes: dict[str, Any], probe_samples: int) -> None:
    """Record :func:`summarize_probes`' ``probes`` in a method's results ``entry``: under ``extra``
    the (output) ``forgetting``, the ``representational_forgetting`` and ``probe_accuracy`` (the
    probe on every class after the stream), each mean ± 95% CI over runs; the mean matrices and
    the probe curve with the points (classes seen) where the learner was probed."""
    from warpgrad.engine.results import mean_ci95_entry

    entry.setdefault("extra", {}).update(
        {
            "forgetting": mean_ci95_entry(probes["forgetting"]),
            "representational_forgetting": mean_ci95_entry(probes["representational_forgetting"]),
            "probe_accuracy": mean_ci95_entry(probes["probe_final"]),
        }
    )
    entry["probes"] = {
        "samples_per_class": probe_samples,
        "points": list(probes["points"]),
        "curve": probes["probe_curve"].tolist(),
        "accuracy_matrix": probes["accuracy_matrix"].tolist(),
        "probe_matrix": probes["probe_matrix"].tolist(),
    }


def plot_probes(results: dict[str, Any], out_dir: Any) -> None:
    """``probes_vs_classes.png`` (output curve and probe curve of every probed method) and, per
    method, the mean ``R`` and ``P`` over groups of classes (``accuracy_matrix_METHOD.png``,
    ``probe_matrix_METHOD.png``) in ``out_dir``."""
    from pathlib import Path

    from warpgrad.continual.metrics import plot_accuracy_matrix, plot_output_and_probe_curves

    out_dir = Path(out_dir)
    probed = {name: e for name, e in results["methods"].items() if e.get("probes") and e.get("curve")}
    curves = {
        name: (list(enumerate(e["curve"], start=1)), list(zip(e["probes"]["points"], e["probes"]["curve"])))
        for name, e in probed.items()
    }
    name = f"{results.get('experiment')} ({results.get('profile')})"
    plot_output_and_probe_curves(curves, out_dir / PROBE_PLOT_FILE, f"{name}: held-out accuracy, mean over runs")
    for method, e in probed.items():
        groups = f"groups of classes ending at {e['probes']['points']}"
        for key, what in (("accuracy_matrix", "output"), ("probe_matrix", "linear probes")):
            plot_accuracy_matrix(
                e["probes"][key], out_dir / f"{key}_{method}.png", f"{name}: {method}, {what}\n{groups}"
            )
