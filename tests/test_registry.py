"""The method registry's contract: every method × experiment pair builds or is refused in one
line; typed configs reach every constructor option; ``--set`` of an option absent from the
profile is applied and recorded; ``warpgrad show`` prints the resolved configuration."""

import inspect
import json

import pytest

from warpgrad.cli import main
from warpgrad.engine import run
from warpgrad.engine.loop import resolve_methods
from warpgrad.experiments import EXPERIMENTS, build_method, get_experiment
from warpgrad.methods.registry import config_fields, registered

PAIRS = [(e, m) for e in EXPERIMENTS for m in registered()]


@pytest.mark.parametrize("experiment, method", PAIRS)
def test_every_method_and_experiment_pair_builds_or_is_refused_in_one_line(experiment, method):
    exp = EXPERIMENTS[experiment]
    if method in exp.methods:
        learner = build_method(exp, method, exp.profile("smoke"), 0)
        assert callable(getattr(learner, "meta_step", None))
        assert callable(getattr(learner, "state_dict", None))
    else:
        with pytest.raises(ValueError) as refused:
            resolve_methods(exp, method)
        message = str(refused.value)
        assert "\n" not in message and repr(method) in message and "allowed" in message


def test_stream_and_sequential_methods_build_too():
    for exp in EXPERIMENTS.values():
        for name in exp.methods:
            if name not in registered():
                assert build_method(exp, name, exp.profile("smoke"), 0) is not None


@pytest.mark.parametrize("name", list(registered()))
def test_config_fields_are_the_constructors_keyword_options(name):
    """Every keyword option the constructor declares is a config field (so --set reaches it), and
    the learner builds with every config field passed (so no field is one it does not take)."""
    info = registered()[name]
    declared = {
        p
        for p, v in inspect.signature(info.cls.__init__).parameters.items()
        if v.kind is inspect.Parameter.KEYWORD_ONLY and p not in ("adapt", "meta_filter")  # filters: not CLI values
    }
    from_experiment = set((info.experiment_options or (lambda o: {}))({"inner_lr": 0.1}))
    assert declared - from_experiment <= set(config_fields(info.config))
    sine = get_experiment("sine")
    assert build_method(sine, name, sine.profile("smoke"), 0) is not None  # all fields passed: accepted


def test_set_of_an_option_absent_from_the_profile_is_applied_and_recorded(tmp_path):
    sine = get_experiment("sine")
    assert "init_weight" not in sine.profile("smoke").options["warpgrad"]
    profile = sine.resolve("smoke", {"warpgrad.init_weight": "0.5", "anil.head": "layers.4"})
    assert build_method(sine, "warpgrad", profile, 0).init_weight == 0.5
    anil = build_method(sine, "anil", profile, 0)
    assert sorted(anil.parameters_by_role()[0]) == ["layers.4.bias", "layers.4.weight"]
    results = run("sine", ["warpgrad"], "smoke", 0, tmp_path, progress=False, settings={"warpgrad.init_weight": "0.5"})
    assert "warpgrad.init_weight=0.5" in results["settings"]
    assert "warpgrad.init_weight=0.5" in json.loads((tmp_path / "results.json").read_text())["settings"]
    default = run("sine", ["warpgrad"], "smoke", 0, tmp_path / "default", progress=False)
    assert default["methods"]["warpgrad"]["per_task"] != results["methods"]["warpgrad"]["per_task"]


def test_an_optional_method_option_absent_from_the_profile_can_be_set_to_none():
    sine = get_experiment("sine")
    assert "maml_steps" not in sine.profile("smoke").options["warpgrad"]
    profile = sine.resolve("smoke", {"warpgrad.maml_steps": "none", "warpgrad.warp_batch": "3"})
    assert profile.options["warpgrad"]["maml_steps"] is None and profile.options["warpgrad"]["warp_batch"] == 3
    assert build_method(sine, "warpgrad", sine.resolve("smoke", {"warpgrad.maml_steps": "2"}), 0).maml_steps == 2
    with pytest.raises(ValueError, match="expected an integer or none"):
        sine.resolve("smoke", {"warpgrad.maml_steps": "two"})


def test_unknown_option_lists_the_allowed_names(capsys):
    code = main(["run", "sine", "--profile", "smoke", "--set", "warpgrad.init_wieght=0.5", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "unknown setting 'warpgrad.init_wieght'" in err[0]
    assert "warpgrad.init_weight" in err[0] and "warpgrad.warp_lr" in err[0]


def test_show_prints_the_resolved_configuration(capsys):
    assert main(["show", "sine", "--profile", "smoke", "--method", "warpgrad", "--set", "warpgrad.init_weight=2"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["methods"]["warpgrad"]["init_weight"] == 2.0
    assert shown["methods"]["warpgrad"]["init"] == "maml"  # from the profile
    assert shown["methods"]["warpgrad"]["leap_norm"] is True  # a default the profile does not set
    assert shown["schedule"]["meta_steps"] == 4 and shown["options"]["inner_steps"] == 5
