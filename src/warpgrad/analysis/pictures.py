"""The pictures of ``warpgrad analyze``, drawn from its report (``representations.json``).

- :func:`plot_heatmap`: one method's layers x inner steps, linear CKA to step 0 in the cells;
  warp layers are marked ``(warp)``, or left out with ``warps=False``.
- :func:`plot_mds`: classical MDS (:func:`classical_mds`) of ``1 - RSA`` between the RDMs of every
  (method, layer, inner step) on one task.
- :func:`plot_meta_training`: per method, each layer's change after K inner steps (``1 - CKA``)
  against the meta-training step of the learner's snapshot; warp layers dashed.

Matplotlib's ``Figure`` is used without pyplot, so a user's backend is left alone.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from warpgrad.analysis.similarity import rsa
from warpgrad.errors import UsageError
from warpgrad.files import atomic_write


def classical_mds(d: Tensor, dims: int = 2) -> Tensor:
    """Classical (Torgerson) MDS: ``(n, dims)`` coordinates whose distances approximate ``d`` ``(n, n)``."""
    d = torch.as_tensor(d, dtype=torch.float64)
    n = d.shape[0]
    j = torch.eye(n, dtype=torch.float64) - 1.0 / n
    b = -0.5 * j @ (d**2) @ j
    values, vectors = torch.linalg.eigh((b + b.T) / 2)
    order = torch.argsort(values, descending=True)[:dims]
    coords = vectors[:, order] * values[order].clamp(min=0).sqrt()
    if coords.shape[1] < dims:
        coords = torch.cat([coords, torch.zeros(n, dims - coords.shape[1], dtype=torch.float64)], dim=1)
    return coords


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def shown_layers(report: dict[str, Any], method: str, table: dict[str, Any], warps: bool = True) -> list[str]:
    """The layers of ``table`` (one of ``method``'s) to show: all, or without its warp layers."""
    excluded = set() if warps else set(report["warp_layers"].get(method, []))
    return [layer for layer in table if layer not in excluded]


def _label(report: dict[str, Any], method: str, layer: str) -> str:
    return f"{layer} (warp)" if layer in report["warp_layers"].get(method, []) else layer


def plot_heatmap(report: dict[str, Any], method: str, path: Path, warps: bool = True) -> None:
    """Layers x inner steps of ``method``'s final learner, CKA against step 0 written in the cells."""
    from matplotlib.figure import Figure

    table = report["methods"][method]
    layers, steps = shown_layers(report, method, table, warps), report["steps"]
    values = [[table[layer][str(s)]["cka"] for s in steps] for layer in layers]
    grid = [[float("nan") if v is None else v for v in row] for row in values]
    labels = [_label(report, method, layer) for layer in layers]
    width = 2.2 + 0.07 * max(map(len, labels), default=0) + 0.9 * len(steps)  # labels, cells and colour bar
    figure = Figure(figsize=(width, 1.2 + 0.45 * len(layers)), dpi=120)
    axes = figure.subplots()
    image = axes.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            text = "n/a" if v is None else f"{v:.3f}"
            axes.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if (v or 0) < 0.6 else "black")
    axes.set_xticks(range(len(steps)), [str(s) for s in steps])
    axes.set_yticks(range(len(layers)), labels)
    axes.set_xlabel("inner steps")
    axes.set_title(f"{method}: linear CKA vs step 0" + ("" if warps else " (warps left out)"), fontsize=10)
    figure.colorbar(image, ax=axes)
    _save(figure, path)


def plot_mds(rdms: dict[tuple[str, str, int], Tensor], path: Path) -> None:
    """Classical MDS of ``1 - RSA`` between the RDMs (one task) of every (method, layer, step)."""
    from matplotlib.figure import Figure

    keys = list(rdms)
    n = len(keys)
    d = torch.zeros(n, n, dtype=torch.float64)
    for a in range(n):
        for b in range(a + 1, n):
            try:
                similarity = float(rsa(rdms[keys[a]], rdms[keys[b]]))
            except UsageError:  # undefined (a constant upper triangle): as far as uncorrelated
                similarity = 0.0
            d[a, b] = d[b, a] = 1.0 - similarity
    figure = Figure(figsize=(6.4, 5.2), dpi=120)
    axes = figure.subplots()
    if n >= 2:
        coords = classical_mds(d)
        methods = sorted({m for m, _, _ in keys}, key=[m for m, _, _ in keys].index)
        for method in methods:
            for layer in sorted({lyr for m, lyr, _ in keys if m == method}, key=[lyr for _, lyr, _ in keys].index):
                idx = [i for i, (m, lyr, _) in enumerate(keys) if m == method and lyr == layer]
                axes.plot(
                    coords[idx, 0], coords[idx, 1], marker="o", markersize=3, linewidth=1, label=f"{method} {layer}"
                )
                last = idx[-1]
                axes.annotate(f"s={keys[last][2]}", (float(coords[last, 0]), float(coords[last, 1])), fontsize=6)
        axes.legend(fontsize=6, loc="best")
    axes.set_title("classical MDS of 1 - RSA (first task; lines: inner steps)", fontsize=10)
    _save(figure, path)


def meta_training_curves(report: dict[str, Any], method: str) -> dict[str, list[tuple[int, float]]]:
    """``{layer: [(meta-step, 1 - CKA after K inner steps), ...]}`` over ``method``'s snapshots and
    its final learner (a snapshot of the final step counts once); undefined CKAs are left out."""
    k = str(report["steps"][-1])
    tables = {int(step): table for step, table in report.get("snapshots", {}).get(method, {}).items()}
    tables.setdefault(int(report["final_step"][method]), report["methods"][method])
    curves: dict[str, list[tuple[int, float]]] = {}
    for step in sorted(tables):
        for layer, row in tables[step].items():
            cka = row[k]["cka"]
            if cka is not None:
                curves.setdefault(layer, []).append((step, round(1.0 - cka, 10)))
    return curves


def plot_meta_training(report: dict[str, Any], path: Path, warps: bool = True) -> None:
    """One panel per method: each layer's ``1 - CKA`` after K inner steps against the meta-training step."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    methods = list(report["methods"])
    columns = min(3, len(methods))
    rows = math.ceil(len(methods) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.4 * rows), dpi=110)
    grid = figure.subplots(rows, columns, squeeze=False, sharey=True)  # methods compared on one scale
    k = report["steps"][-1]
    top = 0.0
    for index, method in enumerate(methods):
        axes = grid[index // columns][index % columns]
        curves = meta_training_curves(report, method)
        layers = shown_layers(report, method, curves, warps)
        colours = colormaps["viridis"]
        for depth, layer in enumerate(layers):
            steps, changes = zip(*curves[layer])
            warp = layer in report["warp_layers"].get(method, [])
            top = max(top, *changes)
            axes.plot(
                steps,
                changes,
                marker="o",
                markersize=3,
                linewidth=1,
                linestyle="--" if warp else "-",
                color=colours(depth / max(1, len(layers) - 1)),
                label=_label(report, method, layer),
            )
        axes.set_title(method, fontsize=10)
        axes.set_xlabel("meta-training step")
        if index % columns == 0:
            axes.set_ylabel(f"1 - CKA after {k} inner steps")
        axes.legend(fontsize=5, loc="best")
    grid[0][0].set_ylim(0.0, 1.05 * top if top > 0 else 1.0)  # shared by every panel
    for index in range(len(methods), rows * columns):
        grid[index // columns][index % columns].axis("off")
    figure.suptitle(f"{report['experiment']}: how much the inner loop changes each layer, over meta-training")
    _save(figure, path)
