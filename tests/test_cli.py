"""CLI: `warpgrad list`, `warpgrad run`, one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from warpgrad.cli import main
from warpgrad.engine.checkpoint import load_checkpoint
from warpgrad.experiments import get_experiment

SINE_METHODS = list(get_experiment("sine").methods)


def _stderr_lines(capsys) -> tuple[str, list[str]]:
    captured = capsys.readouterr()
    return captured.out, [line for line in captured.err.splitlines() if line.strip()]


def test_list_shows_experiments_methods_and_profiles(capsys):
    assert main(["list"]) == 0
    out, err = _stderr_lines(capsys)
    assert err == []
    sine = get_experiment("sine")
    assert f"sine: {sine.description}" in out
    for name, spec in sine.methods.items():
        assert any(line.split()[:1] == [name] and spec.description in line for line in out.splitlines())
    for name in ("smoke", "quick", "paper"):
        assert any(line.split()[:1] == [name] and sine.profile(name).description in line for line in out.splitlines())


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["run", "nosuch"], "unknown experiment 'nosuch'; allowed: sine"),
        (["run", "sine", "--method", "foo"], f"unknown method 'foo' for sine; allowed: {', '.join(SINE_METHODS)}"),
        (["run", "sine", "--method", "baseline,foo"], "unknown method 'foo'"),
        (["run", "sine", "--profile", "huge"], "unknown profile 'huge' for sine; allowed: smoke, quick, paper"),
        (["run", "sine", "--seed", "-1"], "seed '-1' is outside 0..4294967295"),
        (["run", "sine", "--seed", "x"], "seed 'x' is not an integer"),
        (["run", "sine", "--bogus"], "unrecognized arguments: --bogus"),
        (["run"], "required: experiment"),
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["run", "sine", "--profile", "smoke", "--stop-after", "0"], "stop_after must be a positive integer"),
        # found by tests/test_cli_fuzz.py: errors raised past the parser must still name the setting
        (["run", "sine", "--set", "warpgrad.buffer_size=0"], "setting warpgrad.buffer_size='0': must be >= 1"),
        (["run", "sine", "--set", "\r=nan"], "--set expects KEY=VALUE, got '\\r=nan'"),
        (["run", "maze", "--set", "warp-rnn.meta_every=0"], "setting warp-rnn.meta_every='0': must be >= 1"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(capsys, tmp_path, argv, expected):
    if argv[:1] == ["run"] and len(argv) > 1:
        argv = [*argv, "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 2
    out, err = _stderr_lines(capsys)
    assert len(err) == 1, err
    assert err[0].startswith("warpgrad: error: ") and expected in err[0]
    assert "Traceback" not in out + err[0]
    assert not (tmp_path / "out").exists()  # validated before anything was written


def test_resume_without_checkpoint_is_one_line(capsys, tmp_path):
    assert main(["run", "sine", "--method", "baseline", "--profile", "smoke", "--out", str(tmp_path), "--resume"]) == 2
    _, err = _stderr_lines(capsys)
    assert len(err) == 1 and str(tmp_path / "baseline" / "checkpoint.pt") in err[0]


def test_run_stop_resume_and_mismatch(capsys, tmp_path):
    base = ["run", "sine", "--method", "baseline", "--profile", "smoke", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "full")]) == 0
    out, err = _stderr_lines(capsys)
    assert err == []
    assert (
        "baseline" in out
        and "mean ± 95% CI (Student's t, over tasks)" in out
        and str(tmp_path / "full" / "results.json") in out
    )
    full = json.loads((tmp_path / "full" / "results.json").read_text())

    assert main([*base, "--out", str(tmp_path / "b"), "--stop-after", "1"]) == 0
    out, _ = _stderr_lines(capsys)
    assert "--resume" in out and not (tmp_path / "b" / "results.json").exists()

    assert main([*base, "--out", str(tmp_path / "b"), "--seed", "1", "--resume"]) == 2
    _, err = _stderr_lines(capsys)
    assert len(err) == 1 and "seed=0" in err[0] and "seed=1" in err[0]

    assert main([*base, "--out", str(tmp_path / "b"), "--resume"]) == 0
    resumed = json.loads((tmp_path / "b" / "results.json").read_text())
    for key in ("mean", "ci95", "n_tasks", "steps", "per_task"):
        assert resumed["methods"]["baseline"][key] == full["methods"]["baseline"][key]

    capsys.readouterr()
    assert main(["report", str(tmp_path / "b")]) == 0
    assert "baseline" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nothing")]) == 2
    _, err = _stderr_lines(capsys)
    assert len(err) == 1 and "results.json" in err[0]


def _python_m(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "WARPGRAD_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "warpgrad", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_subprocess_errors_are_one_line(tmp_path):
    for args, expected in [
        (("run", "nosuch"), "warpgrad: error: unknown experiment 'nosuch'; allowed: sine"),
        (("run", "sine", "--resume", "--out", str(tmp_path)), "warpgrad: error: no checkpoint to resume from"),
    ]:
        done = _python_m(*args, cwd=tmp_path)
        assert done.returncode == 2
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(expected), done.stderr
        assert "Traceback" not in done.stderr


def test_subprocess_list(tmp_path):
    done = _python_m("list", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    for word in ("sine", *SINE_METHODS, "smoke", "quick", "paper"):
        assert word in done.stdout


def test_ctrl_c_saves_and_prints_how_to_resume(capsys, tmp_path, monkeypatch):
    import signal

    from warpgrad.methods.base import NoMetaLearning

    base = ["run", "sine", "--method", "baseline", "--profile", "smoke", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "full")]) == 0
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    calls = []

    def meta_step_then_ctrl_c(self, tasks, generator, reduction=None):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)
        return {}

    monkeypatch.setattr(NoMetaLearning, "meta_step", meta_step_then_ctrl_c)
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "b")]) == 130
    _, err = _stderr_lines(capsys)
    assert len(err) == 2 and "finishing this meta-step" in err[0]  # the notice, then the summary
    assert "after meta-step 3 of 4" in err[1] and err[1].endswith("--resume")
    assert load_checkpoint(tmp_path / "b" / "baseline" / "checkpoint.pt")["step"] == 3

    monkeypatch.undo()
    resume = err[1].split("resume with: ")[1].split()[1:]  # drop the program name
    assert main([*resume, "--no-progress"]) == 0
    resumed = json.loads((tmp_path / "b" / "results.json").read_text())
    for key in ("mean", "ci95", "n_tasks", "steps", "per_task"):
        assert resumed["methods"]["baseline"][key] == full["methods"]["baseline"][key]


def test_set_overrides_a_setting_records_it_and_guards_resume(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["run", "sine", "--method", "baseline", "--profile", "smoke", "--out", str(out), "--no-progress"]
    assert main([*base, "--set", "meta_steps=3", "--set", "hidden=8,8"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"] == "hidden=8,8,meta_steps=3"
    assert results["methods"]["baseline"]["steps"] == 3
    capsys.readouterr()
    assert main([*base, "--resume"]) == 2  # the checkpoint was written with other settings
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "settings='hidden=8,8,meta_steps=3'" in err[0]


@pytest.mark.parametrize(
    "setting, message",
    [
        ("warpgrad.objectiv=exact", "unknown setting 'warpgrad.objectiv'; allowed: meta_steps"),
        ("meta_steps=abc", "setting meta_steps='abc': expected a value like 4"),
        ("meta_steps=0", "must be >= 1"),
        ("warp=linear", "unknown setting 'warp'"),
        ("nokey", "--set expects KEY=VALUE"),
        ("warpgrad.objective=second", "unknown warpgrad.objective 'second'"),
    ],
)
def test_bad_set_values_are_one_line_and_exit_2(tmp_path, capsys, setting, message):
    code = main(["run", "sine", "--method", "warpgrad", "--profile", "smoke", "--out", str(tmp_path), "--set", setting])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
