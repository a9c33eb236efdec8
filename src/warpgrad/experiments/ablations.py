"""WarpGrad's ablations (Flennerhag et al. 2020, Omniglot multi-shot) as named variants on KanjiVG.

``warpgrad run kanji-multishot-ablation --method all`` trains every variant; each is the
``kanji-multishot`` WarpGrad learner (Warp-Leap, exact objective, offline, one linear 3×3 conv
warp after each Conv4 block: the variant ``warp-3x3``) with one thing changed:

- warp-layer type: none (Leap: the same initialisation objective, no warps), a channel scale
  (each channel scaled and shifted on its own), 1×1, 3×3, 3×3 + BN + ReLU, the same with a
  residual connection, and two 3×3 layers with BN, ReLU and a residual connection;
- objective: exact (Eq. 11), first order (Eq. 12), approximate (no look-ahead step);
- algorithm: offline (Algorithm 2) or online (Algorithm 1);
- initialisation: Warp-Leap or none (θ₀ not meta-learned).

Each variant's changes are the profile's ``options[VARIANT]`` (``warp``: the conv warp's
options, ``None`` for no warps; ``warpgrad``: WarpGrad config fields), so a result's provenance
records them. ``paper`` is the paper's Omniglot test accuracy (%) where our notes have it
(``../shared/METHODS.md``, marked there as to be verified); Omniglot's 20-way protocol, not this
KanjiVG stand-in, so compare orderings, not values.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from warpgrad.errors import UsageError
from warpgrad.experiments.base import Experiment, MethodSpec, Profile
from warpgrad.experiments.images import KANJI_MULTISHOT, _conv4
from warpgrad.experiments.methods import _builder


@dataclass(frozen=True)
class Ablation:
    group: str  # what the variant changes
    description: str
    warp: dict[str, Any] | None  # conv_warp options; None: no warp layers (Leap)
    warpgrad: dict[str, Any]  # WarpGrad config fields changed
    paper: float | None  # the paper's Omniglot accuracy (%), where known


_BN_RELU = {"batchnorm": True, "activation": "relu"}
ABLATIONS: dict[str, Ablation] = {
    "warp-none": Ablation("warp layer", "no warp layers (Leap)", None, {}, 74.8),
    "warp-scale": Ablation("warp layer", "channel scale", {"kernel_size": 1, "depthwise": True}, {}, 77.5),
    "warp-1x1": Ablation("warp layer", "1×1 conv", {"kernel_size": 1}, {}, 79.4),
    "warp-3x3": Ablation("warp layer", "3×3 conv (the default)", {}, {}, 84.4),
    "warp-3x3-bn-relu": Ablation("warp layer", "3×3 conv + BN + ReLU", dict(_BN_RELU), {}, 85.0),
    "warp-3x3-bn-relu-res": Ablation("warp layer", "+ residual", {**_BN_RELU, "residual": True}, {}, 86.3),
    "warp-2x3x3-bn-relu-res": Ablation(
        "warp layer", "two 3×3 conv + BN + ReLU, residual", {**_BN_RELU, "depth": 2, "residual": True}, {}, 88.0
    ),
    "objective-first-order": Ablation("objective", "first order (Eq. 12)", {}, {"objective": "first_order"}, None),
    "objective-approx": Ablation("objective", "approximate (no look-ahead)", {}, {"objective": "approx"}, None),
    "algorithm-online": Ablation("algorithm", "online (Algorithm 1)", {}, {"algorithm": "online"}, 76.3),
    "init-none": Ablation("initialisation", "no meta-learned initialisation", {}, {"init": "none"}, None),
}


def _options(base: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a kanji-multishot profile's options) with every variant's full learner options
    under its name: the warp's options and WarpGrad's config with the variant's changes (for
    ``warp-none``, Leap's, meta-learning θ₀ as Warp-Leap does)."""
    config = base["warpgrad"]
    out = dict(base)
    for name, ablation in ABLATIONS.items():
        if ablation.warp is None:
            out[name] = {
                "warp": None,
                "leap": {"meta_optimizer": config["meta_optimizer"], "meta_lr": config["init_lr"]},
            }
        else:
            out[name] = {"warp": {**base["warp"], **ablation.warp}, "warpgrad": {**config, **ablation.warpgrad}}
    return out


def _spec(name: str) -> MethodSpec:
    ablation = ABLATIONS[name]

    def build(profile: Profile) -> Any:
        options = {**profile.options, **profile.options[name]}
        method = "leap" if options["warp"] is None else "warpgrad"
        return _builder(method)(_conv4(options, options["warp"] is not None), options)

    return MethodSpec(f"WarpGrad ablation ({ablation.group}): {ablation.description}", build)


KANJI_MULTISHOT_ABLATION = Experiment(
    "kanji-multishot-ablation",
    "WarpGrad's ablations (warp-layer type, objective, algorithm, initialisation) on kanji-multishot.",
    {name: replace(p, options=_options(p.options)) for name, p in KANJI_MULTISHOT.profiles.items()},
    KANJI_MULTISHOT.make_family,
    {name: _spec(name) for name in ABLATIONS},
    KANJI_MULTISHOT.dataset,
)


def plot_ablations(results: dict[str, Any], path: str) -> None:
    """Each variant's test accuracy (mean and 95% interval) next to the paper's Omniglot number,
    on two axes (the benchmarks differ), variants in the order of :data:`ABLATIONS`."""
    import io

    from matplotlib.figure import Figure

    from warpgrad.engine.checkpoint import atomic_write
    from warpgrad.engine.stats import t_interval

    names = [name for name in ABLATIONS if name in results["methods"]]
    if not names:
        raise UsageError("no ablation variant in these results")
    ours = [t_interval(results["methods"][name]["per_task"]) for name in names]
    figure = Figure(figsize=(8.0, 4.2), dpi=120)
    axes = figure.subplots()
    positions = list(range(len(names)))
    axes.bar([p - 0.2 for p in positions], [100 * m for m, _ in ours], 0.4, yerr=[100 * (c or 0) for _, c in ours],
             label="ours: kanji-multishot quick", color="tab:blue", capsize=2)  # fmt: skip
    paper = [(p, ABLATIONS[n].paper) for p, n in zip(positions, names) if ABLATIONS[n].paper is not None]
    axes.bar([p + 0.2 for p, _ in paper], [v for _, v in paper], 0.4, label="paper: Omniglot 20-way", color="tab:gray")
    axes.set_xticks(positions, names, rotation=35, ha="right", fontsize=8)
    axes.set_ylabel("test accuracy (%)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
