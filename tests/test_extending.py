"""A user's own experiment (examples/lstm_sequence.py: its own task family and LSTM network, in a
file outside the package) runs through the engine and the command line like a built-in one.

* named as ``path/to/file.py:NAME`` or ``module:NAME`` (from the current directory, also through
  the ``warpgrad`` console script, whose ``sys.path`` lacks it), ``warpgrad run`` writes results
  for its three methods, the same from both forms;
* stopped after one meta-step and resumed (in-process), or SIGKILLed after a checkpoint and
  resumed with ``--resume`` (command line), it ends with the per-task test numbers of an
  uninterrupted run;
* importing a file registers it under a stable module name (the same file imports once;
  objects defined there pickle), and bad names are one-line errors.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from warpgrad.cli import main
from warpgrad.engine import run
from warpgrad.engine.checkpoint import load_checkpoint
from warpgrad.experiments import Experiment, get_experiment

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
EXAMPLE = EXAMPLES / "lstm_sequence.py"
METHODS = ["baseline", "maml", "warpgrad"]
WARPGRAD_SCRIPT = Path(sys.executable).with_name("warpgrad")  # the console script of this environment

pytestmark = pytest.mark.filterwarnings("ignore:tasks are processed one at a time")  # the LSTM: no vmap


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread here, as in the subprocesses (``OMP_NUM_THREADS=1``): the models are tiny, and
    two threads on two cores shared with another job wait on each other (measured: 25-65x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _example() -> Experiment:
    return get_experiment(f"{EXAMPLE}:EXPERIMENT")


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _per_task(out: Path) -> dict[str, list[float]]:
    return {m: entry["per_task"] for m, entry in _results(out)["methods"].items()}


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_stopped_and_resumed_run_equals_an_uninterrupted_run(tmp_path):
    experiment = _example()
    whole = run(experiment, METHODS, "smoke", 0, tmp_path / "whole", progress=False)
    assert whole is not None and list(whole["methods"]) == METHODS

    stopped = tmp_path / "stopped"
    assert run(experiment, METHODS, "smoke", 0, stopped, stop_after=1, progress=False) is None
    assert load_checkpoint(stopped / "baseline" / "checkpoint.pt")["step"] == 1
    assert not (stopped / "results.json").exists()  # no method finished
    resumed = run(experiment, METHODS, "smoke", 0, stopped, resume=True, progress=False)

    steps = experiment.profile("smoke").meta_steps
    for m in METHODS:
        assert resumed["methods"][m]["steps"] == whole["methods"][m]["steps"] == steps
        assert len(whole["methods"][m]["per_task"]) == experiment.profile("smoke").test_tasks
    assert _per_task(stopped) == _per_task(tmp_path / "whole")
    # meta-training changed something: WarpGrad starts from the baseline's network (same seed, identity warp)
    assert _per_task(stopped)["warpgrad"] != _per_task(stopped)["baseline"]


def test_warpgrad_run_names_a_file_or_a_module_of_the_current_directory(tmp_path):
    """Both at once (two cores): the file form through ``python -m warpgrad`` from the repository
    root, the module form through the console script from examples/."""
    common = ["--profile", "smoke", "--no-progress"]
    file_form = [sys.executable, "-m", "warpgrad", "run", "examples/lstm_sequence.py:EXPERIMENT"]
    module_form = [str(WARPGRAD_SCRIPT), "run", "lstm_sequence:EXPERIMENT"]
    pipes = {"env": _env(), "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    by_file = subprocess.Popen([*file_form, *common, "--out", str(tmp_path / "file")], cwd=ROOT, **pipes)
    by_module = subprocess.Popen([*module_form, *common, "--out", str(tmp_path / "module")], cwd=EXAMPLES, **pipes)
    for process in (by_file, by_module):
        stdout, stderr = process.communicate(timeout=240)
        assert process.returncode == 0, stderr[-3000:]
        assert "lstm-sequence (smoke profile, seed 0): test mse" in stdout
    for form in ("file", "module"):
        results = _results(tmp_path / form)
        assert results["experiment"] == "lstm-sequence" and list(results["methods"]) == METHODS
        assert all(len(entry["per_task"]) == 4 for entry in results["methods"].values())
    # the same experiment, seed and profile: the same numbers, whichever way it was named
    by_file, by_module = _per_task(tmp_path / "file"), _per_task(tmp_path / "module")
    for m in METHODS:
        assert by_file[m] == pytest.approx(by_module[m], rel=1e-6), m


def test_killed_command_line_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, capsys):
    """SIGKILL a ``warpgrad run lstm_sequence:EXPERIMENT`` (console script, from examples/) after its
    first checkpoint past step 0; ``--resume`` (here in-process, through the same CLI) finishes it."""
    arguments = ["run", "lstm_sequence:EXPERIMENT", "--profile", "smoke", "--method", "warpgrad"]
    arguments += ["--set", "meta_steps=40", "--out", str(tmp_path / "killed"), "--no-progress"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    process = subprocess.Popen([str(WARPGRAD_SCRIPT), *arguments], cwd=EXAMPLES, env=_env(), **quiet)
    # the uninterrupted run, on the other core while the command starts up
    uninterrupted = (_example(), ["warpgrad"], "smoke", 0, tmp_path / "whole")
    options = {"settings": {"meta_steps": "40"}, "progress": False}
    whole = threading.Thread(target=run, args=uninterrupted, kwargs=options)
    whole.start()
    checkpoint = tmp_path / "killed" / "warpgrad" / "checkpoint.pt"
    killed_at = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if checkpoint.exists():  # written atomically: a complete checkpoint or none
                step = load_checkpoint(checkpoint)["step"]
                if step > 0:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    killed_at = step
                    break
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        whole.join()
    assert killed_at is not None and killed_at < 40, "the run finished before it could be killed"
    assert not (tmp_path / "killed" / "results.json").exists()

    monkeypatch.chdir(EXAMPLES)
    try:
        assert main([*arguments, "--resume"]) == 0, capsys.readouterr().err[-3000:]
    finally:
        sys.modules.pop("lstm_sequence", None)
    assert _results(tmp_path / "killed")["methods"]["warpgrad"]["steps"] == 40
    resumed, uninterrupted = _per_task(tmp_path / "killed")["warpgrad"], _per_task(tmp_path / "whole")["warpgrad"]
    assert resumed == pytest.approx(uninterrupted, rel=1e-6)


def test_a_file_imports_once_under_a_stable_name_and_its_objects_pickle(monkeypatch):
    experiment = _example()
    assert experiment.name == "lstm-sequence" and list(experiment.methods) == METHODS
    family = experiment.make_family(experiment.profile("smoke"))
    module = sys.modules[type(family).__module__]
    assert module.__name__.startswith("warpgrad_file_lstm_sequence_") and module.__file__ == str(EXAMPLE)
    monkeypatch.chdir(ROOT)
    assert get_experiment("examples/lstm_sequence.py:EXPERIMENT") is experiment  # the same file: imported once
    task = family.sample(torch.Generator().manual_seed(0))
    again = pickle.loads(pickle.dumps(task))
    assert type(again) is type(task) and torch.equal(again.test_x, task.test_x)


def test_module_form_finds_the_current_directory_and_restores_sys_path(tmp_path, monkeypatch):
    (tmp_path / "my_cwd_experiment.py").write_text(
        "from dataclasses import replace\nfrom warpgrad.experiments import SINE\n"
        "MINE = replace(SINE, name='mine-from-cwd')\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = list(sys.path)
    try:
        assert get_experiment("my_cwd_experiment:MINE").name == "mine-from-cwd"
    finally:
        sys.modules.pop("my_cwd_experiment", None)
    assert sys.path == before


@pytest.mark.parametrize(
    "name, message",
    [
        ("no/such/file.py:EXPERIMENT", "no file 'no/such/file.py'"),
        (f"{ROOT / 'pyproject.toml'}:EXPERIMENT", "is not a .py file"),
        (f"{EXAMPLE}:MISSING", "has no attribute 'MISSING'; its experiments: EXPERIMENT"),
        (f"{EXAMPLE}:METHODS", r"METHODS is not an Experiment \(type list\)"),
        (f"{EXAMPLE}:not-an-identifier", "expected a registered name, package.module:NAME or path/to/file.py:NAME"),
        ("my-module:EXPERIMENT", "'my-module' is not a module name"),
    ],
)
def test_bad_experiment_names_are_one_line_errors(name, message):
    with pytest.raises(ValueError, match=message) as error:
        get_experiment(name)
    assert "\n" not in str(error.value)


def test_a_file_that_fails_to_import_is_a_one_line_error_and_is_not_kept(tmp_path):
    broken = tmp_path / "broken_experiment.py"
    broken.write_text("import no_such_package_xyz\n")
    with pytest.raises(ValueError, match="cannot import file .*No module named 'no_such_package_xyz'") as error:
        get_experiment(f"{broken}:EXPERIMENT")
    assert "\n" not in str(error.value)
    assert not any(name.startswith("warpgrad_file_broken_experiment_") for name in sys.modules)
    broken.write_text("def f(:\n")
    with pytest.raises(ValueError, match=r"SyntaxError: .*broken_experiment.py, line 1"):
        get_experiment(f"{broken}:EXPERIMENT")
