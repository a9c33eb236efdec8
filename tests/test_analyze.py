"""`warpgrad analyze RUN_DIR`: CKA/RSA of each layer's representation across inner steps."""

from __future__ import annotations

import json

import pytest
import torch

from warpgrad.analysis.pictures import classical_mds, meta_training_curves
from warpgrad.analysis.representations import analysis_steps, parse_settings
from warpgrad.cli import main
from warpgrad.engine.snapshots import snapshot_path


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


# ------------------------------------------------------------------------------ snapshots and warps


@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sine-snapshots")
    argv = ["run", "sine", "--profile", "smoke", "--method", "maml,anil,warpgrad", "--out", str(out), "--no-progress"]
    assert main([*argv, "--set", "snapshot_every=2"]) == 0  # snapshots at meta-steps 0, 2 and 4 (the last)
    return out


@pytest.fixture(scope="module")
def snapshot_report(snapshot_run):
    assert main(["analyze", str(snapshot_run), "--tasks", "3"]) == 0
    return json.loads((snapshot_run / "analysis" / "representations.json").read_text())


def test_analyze_measures_every_snapshot(snapshot_run, snapshot_report):
    report = snapshot_report
    assert report["final_step"] == {"maml": 4, "anil": 4, "warpgrad": 4}
    for method in ("maml", "anil", "warpgrad"):
        snapshots = report["snapshots"][method]
        assert list(snapshots) == ["0", "2", "4"]
        for table in snapshots.values():
            assert list(table) == list(report["methods"][method])  # the same layers
            assert all(table[layer]["0"] == {"cka": 1.0, "rsa": 1.0} for layer in table)
        # the snapshot of the last step is the final learner: the same numbers, to the last digit
        assert snapshots["4"] == report["methods"][method]
    # ... and the check can fail: meta-training changed what the inner loop does to maml's output layer
    output = list(report["methods"]["maml"])[-1]
    assert report["snapshots"]["maml"]["0"][output]["5"] != report["methods"]["maml"][output]["5"]
    assert (snapshot_run / "analysis" / "meta_training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = meta_training_curves(report, "maml")
    assert [step for step, _ in curves[output]] == [0, 2, 4]
    assert curves[output][-1][1] == pytest.approx(1.0 - report["methods"]["maml"][output]["5"]["cka"], abs=1e-9)


def test_a_layer_the_inner_loop_does_not_adapt_keeps_cka_1_at_every_snapshot(snapshot_report):
    # ANIL adapts only its output layer: the hidden layers' representations do not move in any snapshot
    tables = [snapshot_report["methods"]["anil"], *snapshot_report["snapshots"]["anil"].values()]
    *hidden, output = list(tables[0])
    assert hidden == ["layers.0", "layers.2"]
    for table in tables:
        for layer in hidden:
            assert all(table[layer][s] == {"cka": 1.0, "rsa": 1.0} for s in table[layer]), layer
        assert table[output]["5"]["cka"] < 0.999  # the adapted layer does move: the check can fail
    # maml adapts every layer: its second hidden layer moves (the first, an affine map of a scalar input, is
    # rank one whatever its weights, so its linear CKA is always 1)
    assert all(t["layers.2"]["5"]["cka"] < 1.0 for t in snapshot_report["snapshots"]["maml"].values())


def test_warp_layers_are_marked_and_can_be_left_out(snapshot_run, snapshot_report, capsys):
    warps = snapshot_report["warp_layers"]
    assert warps["maml"] == [] and warps["anil"] == [] and warps["warpgrad"] == ["layers.2.module", "layers.5.module"]
    assert set(warps["warpgrad"]) < set(snapshot_report["methods"]["warpgrad"])
    out = snapshot_run / "analysis"
    assert (out / "cka-warpgrad-without-warps.png").is_file() and not (out / "cka-maml-without-warps.png").exists()
    capsys.readouterr()
    assert main(["analyze", str(snapshot_run), "--tasks", "2", "--out", str(out / "w"), "--without-warps"]) == 0
    without = capsys.readouterr().out
    assert "(warp)" not in without and "layers.2.module" not in without and "layers.0" in without
    assert main(["analyze", str(snapshot_run), "--tasks", "2", "--out", str(out / "w")]) == 0
    assert "layers.2.module (warp)" in capsys.readouterr().out
    # the JSON keeps every layer either way
    assert set(warps["warpgrad"]) <= set(
        json.loads((out / "w" / "representations.json").read_text())["methods"]["warpgrad"]
    )


def test_no_snapshots_and_a_foreign_snapshot(snapshot_run, tmp_path, capsys):
    out = tmp_path / "final-only"
    assert (
        main(["analyze", str(snapshot_run), "--tasks", "2", "--method", "maml", "--no-snapshots", "--out", str(out)])
        == 0
    )
    report = json.loads((out / "representations.json").read_text())
    assert report["snapshots"] == {"maml": {}} and not (out / "meta_training.png").exists()
    # a snapshot written by another method (here: maml's, copied among anil's) is refused, naming the file
    foreign = snapshot_path(snapshot_run, "anil", 6)
    foreign.write_bytes(snapshot_path(snapshot_run, "maml", 2).read_bytes())
    try:
        capsys.readouterr()
        assert main(["analyze", str(snapshot_run), "--tasks", "2", "--method", "anil", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and str(foreign) in err and "method" in err
    finally:
        foreign.unlink()
