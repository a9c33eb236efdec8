"""How the inner loop changes each layer's representation: ``warpgrad analyze RUN_DIR``.

For a run directory written by ``warpgrad run EXPERIMENT --out RUN_DIR`` (``results.json`` and
``METHOD/checkpoint.pt``), every method's learner is rebuilt and loaded from its checkpoint, then
adapted to held-out tasks (drawn with a fixed analysis seed) for ``s`` inner steps, ``s`` in
``{0, 1, K//2, K}`` (``K`` the profile's ``inner_steps``; step 0 is the meta-learned
initialisation). Forward hooks on every leaf module with parameters (``Linear``, ``Conv2d``, the
layers inside warps, ...) capture its output on the task's test inputs. Per method, layer and step:
linear CKA and RSA (Spearman correlation of correlation-distance RDMs, Euclidean for a layer
with one feature) between the representation
at step ``s`` and at step 0, averaged over the tasks.

Outputs (in ``RUN_DIR/analysis`` by default): ``representations.json``, ``cka-METHOD.png`` (layers x
steps heatmap) and ``mds.png`` (classical MDS of ``1 - RSA`` between the RDMs of every (method,
layer, step) on the first task).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from warpgrad.analysis.similarity import linear_cka, rdm, rsa
from warpgrad.core.params import functional_apply
from warpgrad.errors import UsageError
from warpgrad.files import atomic_write, atomic_write_text

ANALYSIS_SEED = 4_000_000  # task draws of the analysis: apart from the engine's val/test/eval seeds
DIGITS = 10  # values are rounded to 10 decimals: roundoff does not make CKA(x, x) differ from 1


def parse_settings(text: str) -> dict[str, str]:
    """``"k=v,k=v"`` (as recorded in results.json) as a dict; a chunk without ``=`` continues the
    previous value (a tuple such as ``hidden=16,16``)."""
    settings: dict[str, str] = {}
    key = None
    for chunk in filter(None, (text or "").split(",")):
        k, sep, v = chunk.partition("=")
        if sep:
            key = k.strip()
            settings[key] = v.strip()
        elif key is not None:
            settings[key] += "," + chunk.strip()
        else:
            raise UsageError(f"cannot parse the settings {text!r}: expected KEY=VALUE,KEY=VALUE")
    return settings


def analysis_steps(k: int) -> list[int]:
    """The inner steps analysed: 0, 1, K//2 and K (without repeats, sorted)."""
    return sorted({0, min(1, k), k // 2, k})


def layer_modules(model: nn.Module) -> dict[str, tuple[nn.Module, bool]]:
    """``{name: (module, inside a warp)}`` of the leaf modules that hold parameters of their own."""
    from warpgrad.layers import Warp

    warp_prefixes = [name for name, m in model.named_modules() if isinstance(m, Warp)]
    layers = {}
    for name, module in model.named_modules():
        if next(module.parameters(recurse=False), None) is None:
            continue
        if next(module.children(), None) is not None:
            continue  # not a leaf
        warp = any(name == p or name.startswith(p + ".") for p in warp_prefixes if p)
        layers[name or "model"] = (module, warp)
    return layers


def capture(
    model: nn.Module, params: dict[str, Tensor], x: Any, layers: dict[str, tuple[nn.Module, bool]]
) -> dict[str, Tensor]:
    """Every layer's output (flattened to ``(examples, features)``, float64) of ``model`` with ``params`` on ``x``."""
    outputs: dict[str, Tensor] = {}
    handles = []
    for name, (module, _) in layers.items():

        def hook(_m: nn.Module, _inputs: Any, output: Any, name: str = name) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            outputs[name] = out.detach().reshape(out.shape[0], -1).to(torch.float64).cpu()

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            functional_apply(model, params, x)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _safe(fn: Any, *args: Any) -> float | None:
    """``fn(*args)``, or None where it is undefined (a representation that is the same for every example)."""
    try:
        return float(fn(*args))
    except UsageError:
        return None


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), DIGITS) if present else None


def load_run(run_dir: Path, settings: dict[str, str] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """``(experiment, profile, results)`` of ``run_dir``; ``settings`` are applied after the run's own."""
    from warpgrad.engine.resolve import resolve_experiment
    from warpgrad.engine.results import read_results
    from warpgrad.experiments.base import Experiment, StreamExperiment

    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} is not a run directory (no such directory)")
    path = run_dir / "results.json"
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a run directory: it has no results.json")
    results = read_results(path)
    experiment = resolve_experiment(results["experiment"])
    if not isinstance(experiment, Experiment) or isinstance(experiment, StreamExperiment):
        raise UsageError(f"{experiment.name} is not a meta-learning experiment with a task family: nothing to analyze")
    profile = experiment.resolve(results["profile"], parse_settings(results.get("settings") or ""))
    if settings:
        profile = profile.with_overrides(settings)
    if "inner_steps" not in profile.options:
        raise UsageError(f"{experiment.name} has no inner loop (no inner_steps option): nothing to analyze")
    return experiment, profile, results


def analyze_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    tasks: int = 8,
    methods: list[str] | None = None,
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Analyze ``run_dir`` (see the module docstring); write the outputs into ``out_dir`` and return the JSON."""
    from warpgrad.engine.checkpoint import load_checkpoint
    from warpgrad.engine.seeding import _generator, _sample_tasks, _task_seeds
    from warpgrad.experiments import build_method
    from warpgrad.methods.base import eval_mode
    from warpgrad.tasks.base import family_split

    if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 1:
        raise UsageError(f"--tasks must be an integer >= 1, got {tasks!r}")
    run_dir = Path(run_dir)
    experiment, profile, results = load_run(run_dir, settings)
    names = list(results["methods"]) if methods is None else methods
    for name in names:
        if name not in results["methods"]:
            raise UsageError(f"method {name!r} is not in {run_dir}; its methods: {', '.join(results['methods'])}")
    family = experiment.make_family(profile)
    if family is None:
        raise UsageError(f"{experiment.name} has no task family: nothing to analyze")
    seed = results["seed"]
    seeds = _task_seeds(_generator(ANALYSIS_SEED + seed), tasks)
    task_list = _sample_tasks(family_split(family, "test"), seeds, range(tasks))
    k = int(profile.options["inner_steps"])
    steps = analysis_steps(k)

    report: dict[str, Any] = {
        "experiment": experiment.name,
        "profile": profile.name,
        "settings": profile.settings,
        "seed": seed,
        "tasks": tasks,
        "analysis_seed": ANALYSIS_SEED + seed,
        "inner_steps": k,
        "steps": steps,
        "rdm": "correlation distance (Euclidean for layers with one feature); RSA: Spearman",
        "warp_layers": {},
        "methods": {},
    }
    first_task_rdms: dict[tuple[str, str, int], Tensor] = {}
    for name in names:
        learner = build_method(experiment, name, profile, seed)
        try:
            learner.load_state_dict(load_checkpoint(run_dir / name / "checkpoint.pt")["learner"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            if isinstance(error, UsageError):
                raise
            detail = " ".join(str(error).split())[:200]
            raise UsageError(f"checkpoint {run_dir / name / 'checkpoint.pt'} does not fit {name}: {detail}") from None
        model = learner.model
        layers = layer_modules(model)
        all_params = dict(model.named_parameters())
        cka: dict[str, dict[int, list[float | None]]] = {layer: {s: [] for s in steps} for layer in layers}
        rsas: dict[str, dict[int, list[float | None]]] = {layer: {s: [] for s in steps} for layer in layers}
        with eval_mode(model):
            for index, (task, (_, batch_seed)) in enumerate(zip(task_list, seeds)):
                x = task.test_batch()[0]
                reps: dict[int, dict[str, Tensor]] = {}
                for s in steps:
                    # the same training batches for every s: the first s batches of one stream
                    adapted = learner.adapt(task, _generator(batch_seed), steps=s)
                    params = {k_: v.detach() for k_, v in {**all_params, **adapted}.items()}
                    reps[s] = capture(model, params, x, layers)
                for layer in layers:
                    base, base_rdm = reps[0][layer], _safe_rdm(reps[0][layer])
                    for s in steps:
                        rep = reps[s][layer]
                        this_rdm = base_rdm if s == 0 else _safe_rdm(rep)
                        cka[layer][s].append(_safe(linear_cka, base, rep))
                        both = base_rdm is not None and this_rdm is not None
                        rsas[layer][s].append(_safe(rsa, base_rdm, this_rdm) if both else None)
                        if index == 0 and this_rdm is not None:
                            first_task_rdms[(name, layer, s)] = this_rdm
        report["warp_layers"][name] = [layer for layer, (_, warp) in layers.items() if warp]
        report["methods"][name] = {
            layer: {str(s): {"cka": _mean(cka[layer][s]), "rsa": _mean(rsas[layer][s])} for s in steps}
            for layer in layers
        }

    out = run_dir / "analysis" if out_dir is None else Path(out_dir)
    atomic_write_text(out / "representations.json", json.dumps(report, indent=2) + "\n")
    for name in names:
        plot_heatmap(report, name, out / f"cka-{name}.png")
    plot_mds(first_task_rdms, out / "mds.png")
    return report


def _safe_rdm(x: Tensor) -> Tensor | None:
    """The correlation RDM of ``x`` (Euclidean for one feature, where correlation is undefined);
    None when its upper triangle is constant (RSA undefined)."""
    rep = rdm(x, "correlation" if x.shape[1] > 1 else "euclidean")
    i, j = torch.triu_indices(rep.shape[0], rep.shape[0], offset=1)
    upper = rep[i, j]
    return None if upper.numel() == 0 or bool((upper == upper[0]).all()) else rep


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


def plot_heatmap(report: dict[str, Any], method: str, path: Path) -> None:
    """Layers x inner steps, CKA against step 0 written in the cells."""
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    table = report["methods"][method]
    layers, steps = list(table), report["steps"]
    values = [[table[layer][str(s)]["cka"] for s in steps] for layer in layers]
    grid = [[float("nan") if v is None else v for v in row] for row in values]
    figure = Figure(figsize=(1.2 + 0.9 * len(steps), 1.2 + 0.45 * len(layers)), dpi=120)
    axes = figure.subplots()
    image = axes.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            text = "n/a" if v is None else f"{v:.3f}"
            axes.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if (v or 0) < 0.6 else "black")
    warps = set(report["warp_layers"].get(method, []))
    axes.set_xticks(range(len(steps)), [str(s) for s in steps])
    axes.set_yticks(range(len(layers)), [f"{layer} (warp)" if layer in warps else layer for layer in layers])
    axes.set_xlabel("inner steps")
    axes.set_title(f"{method}: linear CKA vs step 0", fontsize=10)
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
            d[a, b] = d[b, a] = 1.0 - (_safe(rsa, rdms[keys[a]], rdms[keys[b]]) or 0.0)
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


def summary(report: dict[str, Any]) -> str:
    """A text table per method: layers x steps, ``CKA / RSA``."""
    lines = [
        f"{report['experiment']} ({report['profile']} profile, seed {report['seed']}): "
        f"representation at inner step s vs step 0, mean over {report['tasks']} tasks (linear CKA / RSA)"
    ]
    for method, table in report["methods"].items():
        warps = set(report["warp_layers"].get(method, []))
        lines.append(f"{method}:")
        width = max(len(layer) + 7 for layer in table)
        lines.append("  " + "layer".ljust(width) + "".join(f"  s={s}".rjust(16) for s in report["steps"]))
        for layer, row in table.items():
            label = f"{layer} (warp)" if layer in warps else layer
            cells = []
            for s in report["steps"]:
                c, r = row[str(s)]["cka"], row[str(s)]["rsa"]
                cells.append(
                    (f"{c:.3f}" if c is not None else "n/a") + " / " + (f"{r:.3f}" if r is not None else "n/a")
                )
            lines.append("  " + label.ljust(width) + "".join(cell.rjust(16) for cell in cells))
    return "\n".join(lines)
