"""Continual-learning metrics on the accuracy matrix, and their plots.

Convention: ``R[i, j]`` is the accuracy on experience ``j``'s test set after training on
experiences ``0..i`` (a float tensor ``[T, T]``; :func:`accuracy_matrix` builds and checks one).
The scalar metrics use the last row (after the whole stream), the diagonal (just after learning
each experience) and, for forgetting, the rows in between. ``T = 1`` has no earlier experience
to forget or transfer to: forgetting and backward transfer are then defined as 0.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import Tensor

from warpgrad.errors import UsageError


def accuracy_matrix(rows: Tensor | Sequence[Sequence[float]]) -> Tensor:
    """Check and convert an accuracy matrix: ``R[i, j]`` = accuracy on experience ``j``'s test set
    after training on experiences ``0..i``. Returns a float64 tensor ``[T, T]``, ``T ≥ 1``."""
    R = torch.as_tensor(rows, dtype=torch.float64)
    if R.dim() != 2 or R.shape[0] != R.shape[1] or R.shape[0] < 1:
        raise UsageError(f"an accuracy matrix must be square [T, T] with T >= 1, got shape {tuple(R.shape)}")
    return R


def average_accuracy(R: Tensor | Sequence[Sequence[float]]) -> float:
    """Average accuracy after the whole stream: ``ACC = (1/T) Σ_j R[T−1, j]``.

    Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017.
    """
    R = accuracy_matrix(R)
    return float(R[-1].mean())


def learning_accuracy(R: Tensor | Sequence[Sequence[float]]) -> float:
    """Accuracy just after learning each experience: ``LA = (1/T) Σ_j R[j, j]``.

    Riemer et al., "Learning to Learn without Forgetting by Maximizing Transfer and Minimizing
    Interference", ICLR 2019 (learning accuracy); the diagonal of Lopez-Paz & Ranzato 2017.
    """
    R = accuracy_matrix(R)
    return float(torch.diagonal(R).mean())


def forgetting(R: Tensor | Sequence[Sequence[float]]) -> float:
    """Average forgetting: ``F = 1/(T−1) Σ_{j<T−1} (max_{i ∈ j..T−2} R[i, j] − R[T−1, j])``.

    The drop from the best accuracy an experience ever had (before the last one was learned) to
    its final accuracy; 0 when ``T = 1``. Chaudhry, Dokania, Ajanthan & Torr, "Riemannian Walk for
    Incremental Learning: Understanding Forgetting and Intransigence", ECCV 2018.
    """
    R = accuracy_matrix(R)
    T = R.shape[0]
    if T == 1:
        return 0.0
    drops = [float(R[j : T - 1, j].max() - R[T - 1, j]) for j in range(T - 1)]
    return sum(drops) / len(drops)


def backward_transfer(R: Tensor | Sequence[Sequence[float]]) -> float:
    """Backward transfer: ``BWT = 1/(T−1) Σ_{j<T−1} (R[T−1, j] − R[j, j])``.

    Negative values mean forgetting; 0 when ``T = 1``. Lopez-Paz & Ranzato, "Gradient Episodic
    Memory for Continual Learning", NeurIPS 2017.
    """
    R = accuracy_matrix(R)
    T = R.shape[0]
    if T == 1:
        return 0.0
    return float((R[T - 1, : T - 1] - torch.diagonal(R)[: T - 1]).mean())


def summarize(R: Tensor | Sequence[Sequence[float]]) -> dict:
    """All scalar metrics and the matrix itself as a JSON-serialisable dict (for results.json)."""
    R = accuracy_matrix(R)
    return {
        "n_experiences": int(R.shape[0]),
        "average_accuracy": average_accuracy(R),
        "forgetting": forgetting(R),
        "backward_transfer": backward_transfer(R),
        "learning_accuracy": learning_accuracy(R),
        "final_accuracies": [float(v) for v in R[-1]],
        "accuracy_matrix": [[float(v) for v in row] for row in R],
    }


def accuracy_vs_classes(
    R: Tensor | Sequence[Sequence[float]],
    test_counts: Sequence[int] | None = None,
    at: Sequence[int] | None = None,
) -> list[tuple[int, float]]:
    """Accuracy on all classes seen so far, after each class (the OML/ANML meta-test curve).

    For a class-sequence stream (one class per experience, e.g.
    :func:`warpgrad.tasks.continual.class_sequence_stream`), the accuracy after ``n`` classes is
    the accuracy over the pooled test sets of classes ``0..n−1``:
    ``Σ_{j<n} c_j R[n−1, j] / Σ_{j<n} c_j`` with ``c_j`` = ``test_counts[j]`` (equal weights by
    default).

    Args:
        R: accuracy matrix ``[T, T]``; only the rows named by ``at`` are read (others may be NaN,
            so long streams need only be evaluated at a few points).
        test_counts: test images per class, to weight the pooled accuracy.
        at: the numbers of classes seen at which to report (default ``1..T``).

    Returns:
        ``[(n_classes_seen, accuracy), ...]`` in the order of ``at``.
    """
    R = torch.as_tensor(R, dtype=torch.float64)
    if R.dim() != 2 or R.shape[0] != R.shape[1] or R.shape[0] < 1:
        raise UsageError(f"an accuracy matrix must be square [T, T] with T >= 1, got shape {tuple(R.shape)}")
    T = R.shape[0]
    counts = [1] * T if test_counts is None else test_counts
    weights = torch.as_tensor(counts, dtype=torch.float64)
    if weights.shape != (T,) or bool((weights < 0).any()):
        raise UsageError(f"test_counts must be {T} non-negative counts, got {list(test_counts or [])}")
    points = list(range(1, T + 1)) if at is None else [int(n) for n in at]
    curve = []
    for n in points:
        if not 1 <= n <= T:
            raise UsageError(f"at: {n} classes seen is outside 1..{T}")
        w = weights[:n]
        if float(w.sum()) <= 0:
            raise UsageError(f"no test images among the first {n} classes")
        row = R[n - 1, :n]
        if bool(torch.isnan(row).any()):
            raise UsageError(f"accuracy matrix row {n - 1} (after {n} classes) has NaN among its first {n} entries")
        curve.append((n, float((row * w).sum() / w.sum())))
    return curve


# --------------------------------------------------------------------------- plots


def _save_atomic(fig, path: str | os.PathLike) -> None:
    """Write ``fig`` as a PNG atomically (:func:`warpgrad.engine.checkpoint.atomic_write`)."""
    from warpgrad.engine.checkpoint import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))


def _figure(size: tuple[float, float]):
    # an Agg canvas without pyplot: no global backend switch, no GUI, thread-safe
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def plot_accuracy_matrix(R: Tensor | Sequence[Sequence[float]], path: str | os.PathLike, title: str = "") -> None:
    """Heatmap of ``R`` with each value written in its cell; rows: trained through experience,
    columns: evaluated on experience. Cells above the diagonal (not yet learned) are shown too."""
    R = accuracy_matrix(R)
    T = R.shape[0]
    size = max(3.0, 0.6 * T + 1.5)
    fig = _figure((size + 1.0, size))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(R.numpy(), vmin=0.0, vmax=1.0, cmap="viridis")
    fig.colorbar(image, ax=ax, label="accuracy")
    ax.set_xlabel("evaluated on experience")
    ax.set_ylabel("trained through experience")
    ax.set_xticks(range(T))
    ax.set_yticks(range(T))
    if T <= 20:
        for i in range(T):
            for j in range(T):
                value = float(R[i, j])
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if value > 0.6 else "white",
                )
    if title:
        ax.set_title(title)
    _save_atomic(fig, path)


def plot_accuracy_vs_classes(
    curves: dict[str, list[tuple[int, float]]], path: str | os.PathLike, title: str = ""
) -> None:
    """Accuracy on all classes seen so far against the number of classes, one line per method."""
    if not curves:
        raise UsageError("curves is empty: give at least one method's [(n_classes_seen, accuracy), ...]")
    fig = _figure((6.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for name, curve in curves.items():
        if not curve:
            raise UsageError(f"curve {name!r} has no points")
        xs, ys = zip(*curve)
        ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, label=name)
    ax.set_xlabel("number of classes seen")
    ax.set_ylabel("accuracy on classes seen")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    _save_atomic(fig, path)


def plot_output_and_probe_curves(
    curves: dict[str, tuple[list[tuple[int, float]], list[tuple[int, float]]]],
    path: str | os.PathLike,
    title: str = "",
) -> None:
    """Per method (one colour) the output accuracy on all classes seen (solid) and the accuracy of
    a linear probe on the representation at a few points (dashed, markers), against the number of
    classes seen: ``curves[name] = (output points, probe points)``, each ``[(n_classes_seen, accuracy)]``."""
    if not curves:
        raise UsageError("curves is empty: give at least one method's (output points, probe points)")
    fig = _figure((6.5, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for k, (name, (output, probe)) in enumerate(curves.items()):
        if not output or not probe:
            raise UsageError(f"method {name!r} needs output and probe points")
        colour = f"C{k % 10}"
        ax.plot(*zip(*output), color=colour, label=f"{name}: output")
        ax.plot(*zip(*probe), color=colour, linestyle="--", marker="o", label=f"{name}: linear probe")
    ax.set_xlabel("number of classes seen")
    ax.set_ylabel("accuracy on classes seen")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title, fontsize=9)
    _save_atomic(fig, path)


__all__ = [
    "accuracy_matrix",
    "average_accuracy",
    "learning_accuracy",
    "forgetting",
    "backward_transfer",
    "summarize",
    "accuracy_vs_classes",
    "plot_accuracy_matrix",
    "plot_accuracy_vs_classes",
    "plot_output_and_probe_curves",
]
