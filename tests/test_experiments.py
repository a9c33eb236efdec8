"""Experiment registry: every method builds from every profile; --set overrides; image runs resume exactly."""

from dataclasses import replace

import pytest
import torch

from warpgrad.engine import train
from warpgrad.engine.checkpoint import load_checkpoint
from warpgrad.experiments import (
    EXPERIMENTS,
    METHODS,
    StreamExperiment,
    build_method,
    get_experiment,
    register_experiment,
)
from warpgrad.experiments.base import RLExperiment, TrialExperiment


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_every_method_builds_from_every_profile(experiment):
    exp = get_experiment(experiment)
    own_methods = ("sine-continual", "kanji-multishot-ablation")  # their methods are their own
    if experiment not in own_methods and not isinstance(exp, StreamExperiment):
        assert set(exp.methods) == set(METHODS)
    for profile in exp.profiles.values():
        for method in exp.methods:
            learner = build_method(exp, method, profile, seed=0)
            step = getattr(learner, "meta_step", None) or getattr(learner, "train_experience", None)
            if isinstance(exp, RLExperiment):  # agents act step by step: forward(observation, state)
                step = learner.forward if callable(learner.initial_state) else None
            if isinstance(exp, TrialExperiment):  # one training run: run(seed, method_dir, progress)
                assert callable(learner.run)
                continue
            assert callable(step) and callable(learner.state_dict)
            if "ways" in profile.options and hasattr(learner.model, "classifier"):  # head sized to the task
                assert learner.model.classifier.out_features == profile.options["ways"]


def test_overrides_parse_to_the_type_of_the_current_value():
    profile = get_experiment("sine").profile("smoke")
    changed = profile.with_overrides(
        {"hidden": "8,4", "inner_lr": "0.5", "meta_steps": "9", "warpgrad.warp_batch": "7", "warpgrad.init": "leap"}
    )
    assert changed.options["hidden"] == (8, 4) and changed.options["inner_lr"] == 0.5
    assert changed.meta_steps == 9 and changed.options["warpgrad"]["warp_batch"] == 7
    assert changed.options["warpgrad"]["init"] == "leap"
    assert profile.options["warpgrad"]["init"] == "maml"  # the registered profile is untouched
    assert changed.settings == "hidden=8,4,inner_lr=0.5,meta_steps=9,warpgrad.init=leap,warpgrad.warp_batch=7"
    image = get_experiment("kanji-multishot").profile("smoke")
    assert image.with_overrides({"augment": "false"}).options["augment"] is False


def test_kanji_multishot_resume_is_bit_exact_with_augmentation_and_replay(tmp_path):
    full = train("kanji-multishot", "warpgrad", "smoke", seed=3, out_dir=tmp_path / "a", progress=False)
    assert (
        train("kanji-multishot", "warpgrad", "smoke", seed=3, out_dir=tmp_path / "b", stop_after=1, progress=False)
        is None
    )
    resumed = train("kanji-multishot", "warpgrad", "smoke", seed=3, out_dir=tmp_path / "b", resume=True, progress=False)
    assert full["per_task"] == resumed["per_task"] and full["metric"] == "accuracy"
    a = load_checkpoint(tmp_path / "a" / "warpgrad" / "checkpoint.pt")["learner"]["model"]
    b = load_checkpoint(tmp_path / "b" / "warpgrad" / "checkpoint.pt")["learner"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert 0.0 <= full["mean"] <= 1.0


def test_image_experiment_tasks_come_from_disjoint_class_splits():
    from warpgrad.tasks.base import family_split

    exp = get_experiment("kanji-fewshot")
    family = exp.make_family(exp.profile("smoke"))
    classes = {
        split: {
            c
            for seed in range(5)
            for c in family_split(family, split).sample(torch.Generator().manual_seed(seed)).classes
        }
        for split in ("train", "val", "test")
    }
    assert not classes["train"] & classes["val"] and not classes["train"] & classes["test"]
    assert not classes["val"] & classes["test"]


USER_MODULE = """
from dataclasses import replace

from warpgrad.experiments import SINE

MY_SINE = replace(SINE, name="my-sine", description="a user's sine experiment")
NOT_AN_EXPERIMENT = 42
"""


def test_get_experiment_imports_package_module_name(tmp_path, monkeypatch):
    (tmp_path / "user_experiments_fixture.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_experiments_fixture

    exp = get_experiment("user_experiments_fixture:MY_SINE")
    assert exp is user_experiments_fixture.MY_SINE and exp.name == "my-sine"
    assert "my-sine" not in EXPERIMENTS  # naming it does not register it

    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz': No module named") as error:
        get_experiment("no_such_module_xyz:EXP")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="has no attribute 'MISSING'; its experiments: MY_SINE, SINE") as error:
        get_experiment("user_experiments_fixture:MISSING")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"NOT_AN_EXPERIMENT is not an Experiment \(type int\)") as error:
        get_experiment("user_experiments_fixture:NOT_AN_EXPERIMENT")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="unknown experiment 'no-such-experiment'; allowed: sine, "):
        get_experiment("no-such-experiment")


def test_register_experiment_adds_a_users_experiment():
    mine = replace(get_experiment("sine"), name="registered-sine")
    try:
        assert register_experiment(mine) is mine and get_experiment("registered-sine") is mine
        assert list(EXPERIMENTS)[-1] == "registered-sine"
        register_experiment(mine)  # the same object again: nothing to do
        with pytest.raises(ValueError, match="'registered-sine' is already registered"):
            register_experiment(replace(mine))
        with pytest.raises(ValueError, match="'sine' is already registered"):
            register_experiment(replace(mine, name="sine"))
    finally:
        EXPERIMENTS.pop("registered-sine", None)


def test_every_experiment_module_imports_first_in_a_fresh_interpreter():
    """No import cycle: each module of warpgrad.experiments can be the first thing a user imports."""
    import pkgutil
    import subprocess
    import sys

    import warpgrad.experiments as package

    names = [f"warpgrad.experiments.{m.name}" for m in pkgutil.iter_modules(package.__path__)]
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)"
    for name in names:
        done = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True)
        assert done.returncode == 0, (name, done.stderr[-2000:])
