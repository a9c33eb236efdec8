"""`warpgrad analyze RUN_DIR`: CKA/RSA of each layer's representation across inner steps."""

from __future__ import annotations

import json

import pytest
import torch

from warpgrad.analysis.representations import analysis_steps, classical_mds, parse_settings
from warpgrad.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sine-run")
    code = main(["run", "sine", "--profile", "smoke", "--method", "maml,baseline", "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def _values(report):
    for method, table in report["methods"].items():
        for layer, row in table.items():
            for step, cell in row.items():
                yield method, layer, int(step), cell


def test_analyze_writes_cka_per_method_layer_and_step(run_dir, capsys):
    capsys.readouterr()
    assert main(["analyze", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    out = run_dir / "analysis"
    report = json.loads((out / "representations.json").read_text())
    assert set(report["methods"]) == {"maml", "baseline"}
    assert report["steps"] == [0, 1, 2, 5]  # smoke sine: K = 5
    # every leaf layer with parameters: maml's MLP has 3 Linear layers; the baseline has 2 warps more
    assert list(report["methods"]["maml"]) == ["layers.0", "layers.2", "layers.4"]
    assert len(report["methods"]["baseline"]) == 5
    assert report["warp_layers"] == {"maml": [], "baseline": ["layers.2.module", "layers.5.module"]}
    for method, layer, step, cell in _values(report):
        assert set(report["methods"][method][layer]) == {"0", "1", "2", "5"}
        assert cell["cka"] is not None and cell["rsa"] is not None, (method, layer, step)
        assert 0.0 <= cell["cka"] <= 1.0 and -1.0 <= cell["rsa"] <= 1.0, (method, layer, step)
        if step == 0:
            assert cell["cka"] == 1.0 and cell["rsa"] == 1.0, (method, layer)
    # the inner loop adapts the output layer: its representation moves away from step 0
    for method in ("maml", "baseline"):
        output = report["methods"][method][list(report["methods"][method])[-1]]
        assert output["5"]["cka"] < 0.99
    for name in ("cka-maml.png", "cka-baseline.png", "mds.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "maml:" in printed and "layers.2.module (warp)" in printed


def test_an_inner_loop_that_changes_nothing_keeps_cka_1(run_dir, tmp_path):
    # an inner learning rate so small that float32 parameters do not move: the inner loop runs, changes nothing
    out = tmp_path / "still"
    args = ["analyze", str(run_dir), "--tasks", "2", "--set", "inner_lr=1e-30", "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "representations.json").read_text())
    assert report["tasks"] == 2 and "inner_lr=1e-30" in report["settings"]
    cells = list(_values(report))
    assert cells and all(cell["cka"] == 1.0 and cell["rsa"] == 1.0 for *_, cell in cells)


def test_a_bad_run_dir_exits_2_with_one_line(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert main(["analyze", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(missing) in err
    assert main(["analyze", str(tmp_path)]) == 2  # a directory without results.json
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(tmp_path) in err and "results.json" in err


def test_bad_options_exit_2(run_dir, capsys):
    assert main(["analyze", str(run_dir), "--tasks", "0"]) == 2
    assert main(["analyze", str(run_dir), "--method", "reptile"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--tasks" in err[0] and "reptile" in err[1]


def test_helpers():
    assert analysis_steps(5) == [0, 1, 2, 5]
    assert analysis_steps(1) == [0, 1]
    assert analysis_steps(0) == [0]
    assert parse_settings("") == {}
    assert parse_settings("hidden=16,16,inner_steps=3") == {"hidden": "16,16", "inner_steps": "3"}
    points = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [1.0, 1.0]], dtype=torch.float64)
    d = torch.cdist(points, points)
    coords = classical_mds(d)
    assert torch.allclose(torch.cdist(coords, coords), d, atol=1e-9)  # Euclidean distances are recovered exactly
