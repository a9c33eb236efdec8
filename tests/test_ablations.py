"""kanji-multishot-ablation: each variant is kanji-multishot's WarpGrad with exactly one thing changed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from warpgrad.experiments import get_experiment
from warpgrad.experiments.ablations import ABLATIONS
from warpgrad.experiments.methods import build_method
from warpgrad.layers import Warp
from warpgrad.methods.leap import Leap
from warpgrad.methods.warpgrad import WarpGrad

ABLATION = get_experiment("kanji-multishot-ablation")
SMOKE = ABLATION.profile("smoke")


def _warp_convs(learner) -> list[list[nn.Conv2d]]:
    return [
        [m for m in warp.modules() if isinstance(m, nn.Conv2d)]
        for warp in learner.model.modules()
        if isinstance(warp, Warp)
    ]


def test_every_variant_is_listed_and_builds():
    assert list(ABLATION.methods) == list(ABLATIONS)
    for name in ABLATIONS:
        learner = build_method(ABLATION, name, SMOKE, 0)
        assert isinstance(learner, Leap if name == "warp-none" else WarpGrad), name


def test_warp_layer_variants_build_the_warps_they_name():
    width = SMOKE.options["width"]
    shapes = {
        name: [[tuple(c.weight.shape) for c in convs] for convs in _warp_convs(build_method(ABLATION, name, SMOKE, 0))]
        for name in ABLATIONS
        if name.startswith("warp-")
    }
    assert shapes["warp-none"] == []
    assert shapes["warp-scale"] == [[(width, 1, 1, 1)]] * 4
    assert shapes["warp-1x1"] == [[(width, width, 1, 1)]] * 4
    assert shapes["warp-3x3"] == [[(width, width, 3, 3)]] * 4
    assert shapes["warp-2x3x3-bn-relu-res"] == [[(width, width, 3, 3)] * 2] * 4
    kinds = lambda name: {type(m).__name__ for m in build_method(ABLATION, name, SMOKE, 0).model.modules()}  # noqa: E731
    assert "Residual" not in kinds("warp-3x3-bn-relu") and "ReLU" in kinds("warp-3x3-bn-relu")
    assert "Residual" in kinds("warp-3x3-bn-relu-res")


def test_non_warp_variants_change_only_their_option():
    default = build_method(ABLATION, "warp-3x3", SMOKE, 0)
    for name, field, value in [
        ("objective-first-order", "objective", "first_order"),
        ("objective-approx", "objective", "approx"),
        ("algorithm-online", "algorithm", "online"),
        ("init-none", "init", "none"),
    ]:
        learner = build_method(ABLATION, name, SMOKE, 0)
        assert getattr(learner, field) == value != getattr(default, field)
        others = {"objective", "algorithm", "init"} - {field}
        assert all(getattr(learner, f) == getattr(default, f) for f in others), name


def test_the_default_variant_is_kanji_multishot_warpgrad():
    multishot = get_experiment("kanji-multishot")
    ours = build_method(ABLATION, "warp-3x3", SMOKE, 0)
    theirs = build_method(multishot, "warpgrad", multishot.profile("smoke"), 0)
    assert [n for n, _ in ours.model.named_parameters()] == [n for n, _ in theirs.model.named_parameters()]
    for (_, a), (_, b) in zip(ours.model.named_parameters(), theirs.model.named_parameters()):
        assert torch.equal(a, b)
    for field in ("objective", "algorithm", "init", "warp_batch", "buffer_size"):
        assert getattr(ours, field) == getattr(theirs, field)
    for name, (_, optimizer) in theirs.shell.groups.items():
        mine = ours.shell.optimizer(name)
        assert type(mine) is type(optimizer) and mine.defaults["lr"] == optimizer.defaults["lr"], name


def test_the_ablation_plot_draws_the_variants_of_a_run(tmp_path):
    from warpgrad.errors import UsageError
    from warpgrad.experiments.ablation_plot import main
    from warpgrad.experiments.ablations import plot_ablations

    entry = {"per_task": [0.5, 0.7, 0.6]}
    plot_ablations({"methods": {"warp-none": entry, "warp-3x3": entry}}, str(tmp_path / "a.png"))
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(UsageError, match="no ablation variant"):
        plot_ablations({"methods": {"maml": entry}}, str(tmp_path / "b.png"))
    assert not (tmp_path / "b.png").exists()
    with pytest.raises(SystemExit):
        main([])
