"""Fuzzing the command line: ``--set KEY=VALUE`` and whole argument lists of run/show/report/list.

Every input gets exit code 0 or 2 (1 is for training failures, which cannot happen here: training
is replaced by a stub); a 2 prints exactly one stderr line ``warpgrad: error: ...``; never a
traceback and never "internal error".

Bad inputs exercised per full run of this file: the fixed corpora below hold 100+ distinct bad
``--set`` arguments (``BAD_SETTINGS``, asserted) and 40+ bad argument lists (``BAD_ARGVS``), and
hypothesis draws 450 more examples (``--set`` for two experiments, several ``--set`` at once, and
whole argument lists), most of them bad.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import warpgrad.distributed
import warpgrad.engine.runs
from warpgrad.cli import main
from warpgrad.experiments import get_experiment

EXPERIMENTS = ("sine", "kanji-fewshot")
SETTING_NAMES = {name: get_experiment(name).profile("smoke").setting_names() for name in EXPERIMENTS}
SINE_METHODS = list(get_experiment("sine").methods)

# Texts that are bad for most settings; together with the setting names below they make 100+ distinct
# bad --set arguments.
ODD_VALUES = [
    "nan",
    "NaN",
    "-nan",
    "inf",
    "-inf",
    "Infinity",
    "1e309",
    "-1e309",
    "-1",
    "-0.5",
    "1e-400",
    "",
    " ",
    ",",
    ",,",
    "1,,2",
    "1,",
    "abc",
    "1.5.2",
    "0x10",
    "\x1b[31mred",
    "é",
    "漢字",
    "true",
    "none",
    "9" * 5000,
    "-" + "9" * 40,
]
# Settings of the sine smoke profile and a value each of them must refuse.
BAD_SETTINGS = sorted(
    {f"{key}={value}" for key in ("meta_steps", "meta_batch", "shots", "inner_steps") for value in ODD_VALUES}
    | {f"{key}={value}" for key in ("inner_lr", "maml.meta_lr", "warpgrad.warp_lr") for value in ODD_VALUES[:14]}
    | {f"{key}={value}" for key in ("hidden",) for value in ["", "0,8", "8,-1", "a,b", "8,,8", "nan", "1e309"]}
    | {f"{key}=1" for key in ("nosuch", "warp", "warpgrad", "warpgrad.", ".", "maml.nosuch", "hidden.x", "é", "a b")}
    | {"warpgrad.warp_batch=0", "warpgrad.warp_batch=-3", "metasgd.meta_lr=0", "anil.meta_lr=-1"}
)
assert len(BAD_SETTINGS) >= 100, len(BAD_SETTINGS)


def _call(argv: list[str]) -> tuple[int, str, list[str]]:
    """``main(argv)``: exit code, stdout and the non-blank stderr lines."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), [line for line in err.getvalue().splitlines() if line.strip()]


def _norm(text: str) -> str:
    return " ".join(text.split())


def _mentions(line: str, text: str) -> bool:
    """Whether ``line`` holds ``text`` as typed or as Python writes it quoted (repr), whitespace collapsed."""
    return bool(text) and (_norm(text) in line or _norm(repr(text)) in line)


def _names_setting(line: str, argument: str) -> bool:
    """Whether an error line names the bad ``--set`` argument: its key, or (no key) the argument itself."""
    key = argument.partition("=")[0].strip()
    return _mentions(line, key) if key else _mentions(line, argument.strip()) or _mentions(line, argument)


def _check_outcome(code: int, out: str, err: list[str]) -> None:
    """The property of every command line here: 0, or 2 with one line; no traceback, no bug report."""
    text = out + "\n".join(err)
    assert "Traceback" not in text and "internal error" not in text, text
    assert code in (0, 2), (code, err)
    if code == 2:
        assert len(err) == 1 and err[0].startswith("warpgrad: error: "), err


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("WARPGRAD_DEBUG", raising=False)


def _set_argv(experiment: str, arguments: list[str]) -> list[str]:
    """``show EXPERIMENT --profile smoke`` with ``arguments`` as ``--set`` values. An argument that
    starts with '-' is passed as ``--set=ARG``: argparse takes a separate ``-x=1`` for an option
    (see test_set_value_starting_with_a_dash_is_named)."""
    argv = ["show", experiment, "--profile", "smoke"]
    for argument in arguments:
        argv += [f"--set={argument}"] if argument.startswith("-") else ["--set", argument]
    return argv


# ------------------------------------------------------------------------------ --set, fixed corpus


def test_bad_settings_corpus_is_refused_with_one_line_naming_the_key():
    for argument in BAD_SETTINGS:
        code, out, err = _call(_set_argv("sine", [argument]))
        _check_outcome(code, out, err)
        assert code == 2, (argument, out[:200])
        assert _names_setting(err[0], argument), (argument, err[0][:300])
        assert out == ""


def test_good_settings_are_applied():
    code, out, err = _call(_set_argv("sine", ["meta_steps=7", "inner_lr=0.5", "hidden=8,4", "maml.meta_lr=0.1"]))
    assert code == 0 and err == []
    shown = json.dumps(json.loads(out))
    for fragment in ('"meta_steps": 7', '"inner_lr": 0.5', '"meta_lr": 0.1'):
        assert fragment in shown


# ------------------------------------------------------------------------------ --set, hypothesis

VALUES = st.one_of(
    st.sampled_from(ODD_VALUES + ["0", "1", "2", "0.5", "10", "8,8", "1,2,3", str(10**30), "false", "adam", "sgd"]),
    st.text(max_size=12),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.lists(st.integers(-3, 40).map(str), min_size=0, max_size=3).map(",".join),
)


def _keys(experiment: str) -> st.SearchStrategy[str]:
    names = SETTING_NAMES[experiment]
    return st.one_of(
        st.sampled_from(names),
        st.sampled_from(names).map(lambda k: k + "x"),
        st.sampled_from(names).map(lambda k: k.upper()),
        st.text(max_size=10),
    )


FUZZ = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@FUZZ
@given(data=st.data())
def test_fuzz_one_setting(experiment, data):
    key = data.draw(_keys(experiment), label="key")
    value = data.draw(VALUES, label="value")
    argument = f"{key}={value}"
    code, out, err = _call(_set_argv(experiment, [argument]))
    _check_outcome(code, out, err)
    if code == 2:
        assert _names_setting(err[0], argument), (argument, err[0][:300])
        assert out == ""
    else:
        assert err == [] and isinstance(json.loads(out), dict)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    pairs=st.lists(st.tuples(_keys("sine"), VALUES), min_size=2, max_size=4),
)
def test_fuzz_several_settings(pairs):
    arguments = [f"{key}={value}" for key, value in pairs]
    code, out, err = _call(_set_argv("sine", arguments))
    _check_outcome(code, out, err)
    if code == 2:
        assert any(_names_setting(err[0], argument) for argument in arguments), (arguments, err[0][:300])
    # one bad setting makes the whole command line bad
    alone = [_call(_set_argv("sine", [argument]))[0] for argument in arguments]
    keys = [argument.partition("=")[0].strip() for argument in arguments]
    if len(set(keys)) == len(keys):  # (a repeated key: the last one wins)
        assert (code == 2) == (2 in alone), (arguments, alone, err)


def test_set_value_starting_with_a_dash_is_named():
    code, _, err = _call(["show", "sine", "--profile", "smoke", "--set", "-x=1"])
    assert code == 2 and len(err) == 1
    assert "-x" in err[0]


# ------------------------------------------------------------------------------ whole argument lists


@pytest.fixture
def stub_training(monkeypatch):
    """``run`` without training: every method "finishes" at once with a made-up entry; ``--nproc N``
    starts no processes but runs the ranks' command here, writing what they would. Returns the calls
    (method names, and launches)."""
    calls: list = []

    def train(experiment, method, profile, seed, out_dir, **kwargs):
        calls.append(method)
        return {
            "metric": "mse",
            "lower_is_better": True,
            "mean": 1.0,
            "ci95": None,
            "per_task": [1.0],
            "n_tasks": 1,
            "steps": profile.meta_steps,
            "history": [],
        }

    def launch(arguments, nproc):  # the ranks' run, done here in one process as they would finish it
        calls.append(("launch", nproc))
        return main(list(arguments))

    monkeypatch.setattr(warpgrad.engine.runs, "train", train)
    monkeypatch.setattr(warpgrad.engine.runs, "plot_learning_curves", lambda *a, **k: None)
    monkeypatch.setattr(warpgrad.distributed, "launch", launch)
    return calls


RESULTS = {
    "experiment": "sine",
    "profile": "smoke",
    "seed": 0,
    "settings": "",
    "metric": "mse",
    "lower_is_better": True,
    "methods": {
        "baseline": {"metric": "mse", "mean": 2.0, "ci95": 0.5, "n_tasks": 3, "per_task": [1.0, 2.0, 3.0]},
        "maml": {"metric": "mse", "mean": 1.0, "ci95": 0.5, "n_tasks": 3, "per_task": [0.5, 1.0, 1.5]},
    },
}

# {tmp} is the example's own directory; it holds `a-file` (a file) and `done/results.json` (valid results)
OUT_CHOICES = ["{tmp}/out", "{tmp}/out/deep/er", "{tmp}/a-file", "{tmp}/a-file/sub", "", " ", "{tmp}/done"]
RUN_OPTIONS = st.one_of(
    st.tuples(st.just("--seed"), st.sampled_from(["-1", "0", "1", "4294967296", "x", "", "1.5", "1e3"])),
    st.tuples(st.just("--seeds"), st.sampled_from(["5-1", "a", "0-1", "0,3", "0-1000", "1,,2", "-", "-3-2", "2"])),
    st.tuples(st.just("--out"), st.sampled_from(OUT_CHOICES)),
    st.tuples(st.just("--nproc"), st.sampled_from(["0", "-1", "1", "2", "5", "x"])),
    st.tuples(st.just("--profile"), st.sampled_from(["x", "smoke", "SMOKE", ""])),
    st.tuples(st.just("--method"), st.sampled_from([",,", "maml", "baseline,maml", "foo", "all", "maml,", " "])),
    st.tuples(st.just("--stop-after"), st.sampled_from(["0", "-2", "1", "x", "1.5"])),
    st.tuples(st.just("--format"), st.sampled_from(["xml", "md"])),
    st.tuples(st.just("--device"), st.sampled_from(["tpu", "cpu", "cuda", ""])),
    st.tuples(st.just("--precision"), st.sampled_from(["bf16", "fp8", "fp32"])),
    st.tuples(st.just("--log"), st.sampled_from(["none", "wandb"])),
    st.tuples(st.just("--set"), st.sampled_from(["meta_steps=0", "inner_lr=nan", "nokey", "meta_steps=2", "x=1"])),
    st.sampled_from([("--resume",), ("--overwrite",), ("--no-progress",), ("--bogus",), ("-h",), ("--",)]),
)
REPORT_OPTIONS = st.one_of(
    st.tuples(st.just("--format"), st.sampled_from(["xml", "md", "latex", "csv", "text", ""])),
    st.tuples(st.just("--method"), st.sampled_from([",,", "maml", "foo", "maml,baseline", ""])),
    st.tuples(st.just("--against"), st.sampled_from(["maml", "foo", ""])),
    st.tuples(st.just("--out"), st.just("x")),
    st.sampled_from([("--resume",), ("--bogus",)]),
)
REPORT_PATHS = st.sampled_from(["{tmp}/done", "{tmp}/done/results.json", "{tmp}/nothing", "{tmp}/a-file", "{tmp}"])


@st.composite
def argvs(draw) -> list[str]:
    command = draw(st.sampled_from(["run", "run", "run", "show", "report", "list", "frobnicate", ""]))
    argv = [command] if command else []
    if command in ("run", "show"):
        experiment = draw(st.sampled_from(["sine", "sine", "nosuch", "", "sine:", ":X", "x.py:E", "os:path", "--"]))
        options = draw(st.lists(RUN_OPTIONS, max_size=5))
        argv += [experiment, *[part for option in options for part in option]]
        if command == "run" and draw(st.booleans()):
            argv += ["--profile", "smoke", "--no-progress"]
    elif command == "report":
        argv += draw(st.lists(REPORT_PATHS, max_size=2))
        argv += [part for option in draw(st.lists(REPORT_OPTIONS, max_size=3)) for part in option]
    elif command == "list":
        argv += draw(st.sampled_from([[], ["--method", "x"], ["extra"], ["-h"]]))
    return argv


def _tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else b"") for p in directory.rglob("*")}


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(argv=argvs())
def test_fuzz_argument_lists(stub_training, argv):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a-file").write_text("not a directory\n")
        (Path(tmp) / "done").mkdir()
        (Path(tmp) / "done" / "results.json").write_text(json.dumps(RESULTS))
        argv = [part.replace("{tmp}", tmp) for part in argv]
        before = _tree(Path(tmp))
        stub_training.clear()
        cwd = os.getcwd()
        os.chdir(tmp)  # the default --out (runs/...) lands here
        try:
            code, out, err = _call(argv)
        finally:
            os.chdir(cwd)
        _check_outcome(code, out, err)
        if code == 2:
            assert not stub_training, (argv, stub_training)  # refused before any training
            assert _tree(Path(tmp)) == before, argv  # and before anything was written
        elif argv[:1] == ["run"] and not {"-h", "--help"} & set(argv):
            assert stub_training, argv  # a run that exits 0 ran something


# Hand-picked bad argument lists: each one exit 2, one line, nothing written, naming what is wrong.
BAD_ARGVS = [
    (["run", "sine", "--seed", "-1"], "'-1'"),
    (["run", "sine", "--seed", "4294967296"], "'4294967296'"),
    (["run", "sine", "--seeds", "5-1"], "'5-1'"),
    (["run", "sine", "--seeds", "a"], "'a'"),
    (["run", "sine", "--seeds", "0-1000"], "'0-1000'"),
    (["run", "sine", "--seeds", "1,,2"], "''"),
    (["run", "sine", "--seed", "1", "--seeds", "1"], "--seeds"),
    (["run", "sine", "--out", ""], "--out"),
    (["run", "sine", "--out", "   "], "--out"),
    (["run", "sine", "--out", "{tmp}/a-file"], "a-file"),
    (["run", "sine", "--out", "{tmp}/a-file/sub"], "a-file"),
    (["run", "sine", "--nproc", "0"], "--nproc"),
    (["run", "sine", "--nproc", "-4"], "--nproc"),
    (["run", "sine", "--nproc", "5"], "--nproc 5"),
    (["run", "sine", "--nproc", "two"], "'two'"),
    (["run", "sine", "--profile", "x"], "'x'"),
    (["run", "sine", "--profile", ""], "''"),
    (["run", "sine", "--method", ",,"], "method"),
    (["run", "sine", "--method", "maml,foo"], "'foo'"),
    (["run", "sine", "--method", "MAML"], "'MAML'"),
    (["run", "sine", "--stop-after", "0"], "stop_after"),
    (["run", "sine", "--stop-after", "-1"], "stop_after"),
    (["run", "sine", "--stop-after", "1.5"], "'1.5'"),
    (["run", "sine", "--resume", "--overwrite"], "--overwrite"),
    (["run", "sine", "--resume"], "checkpoint"),
    (["run", "sine", "--format", "xml"], "--format"),
    (["run", "sine", "--device", "tpu"], "'tpu'"),
    (["run", "sine", "--precision", "fp8"], "'fp8'"),
    (["run", "sine", "--log", "wandb"], "'wandb'"),
    (["run", "sine", "--set", "meta_steps=0"], "meta_steps"),
    (["run", "sine", "--set", "warpgrad.objective=second"], "'second'"),
    (["run", "sine", "--set", "inner_optimizer=nosuch"], "'nosuch'"),
    (["run", "sine", "--set", "maml.meta_optimizer=nosuch"], "'nosuch'"),
    (["run", "sine:"], "'sine:'"),
    (["run", "os:path"], "'os:path'"),
    (["run", "x.py:E"], "'x.py'"),
    (["run", ""], "''"),
    (["show", "sine", "--seed", "1"], "--seed"),
    (["show", "sine", "--method", "foo"], "'foo'"),
    (["report", "{tmp}/nothing"], "nothing"),
    (["report", "{tmp}/a-file"], "a-file"),
    (["report", "{tmp}/done", "--format", "xml"], "'xml'"),
    (["report", "{tmp}/done", "--against", "foo"], "foo"),
    (["report", "{tmp}/done", "--method", "foo"], "foo"),
    (["report"], "DIR"),
    (["list", "extra"], "extra"),
    (["frobnicate"], "'frobnicate'"),
]


@pytest.mark.parametrize("argv, named", BAD_ARGVS, ids=[" ".join(a) or "empty" for a, _ in BAD_ARGVS])
def test_bad_argument_lists(stub_training, tmp_path, monkeypatch, argv, named):
    (tmp_path / "a-file").write_text("not a directory\n")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "results.json").write_text(json.dumps(RESULTS))
    monkeypatch.chdir(tmp_path)
    argv = [part.replace("{tmp}", str(tmp_path)) for part in argv]
    if argv[0] == "run" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    if argv[0] == "run" and "--profile" not in argv:
        argv += ["--profile", "smoke", "--no-progress"]
    before = _tree(tmp_path)
    code, out, err = _call(argv)
    _check_outcome(code, out, err)
    assert code == 2, (argv, out[-300:])
    assert named in err[0], err[0][:300]
    assert not stub_training and _tree(tmp_path) == before


def test_valid_argument_lists_run_the_stub(stub_training, tmp_path):
    out = str(tmp_path / "out")
    code, stdout, err = _call(["run", "sine", "--profile", "smoke", "--method", "maml,baseline", "--out", out])
    assert (code, err) == (0, []) and stub_training == ["maml", "baseline"]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["methods"].keys() == {"maml", "baseline"}
    stub_training.clear()
    code, _, err = _call(["run", "sine", "--profile", "smoke", "--method", "maml", "--nproc", "2", "--out", out + "2"])
    assert (code, err) == (0, []) and stub_training == [("launch", 2), "maml"]  # the launch, then its ranks train maml


def test_seeds_with_stop_after_exit_0(tmp_path, monkeypatch):
    """Regression: this used to exit 2 ('SEED-DIR: no results.json in this directory or below it')."""
    monkeypatch.setattr(warpgrad.engine.runs, "train", lambda *a, **k: None)  # what train returns when stopped
    argv = ["run", "sine", "--profile", "smoke", "--method", "baseline", "--seeds", "0-1", "--stop-after", "1"]
    code, out, err = _call([*argv, "--out", str(tmp_path), "--no-progress"])
    assert out.count("stopped after 1 meta-steps") == 2  # both seeds ran and stopped
    assert (code, err) == (0, [])  # and no report across seeds that have no results yet
    assert "across seeds" not in out


def test_seeds_with_nproc_report_across_the_seeds_the_ranks_wrote(stub_training, tmp_path, monkeypatch):
    """The case the fuzzer found: ``--seeds 0-1 --nproc 2`` launches each seed and then reports them."""
    monkeypatch.chdir(tmp_path)
    code, out, err = _call(["run", "sine", "--profile", "smoke", "--seeds", "0-1", "--nproc", "2"])
    assert (code, err) == (0, [])
    assert stub_training.count(("launch", 2)) == 2 and "across seeds 0, 1" in out
