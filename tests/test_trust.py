"""Trust: concurrent runs, corrupted files, divergence, bugs, output directories and kills.

Everything here goes through the command line (``main`` in this process, or ``python -m warpgrad``
in a subprocess) or the engine's file functions, and checks what a user sees: the exit code
(0 done, 1 a failed run or a bug, 2 bad input or a bad file), one line on stderr naming what is
wrong, and the files left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import warpgrad.engine.results as results_module
from warpgrad.cli import main
from warpgrad.engine.checkpoint import load_checkpoint, save_checkpoint
from warpgrad.engine.results import ResultsRecord, read_results
from warpgrad.errors import FileFormatError, UsageError
from warpgrad.experiments import get_experiment
from warpgrad.methods.base import NoMetaLearning
from warpgrad.tasks.sine import SineFamily

BASE = ["run", "sine", "--profile", "smoke", "--no-progress"]
SMOKE = get_experiment("sine").profile("smoke")


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("WARPGRAD_DEBUG", raising=False)


def _call(argv: list[str]) -> tuple[int, str, list[str]]:
    """``main(argv)`` here: exit code, stdout and the non-blank stderr lines."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), [line for line in err.getvalue().splitlines() if line.strip()]


def _one_error_line(err: list[str], *named: object) -> str:
    """The single ``warpgrad: error:`` line, checked to name every one of ``named``."""
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("warpgrad: error: ") and "Traceback" not in line, line
    for text in named:
        assert str(text) in line, (text, line)
    return line


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "WARPGRAD_DEBUG"}


def _warpgrad_command() -> list[str]:
    """``python -m warpgrad`` (this interpreter finds ``warpgrad.__main__``), else the ``warpgrad``
    script next to the interpreter."""
    if importlib.util.find_spec("warpgrad.__main__") is not None:
        return [sys.executable, "-m", "warpgrad"]
    return [str(Path(sys.executable).with_name("warpgrad"))]


def _tree(directory: Path) -> dict[str, bytes]:
    """Every path under ``directory`` with its bytes (b"" for directories)."""
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else b"") for p in directory.rglob("*")}


def _entry(value: float) -> dict:
    return {"metric": "mse", "lower_is_better": True, "mean": value, "ci95": None, "n_tasks": 1, "per_task": [value]}


# ------------------------------------------------------------------------------ 1. concurrent runs


@pytest.fixture(scope="module")
def concurrent_runs(tmp_path_factory):
    """``python -m warpgrad run sine --profile smoke --method maml`` and ``... --method baseline``
    started together into one ``--out``. Returns the directory, each process's (exit code, stderr)
    and how long maml trained after its step-0 checkpoint appeared (seconds)."""
    root = tmp_path_factory.mktemp("concurrent")
    out = root / "shared"
    command = _warpgrad_command()
    procs, logs = {}, {}
    for method in ("maml", "baseline"):
        logs[method] = (root / f"{method}.out").open("w"), (root / f"{method}.err").open("w")
        procs[method] = subprocess.Popen(
            [*command, *BASE, "--method", method, "--out", str(out)],
            cwd=root,
            env=_env(),
            stdout=logs[method][0],
            stderr=logs[method][1],
        )
    checkpoint = out / "maml" / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and procs["maml"].poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    first_checkpoint = time.monotonic()
    done = {}
    for method, proc in procs.items():
        proc.wait(timeout=300)
        for handle in logs[method]:
            handle.close()
        done[method] = (proc.returncode, (root / f"{method}.err").read_text())
    training_s = time.monotonic() - first_checkpoint  # (maml was waited for first)
    return out, done, training_s


def test_two_concurrent_runs_into_one_out_keep_both_entries(concurrent_runs):
    out, done, _ = concurrent_runs
    for method, (code, stderr) in done.items():
        assert code == 0 and "Traceback" not in stderr, (method, stderr)
    results = read_results(out / "results.json")
    assert set(results["methods"]) == {"maml", "baseline"}
    for method in ("maml", "baseline"):
        assert load_checkpoint(out / method / "checkpoint.pt")["step"] == SMOKE.meta_steps
    assert not list(out.rglob("*.tmp"))


def _add_one_entry(out_dir: str, name: str, start, unsafe_after_read) -> None:
    """Child process: record ``name``'s entry in ``out_dir/results.json`` once every child is ready.

    Reading the file is slowed down (every child holds what it read while the others read too),
    which is what makes concurrent read-merge-write cycles lose entries. With
    ``unsafe_after_read`` (a barrier) the directory lock is replaced by a no-op and every child
    waits after its read until all have read: the failure the lock exists to prevent.
    """
    record = ResultsRecord(out_dir, "sine", SMOKE, 0)
    load = results_module.load_results

    def slow_load(path):
        found = load(path)
        if unsafe_after_read is not None:
            unsafe_after_read.wait(timeout=60)
        else:
            time.sleep(0.15)
        return found

    results_module.load_results = slow_load
    if unsafe_after_read is not None:
        results_module.locked = lambda directory: contextlib.nullcontext()
    start.wait(timeout=60)
    record.add({name: _entry(float(len(name)))}, metric="mse", lower_is_better=True)


def _race(out_dir: Path, n: int, unsafe: bool) -> dict:
    context = multiprocessing.get_context("fork")
    start = context.Barrier(n)
    after_read = context.Barrier(n) if unsafe else None
    names = [f"method{i}" for i in range(n)]
    procs = [context.Process(target=_add_one_entry, args=(str(out_dir), name, start, after_read)) for name in names]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0] * n
    return read_results(out_dir / "results.json")


def test_concurrent_adds_keep_every_entry(tmp_path):
    results = _race(tmp_path, 6, unsafe=False)
    assert sorted(results["methods"]) == [f"method{i}" for i in range(6)]


def test_concurrent_adds_lose_entries_without_the_lock(tmp_path):
    """The race test above can fail: without the lock (and every read before every write) entries are lost."""
    results = _race(tmp_path, 6, unsafe=True)
    assert len(results["methods"]) < 6, (
        "no entry lost: does the patch still reach ResultsRecord.add (locked, load_results)?"
    )


# ------------------------------------------------------------------------------ 2. checkpoints


def _sample_checkpoint() -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "step": 3,
        "config": {"experiment": "sine", "seed": 0},
        "weight": torch.randn(4, 3, generator=generator),
        "index": torch.arange(5),
        "double": torch.randn(2, 2, dtype=torch.float64, generator=generator),
    }


def _refused(path: Path, **kwargs) -> str:
    with pytest.raises(FileFormatError) as caught:
        load_checkpoint(path, **kwargs)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message, message
    return message


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _sample_checkpoint())
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and torch.equal(loaded["weight"], _sample_checkpoint()["weight"])
    assert not list(tmp_path.glob("*.tmp"))


def test_every_flipped_byte_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _sample_checkpoint())
    good = path.read_bytes()
    rng = random.Random(7)
    fd = os.open(path, os.O_RDWR)
    try:
        for position in range(len(good)):  # the header, and every byte of torch.save's data
            os.pwrite(fd, bytes([good[position] ^ rng.randrange(1, 256)]), position)
            _refused(path)
            os.pwrite(fd, good[position : position + 1], position)
    finally:
        os.close(fd)
    assert len(good) > 1000 and load_checkpoint(path)["step"] == 3


def test_truncated_padded_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _sample_checkpoint())
    good = path.read_bytes()
    rng = random.Random(11)
    for length in sorted({0, 1, 10, 90, len(good) - 1, *(rng.randrange(len(good)) for _ in range(60))}):
        path.write_bytes(good[:length])
        _refused(path)
    for extra in (b"\0", b"\n", b"x" * 100, good):
        path.write_bytes(good + extra)
        assert "truncated or padded" in _refused(path)
    path.write_bytes(json.dumps({"experiment": "sine", "methods": {}}).encode())
    assert "not a warpgrad checkpoint" in _refused(path)
    path.write_bytes(bytes(rng.randrange(256) for _ in range(3000)))
    _refused(path)
    torch.save(_sample_checkpoint(), path)  # the old format: no digest header
    assert "not a warpgrad checkpoint" in _refused(path)
    path.unlink()
    path.mkdir()  # a directory named checkpoint.pt
    _refused(path)
    path.rmdir()
    assert "does not exist" in _refused(path)


def _with_header(payload: bytes) -> bytes:
    digest = hashlib.sha256(payload).hexdigest()
    return f"WARPGRAD-CHECKPOINT 2 sha256={digest} bytes={len(payload)}\n".encode() + payload


class _RunsCode:
    """Unpickling this would run ``Path.touch`` (what an attacker's checkpoint could do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_valid_digest_but_unusable_content_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1})  # no config
    assert "'config'" in _refused(path)
    save_checkpoint(path, [1, 2, 3])  # not a dict
    assert "not a complete warpgrad checkpoint" in _refused(path)
    path.write_bytes(_with_header(b"not torch data"))
    assert "cannot read checkpoint" in _refused(path)
    marker = tmp_path / "code-ran"
    buffer = io.BytesIO()
    torch.save({"step": 1, "config": {}, "x": _RunsCode(marker)}, buffer)
    path.write_bytes(_with_header(buffer.getvalue()))
    assert "cannot read checkpoint" in _refused(path)
    assert not marker.exists()  # weights_only: nothing in the file was run


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A smoke baseline run stopped after one meta-step: its directory (kept pristine; copy it)."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    code, _, err = _call([*BASE, "--method", "baseline", "--out", out, "--stop-after", "1"])
    assert (code, err) == (0, [])
    assert load_checkpoint(out / "baseline" / "checkpoint.pt")["step"] == 1
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def _corruptions(good: bytes, real: dict):
    """(label, write(path)) pairs: each leaves a checkpoint.pt that no run may resume from."""
    rng = random.Random(5)

    def flip(position):
        def write(path):
            data = bytearray(good)
            data[position] ^= 0x20
            path.write_bytes(bytes(data))

        return write

    def raw(data):
        return lambda path: path.write_bytes(data)

    def saved(checkpoint):
        return lambda path: save_checkpoint(path, checkpoint)

    def directory(path):
        path.mkdir()

    def old_format(path):
        torch.save(real, path)

    results = json.dumps({"experiment": "sine", "profile": "smoke", "seed": 0, "methods": {}}).encode()
    yield from [(f"flip {p}", flip(p)) for p in (0, 30, 120, len(good) // 2, len(good) - 1)]
    yield from [(f"truncated {n}", raw(good[:n])) for n in (0, 50, rng.randrange(100, len(good)), len(good) - 1)]
    yield "padded", raw(good + b"\0" * 7)
    yield "directory", directory
    yield "results.json", raw(results)
    yield "random bytes", raw(bytes(rng.randrange(256) for _ in range(4096)))
    yield "old format", old_format
    yield "missing keys", saved({"step": 1, "config": real["config"]})
    yield "step out of range", saved({**real, "step": 99})
    yield "negative step", saved({**real, "step": -1})
    yield "another seed", saved({**real, "config": {**real["config"], "seed": 1}})
    yield "another method", saved({**real, "config": {**real["config"], "method": "maml"}})


def test_resume_from_a_corrupted_checkpoint_is_one_line_exit_2(stopped_run, tmp_path):
    out = _copy(stopped_run, tmp_path)
    path = out / "baseline" / "checkpoint.pt"
    good = path.read_bytes()
    real = load_checkpoint(path)
    labels = []
    for label, write in _corruptions(good, real):
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink()
        write(path)
        before = _tree(out)
        code, stdout, err = _call([*BASE, "--method", "baseline", "--out", out, "--resume"])
        assert code == 2, (label, stdout[-300:], err)
        _one_error_line(err, path)
        assert _tree(out) == before, label  # nothing else was touched
        labels.append(label)
    assert len(labels) == 19
    if path.is_dir():
        path.rmdir()
    else:
        path.unlink()
    path.write_bytes(good)  # the intact checkpoint still resumes
    assert _call([*BASE, "--method", "baseline", "--out", out, "--resume"])[:1] == (0,)
    assert read_results(out / "results.json")["methods"]["baseline"]["steps"] == SMOKE.meta_steps


# ------------------------------------------------------------------------------ 3. results.json


@pytest.fixture(scope="module")
def finished_results(tmp_path_factory):
    """results.json of a finished smoke baseline run (a dict)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert _call([*BASE, "--method", "baseline", "--out", out])[0] == 0
    return json.loads((out / "results.json").read_text())


def _bad_results(valid: dict):
    entry = valid["methods"]["baseline"]
    text = json.dumps(valid, indent=2)
    nan_mean = json.dumps({**valid, "methods": {"baseline": {**entry, "mean": float("nan")}}})
    yield "invalid JSON", "{"
    yield "empty", ""
    yield "truncated", text[: len(text) // 2]
    yield "NaN mean", nan_mean
    yield "null mean", json.dumps({**valid, "methods": {"baseline": {**entry, "mean": None}}})
    yield "inf per_task", json.dumps({**valid, "methods": {"baseline": {**entry, "per_task": [1.0, float("inf")]}}})
    yield "empty per_task", json.dumps({**valid, "methods": {"baseline": {**entry, "per_task": []}}})
    yield "a list", json.dumps([valid])
    yield "no methods", json.dumps({k: v for k, v in valid.items() if k != "methods"})
    yield "string seed", json.dumps({**valid, "seed": "0"})
    yield "not UTF-8", b"\xff\xfe{}"


@pytest.mark.parametrize("command", ["report", "run"])
def test_corrupted_results_json_is_one_line_exit_2(finished_results, tmp_path, command):
    for index, (label, content) in enumerate(_bad_results(finished_results)):
        out = tmp_path / f"case{index}"
        out.mkdir()
        path = out / "results.json"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        argv = ["report", out] if command == "report" else [*BASE, "--method", "maml", "--out", out]
        code, stdout, err = _call(argv)
        assert code == 2, (label, stdout[-300:], err)
        _one_error_line(err, path)
        assert sorted(p.name for p in out.iterdir()) == ["results.json"], label  # the run wrote nothing


def test_run_into_results_of_another_experiment_is_refused(finished_results, tmp_path):
    path = tmp_path / "results.json"
    for field, value in [("experiment", "kanji-fewshot"), ("profile", "quick"), ("seed", 3), ("settings", "x=1")]:
        path.write_text(json.dumps({**finished_results, field: value}))
        code, _, err = _call([*BASE, "--method", "maml", "--out", tmp_path])
        assert code == 2
        _one_error_line(err, path, field)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    # `report` takes a valid file of any experiment
    path.write_text(json.dumps({**finished_results, "profile": "quick"}))
    assert _call(["report", tmp_path])[0] == 0


def test_a_directory_named_results_json_is_one_line(tmp_path):
    (tmp_path / "results.json").mkdir()
    for argv in (["report", tmp_path], [*BASE, "--method", "maml", "--out", tmp_path]):
        code, _, err = _call(argv)
        assert code == 2
        _one_error_line(err, tmp_path / "results.json")


# ------------------------------------------------------------------------------ 4. non-finite values


def test_diverging_run_exits_1_naming_method_step_and_value(tmp_path):
    out = tmp_path / "run"
    code, _, err = _call([*BASE, "--method", "maml", "--out", out, "--set", "inner_lr=1e30"])
    assert code == 1, err
    line = _one_error_line(err, "maml", "step 0")
    assert re.search(r"= -?(nan|inf)\b", line) and "bug" not in line, line
    assert not (out / "results.json").exists()


def test_divergence_later_in_training_keeps_the_other_results(tmp_path):
    out = tmp_path / "run"
    setting = ["--set", "maml.meta_lr=1e20"]  # baseline has no meta learning rate: it finishes
    assert _call([*BASE, "--method", "baseline", "--out", out, *setting])[0] == 0
    before = json.loads((out / "results.json").read_text())
    code, _, err = _call([*BASE, "--method", "maml", "--out", out, *setting])
    assert code == 1, err
    line = _one_error_line(err, "maml", "step 2")
    assert re.search(r"= -?(nan|inf)\b", line) and "bug" not in line, line
    results = read_results(out / "results.json")  # still valid: no entry with null was merged
    assert results == before and "maml" not in results["methods"]
    checkpoint = load_checkpoint(out / "maml" / "checkpoint.pt")  # the state before the divergence
    assert checkpoint["step"] < 2
    assert all(torch.isfinite(t).all() for t in checkpoint["learner"]["model"].values())


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e309", "0", "-1"])
def test_non_finite_or_non_positive_learning_rate_is_exit_2(tmp_path, value):
    code, _, err = _call([*BASE, "--method", "maml", "--out", tmp_path / "run", "--set", f"inner_lr={value}"])
    assert code == 2
    _one_error_line(err, "inner_lr")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ 5. bugs


def _torch_value_error() -> None:
    torch.optim.SGD([], lr=0.1)  # torch's own ValueError: an empty parameter list


@pytest.mark.parametrize(
    "error, marker",
    [
        (RuntimeError("boom"), "boom"),
        (KeyError("boom-key"), "boom-key"),
        (None, "empty parameter list"),  # a plain ValueError raised by torch
        (ZeroDivisionError("boom-zero"), "boom-zero"),
    ],
)
def test_unexpected_errors_are_one_line_naming_a_traceback_file(tmp_path, monkeypatch, error, marker):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the traceback file goes

    def meta_step(self, *args, **kwargs):
        if error is None:
            _torch_value_error()
        raise error

    monkeypatch.setattr(NoMetaLearning, "meta_step", meta_step)
    code, _, err = _call([*BASE, "--method", "baseline", "--out", tmp_path / "run"])
    assert code == 1
    line = _one_error_line(err, "bug", marker)
    found = re.search(r"the traceback is in (\S+)$", line)
    assert found, line
    traceback_file = Path(found.group(1))
    assert traceback_file.parent == tmp_path and traceback_file.is_file()
    text = traceback_file.read_text()
    assert "Traceback (most recent call last)" in text and marker in text and "meta_step" in text


def test_usage_error_from_inside_a_run_is_exit_2(tmp_path, monkeypatch):
    def meta_step(self, *args, **kwargs):
        raise UsageError("a value the user gave is wrong: zork")

    monkeypatch.setattr(NoMetaLearning, "meta_step", meta_step)
    code, _, err = _call([*BASE, "--method", "baseline", "--out", tmp_path / "run"])
    assert code == 2
    line = _one_error_line(err, "zork")
    assert "bug" not in line


# ------------------------------------------------------------------------------ 6. output directories


def test_out_that_is_a_file_or_empty_is_exit_2(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("mine\n")
    for out, named in [(a_file, a_file), (a_file / "sub", a_file), ("", "--out"), ("  ", "--out")]:
        code, _, err = _call([*BASE, "--method", "baseline", "--out", out])
        assert code == 2
        _one_error_line(err, named)
    assert a_file.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_rerun_without_resume_is_refused_and_overwrite_replaces(stopped_run, tmp_path):
    out = _copy(stopped_run, tmp_path)
    checkpoint = out / "baseline" / "checkpoint.pt"
    before = _tree(out)
    code, _, err = _call([*BASE, "--method", "baseline", "--out", out])
    assert code == 2
    _one_error_line(err, checkpoint, "--resume", "--overwrite")
    assert _tree(out) == before  # the checkpoint bytes too
    # finish it, then a rerun is refused because of the results entry as well
    assert _call([*BASE, "--method", "baseline", "--out", out, "--resume"])[0] == 0
    finished = _tree(out)
    assert _call([*BASE, "--method", "baseline", "--out", out])[0] == 2
    assert _tree(out) == finished
    # --overwrite starts afresh: the entry is gone and the checkpoint is a new one at step 1
    code, _, err = _call([*BASE, "--method", "baseline", "--out", out, "--overwrite", "--stop-after", "1"])
    assert (code, err) == (0, [])
    assert "baseline" not in read_results(out / "results.json")["methods"]
    assert load_checkpoint(checkpoint)["step"] == 1


def _data_fails_after(monkeypatch, works: int, error: Exception) -> None:
    """The sine data fails to load from its ``works + 1``-th use on (the first methods set up fine)."""
    original = SineFamily.__init__
    uses = []

    def init(self, *args, **kwargs):
        uses.append(1)
        if len(uses) > works:
            raise error
        original(self, *args, **kwargs)

    monkeypatch.setattr(SineFamily, "__init__", init)


@pytest.mark.parametrize("error", [RuntimeError("no data here"), UsageError("no data here")])
@pytest.mark.parametrize("works", [0, 1])
def test_setup_failure_leaves_no_output_directory(tmp_path, monkeypatch, error, works):
    _data_fails_after(monkeypatch, works, error)  # works=1: baseline's step-0 checkpoint is written first
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    parent = tmp_path / "parent"
    parent.mkdir()
    code, _, err = _call([*BASE, "--method", "baseline,maml", "--out", parent / "run"])
    assert code == (2 if isinstance(error, UsageError) else 1)
    _one_error_line(err, "no data here")
    assert list(parent.iterdir()) == []


def test_setup_failure_leaves_no_parent_directory(tmp_path, monkeypatch):
    _data_fails_after(monkeypatch, 1, UsageError("no data here"))  # baseline's step-0 checkpoint is written first
    code, _, err = _call([*BASE, "--method", "baseline,maml", "--out", tmp_path / "new" / "run"])
    assert code == 2
    _one_error_line(err, "no data here")
    assert not (tmp_path / "new" / "run").exists()
    assert not (tmp_path / "new").exists()


def test_setup_failure_keeps_what_was_there(stopped_run, tmp_path, monkeypatch):
    out = _copy(stopped_run, tmp_path)
    before = _tree(out)
    _data_fails_after(monkeypatch, 1, UsageError("no data here"))
    code, _, err = _call([*BASE, "--method", "maml,reptile", "--out", out])
    assert code == 2
    _one_error_line(err, "no data here")
    assert _tree(out) == before  # the maml and reptile directories it made are gone, the baseline run untouched


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_of_dead_writers_are_removed_on_resume(stopped_run, tmp_path):
    out = _copy(stopped_run, tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        dead = _dead_pid()
        stale = [out / "baseline" / f".checkpoint.pt.{dead}.abc.tmp", out / f".results.json.{dead}.x1y.tmp"]
        live = out / "baseline" / f".checkpoint.pt.{sleeper.pid}.abc.tmp"
        other = out / "baseline" / "notes.tmp"  # not a writer's temporary file
        for path in [*stale, live, other]:
            path.write_bytes(b"half written")
        code, _, err = _call([*BASE, "--method", "baseline", "--out", out, "--resume"])
        assert (code, err) == (0, [])
        assert not any(path.exists() for path in stale)
        assert live.read_bytes() == b"half written" and other.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


# ------------------------------------------------------------------------------ 7. killed at random points


def _comparable(entry: dict) -> dict:
    """A results entry without what depends on the clock or the command line."""
    kept = {k: v for k, v in entry.items() if "time" not in k and k != "provenance"}
    kept["history"] = [{k: v for k, v in row.items() if "time" not in k} for row in entry["history"]]
    return kept


def _kill_runs(argv: list, outs: list[Path], delays: list[float], after_checkpoint: list[bool], cwd: Path) -> list:
    """Start one run per ``out`` at once and SIGKILL each ``delay`` seconds after it started (or, where
    ``after_checkpoint``, after its step-0 checkpoint appeared). Returns the finished processes."""
    checkpoints = [out / "maml" / "checkpoint.pt" for out in outs]
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [*_warpgrad_command(), *argv, "--out", str(out)],
            cwd=cwd,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for out in outs
    ]
    kill_at = [None if wait else started + delay for wait, delay in zip(after_checkpoint, delays)]
    deadline = started + 300
    while any(proc.poll() is None for proc in procs) and time.monotonic() < deadline:
        now = time.monotonic()
        for index, proc in enumerate(procs):
            if kill_at[index] is None and checkpoints[index].exists():
                kill_at[index] = now + delays[index]
            if proc.poll() is None and kill_at[index] is not None and now >= kill_at[index]:
                proc.send_signal(signal.SIGKILL)
        time.sleep(0.005)
    for proc in procs:
        proc.kill()
        proc.wait(timeout=60)
    return procs


def _resume_killed(argv: list, phase: str, proc, out: Path, reference: dict, seen: list) -> None:
    """Continue a killed run (a plain rerun if it died before its first checkpoint) and check that
    it ends exactly where the uninterrupted run did."""
    checkpoint = out / "maml" / "checkpoint.pt"
    step = load_checkpoint(checkpoint)["step"] if checkpoint.exists() else None
    seen.append((phase, proc.returncode, step, (out / "results.json").exists()))
    if step is None:
        code, _, err = _call([*argv, "--out", out])
    else:
        code, _, err = _call([*argv, "--out", out, "--resume"])
    assert (code, err) == (0, []), seen
    resumed = _comparable(read_results(out / "results.json")["methods"]["maml"])
    assert resumed == reference, seen
    assert not list(out.rglob("*.tmp")), seen


def _landed_mid_run(seen: list) -> bool:
    return any(phase == "training" and step is not None and not finished for phase, _, step, finished in seen)


def test_killed_runs_resume_to_the_uninterrupted_result(concurrent_runs, tmp_path):
    """SIGKILL a maml run at seeded random moments, continue it, and get the uninterrupted result
    (the maml run of ``concurrent_runs``) exactly."""
    shared, done, training_s = concurrent_runs
    assert done["maml"][0] == 0
    reference = _comparable(read_results(shared / "results.json")["methods"]["maml"])
    assert reference["steps"] == SMOKE.meta_steps and len(reference["history"]) >= 2
    argv = [*BASE, "--method", "maml"]
    rng = random.Random(20261201)
    # Three runs at once (two train side by side, as the reference did): the first is killed while
    # Python starts, the others a random fraction of the reference's training time after their
    # step-0 checkpoint appeared.
    phases = ["starting", "training", "training"]
    delays = [rng.uniform(0.05, 0.5)] + [rng.uniform(0.1, 0.5) * training_s for _ in phases[1:]]
    outs = [tmp_path / f"killed{index}" for index in range(len(phases))]
    procs = _kill_runs(argv, outs, delays, [phase == "training" for phase in phases], tmp_path)
    seen: list = []
    for phase, proc, out in zip(phases, procs, outs):
        _resume_killed(argv, phase, proc, out, reference, seen)
    # A fast machine can finish a smoke run before a timed kill lands: then kill a fresh run the
    # moment its step-0 checkpoint appears, until one kill lands mid-run.
    for attempt in range(4):
        if _landed_mid_run(seen):
            break
        out = tmp_path / f"retry{attempt}"
        (proc,) = _kill_runs(argv, [out], [0.0], [True], tmp_path)
        _resume_killed(argv, "training", proc, out, reference, seen)
    print("kills (phase, exit code, checkpoint step, results.json written):", seen)
    assert seen[0][2] is None, seen  # the first kill did land before any checkpoint
    assert _landed_mid_run(seen), seen


def test_rerun_after_a_kill_mid_setup(tmp_path):
    """Killed while writing its step-0 checkpoint (what that leaves: a method directory holding a
    temporary file of a dead process): a plain rerun works and removes the temporary file."""
    out = tmp_path / "run"
    (out / "maml").mkdir(parents=True)
    stale = out / "maml" / f".checkpoint.pt.{_dead_pid()}.k1ll.tmp"
    stale.write_bytes(b"WARPGRAD-CHECKPOINT 2 sha256=")
    code, _, err = _call([*BASE, "--method", "maml", "--out", out, "--stop-after", "1"])
    assert (code, err) == (0, [])
    assert not stale.exists() and load_checkpoint(out / "maml" / "checkpoint.pt")["step"] == 1
