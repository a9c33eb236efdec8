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

Snapshots: where the run kept the learner during meta-training (``--set snapshot_every=N``,
:mod:`warpgrad.engine.snapshots`), each snapshot is analysed the same way, against its own
initialisation (the learner of that meta-step, before any inner step).

Warp layers (the leaf layers inside a :class:`~warpgrad.layers.Warp`) are analysed like any layer
and listed in ``warp_layers``; the heatmaps, the printed table and ``meta_training.png`` mark them,
and a method with warps gets a second heatmap without them (its task layers only, comparable
layer by layer with a method that has none).

Outputs (in ``RUN_DIR/analysis`` by default): ``representations.json`` (``methods``: the final
learner, ``METHOD -> layer -> s -> {cka, rsa}``; ``final_step``: its meta-step; ``snapshots``:
``METHOD -> meta-step -> layer -> s -> {cka, rsa}``; ``warp_layers``), ``cka-METHOD.png`` (layers x
steps heatmap; ``cka-METHOD-without-warps.png`` as well for a method with warps), ``mds.png``
(classical MDS of ``1 - RSA`` between the RDMs of every (method, layer, step) of the final
learners on the first task) and, with snapshots, ``meta_training.png`` (per method, each layer's
``1 - CKA`` after K inner steps against the meta-training step).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from warpgrad.analysis.pictures import plot_heatmap, plot_mds, plot_meta_training, shown_layers
from warpgrad.analysis.similarity import linear_cka, rdm, rsa
from warpgrad.core.params import functional_apply
from warpgrad.errors import UsageError
from warpgrad.files import atomic_write_text

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


def _load_learner(learner: Any, state: Any, path: Path, name: str) -> None:
    try:
        learner.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        if isinstance(error, UsageError):
            raise
        detail = " ".join(str(error).split())[:200]
        raise UsageError(f"checkpoint {path} does not fit {name}: {detail}") from None


def measure(
    learner: Any,
    tasks: list[Any],
    batch_seeds: list[int],
    steps: list[int],
    rdms: dict[int, dict[tuple[str, int], Tensor]] | None = None,
) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{layer: {str(s): {"cka", "rsa"}}}``: each layer's representation of every task's test inputs
    after ``s`` inner steps vs after 0, averaged over ``tasks``; the first task's RDMs into ``rdms``."""
    from warpgrad.engine.seeding import _generator
    from warpgrad.methods.base import eval_mode

    model = learner.model
    layers = layer_modules(model)
    all_params = dict(model.named_parameters())
    cka: dict[str, dict[int, list[float | None]]] = {layer: {s: [] for s in steps} for layer in layers}
    rsas: dict[str, dict[int, list[float | None]]] = {layer: {s: [] for s in steps} for layer in layers}
    with eval_mode(model):
        for index, (task, batch_seed) in enumerate(zip(tasks, batch_seeds)):
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
                    if rdms is not None and index == 0 and this_rdm is not None:
                        rdms.setdefault(index, {})[(layer, s)] = this_rdm
    return {
        layer: {str(s): {"cka": _mean(cka[layer][s]), "rsa": _mean(rsas[layer][s])} for s in steps} for layer in layers
    }


def analyze_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    tasks: int = 8,
    methods: list[str] | None = None,
    settings: dict[str, str] | None = None,
    snapshots: bool = True,
) -> dict[str, Any]:
    """Analyze ``run_dir`` (see the module docstring); write the outputs into ``out_dir`` and return the JSON.

    With ``snapshots`` (the default) every snapshot a method kept (``--set snapshot_every=N``) is
    analysed as well, under ``report["snapshots"][METHOD][META_STEP]``.
    """
    from warpgrad.engine.checkpoint import load_checkpoint
    from warpgrad.engine.seeding import _generator, _sample_tasks, _task_seeds
    from warpgrad.engine.snapshots import list_snapshots, load_snapshot
    from warpgrad.experiments import build_method
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
    batch_seeds = [batch_seed for _, batch_seed in seeds]
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
        "final_step": {},
        "snapshots": {},
    }
    first_task_rdms: dict[tuple[str, str, int], Tensor] = {}
    for name in names:
        learner = build_method(experiment, name, profile, seed)
        path = run_dir / name / "checkpoint.pt"
        checkpoint = load_checkpoint(path)
        _load_learner(learner, checkpoint["learner"], path, name)
        rdms: dict[int, dict[tuple[str, int], Tensor]] = {}
        report["methods"][name] = measure(learner, task_list, batch_seeds, steps, rdms)
        report["final_step"][name] = int(checkpoint["step"])
        report["warp_layers"][name] = [layer for layer, (_, warp) in layer_modules(learner.model).items() if warp]
        first_task_rdms.update({(name, layer, s): rdm_ for (layer, s), rdm_ in rdms.get(0, {}).items()})
        # the snapshots were written by this run: the same experiment, method, profile, seed and settings
        config = {**{key: results[key] for key in ("experiment", "profile", "seed", "settings")}, "method": name}
        report["snapshots"][name] = {}
        for meta_step, snapshot_path in (list_snapshots(run_dir, name) if snapshots else {}).items():
            _load_learner(learner, load_snapshot(snapshot_path, config)["learner"], snapshot_path, name)
            report["snapshots"][name][str(meta_step)] = measure(learner, task_list, batch_seeds, steps)

    out = run_dir / "analysis" if out_dir is None else Path(out_dir)
    atomic_write_text(out / "representations.json", json.dumps(report, indent=2) + "\n")
    for name in names:
        plot_heatmap(report, name, out / f"cka-{name}.png")
        if report["warp_layers"][name]:
            plot_heatmap(report, name, out / f"cka-{name}-without-warps.png", warps=False)
    plot_mds(first_task_rdms, out / "mds.png")
    if any(report["snapshots"].values()):
        plot_meta_training(report, out / "meta_training.png")
    return report


def _safe_rdm(x: Tensor) -> Tensor | None:
    """The correlation RDM of ``x`` (Euclidean for one feature, where correlation is undefined);
    None when its upper triangle is constant (RSA undefined)."""
    rep = rdm(x, "correlation" if x.shape[1] > 1 else "euclidean")
    i, j = torch.triu_indices(rep.shape[0], rep.shape[0], offset=1)
    upper = rep[i, j]
    return None if upper.numel() == 0 or bool((upper == upper[0]).all()) else rep


def _cell(c: float | None, r: float | None) -> str:
    return (f"{c:.3f}" if c is not None else "n/a") + " / " + (f"{r:.3f}" if r is not None else "n/a")


def summary(report: dict[str, Any], warps: bool = True) -> str:
    """A text table per method: layers x steps, ``CKA / RSA``; then, where the run kept snapshots,
    linear CKA after K steps per layer and meta-training step. ``warps=False`` leaves warp layers out."""
    lines = [
        f"{report['experiment']} ({report['profile']} profile, seed {report['seed']}): "
        f"representation at inner step s vs step 0, mean over {report['tasks']} tasks (linear CKA / RSA)"
    ]
    for method, table in report["methods"].items():
        layers = shown_layers(report, method, table, warps)
        warp_layers = set(report["warp_layers"].get(method, []))
        labels = {layer: f"{layer} (warp)" if layer in warp_layers else layer for layer in layers}
        width = max([len(label) for label in labels.values()] + [5])
        lines.append(f"{method}:")
        lines.append("  " + "layer".ljust(width) + "".join(f"  s={s}".rjust(16) for s in report["steps"]))
        for layer in layers:
            cells = [_cell(table[layer][str(s)]["cka"], table[layer][str(s)]["rsa"]) for s in report["steps"]]
            lines.append("  " + labels[layer].ljust(width) + "".join(cell.rjust(16) for cell in cells))
        snaps = report.get("snapshots", {}).get(method, {})
        if snaps:
            k = str(report["steps"][-1])
            lines.append(f"  over meta-training (snapshots): linear CKA after {k} inner steps vs step 0")
            lines.append("  " + "meta-step".ljust(width) + "".join(f"{step:>9}" for step in snaps))
            for layer in layers:
                values = [snaps[step].get(layer, {}).get(k, {}).get("cka") for step in snaps]
                cells = "".join(f"{v:9.3f}" if v is not None else f"{'n/a':>9}" for v in values)
                lines.append("  " + labels[layer].ljust(width) + cells)
    return "\n".join(lines)
