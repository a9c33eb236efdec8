"""The stream runner: accuracy matrix against a hand-known learner, task-incremental output masks,
the validation split, threads; the CLI path end to end (digits, and Fashion-MNIST experiments on
small generated arrays: no test reads Fashion-MNIST files, which CI machines do not have)."""

import json
from dataclasses import dataclass, replace

import pytest
import torch
from torch import Tensor

from warpgrad import experiments
from warpgrad.cli import main
from warpgrad.engine import streams as streams_module
from warpgrad.engine.results import read_results
from warpgrad.engine.streams import accuracy, accuracy_matrix_of, run_streams, table
from warpgrad.errors import TrainingDiverged
from warpgrad.tasks.continual import Experience, Stream


@dataclass
class Exp:
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


class Memoriser:
    """Predicts correctly exactly the experiences whose marker it has trained on; forgets all but
    the last ``memory`` of them. Its accuracy matrix is known by hand."""

    def __init__(self, memory):
        self.memory, self.seen, self.ends = memory, [], 0

    def train_experience(self, x, y, generator, epochs, batch_size, classes):
        assert classes is None  # not a task-incremental stream
        self.seen = (self.seen + [int(x[0, 0])])[-self.memory :]

    def end_experience(self, x, y, generator, classes):
        self.ends += 1

    def predict(self, x, classes):
        known = torch.tensor([int(v) in self.seen for v in x[:, 0]])
        label = x[:, 1].long()
        return torch.nn.functional.one_hot(torch.where(known, label, (label + 1) % 3), 3).float()


def stream(n=3):
    out = []
    for e in range(n):
        x = torch.tensor([[float(e), float(i % 3)] for i in range(6)])
        out.append(Exp(x, x[:, 1].long(), x, x[:, 1].long()))
    return out


def test_accuracy_matrix_rows_are_accuracies_after_each_experience():
    learner = Memoriser(memory=2)
    R = accuracy_matrix_of(learner, stream(), torch.Generator(), epochs=1, batch_size=4, fisher_samples=2)
    expected = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    assert torch.equal(R, expected)
    assert learner.ends == 3


def test_stream_experiment_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "dp"
    code = main(
        ["run", "digits-permuted", "--profile", "smoke", "--method", "sgd,ewc", "--out", str(out), "--no-progress"]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    for method in ("sgd", "ewc"):
        entry = results["methods"][method]
        assert entry["metric"] == "average_accuracy" and entry["n_tasks"] == 2 and entry["steps"] == 3
        R = torch.tensor(entry["accuracy_matrix"], dtype=torch.float64)
        assert R.shape == (3, 3) and abs(float(R[-1].mean()) - entry["mean"]) < 1e-9  # mean over runs is linear
        assert set(entry["extra"]) == {"forgetting", "backward_transfer", "learning_accuracy"}
        assert (out / f"accuracy_matrix_{method}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["run", "digits-permuted", "--profile", "smoke", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0]


class FixedLogits:
    """Logits [0, 1, 2, 3, 4, 5] for every input (arg-max: output 5) and a record of the masks it got."""

    def __init__(self):
        self.calls = []

    def train_experience(self, x, y, generator, epochs, batch_size, classes):
        self.calls.append(("train", classes, y.tolist()))

    def end_experience(self, x, y, generator, classes):
        self.calls.append(("end", classes, len(y)))

    def predict(self, x, classes):
        logits = torch.arange(6.0).expand(len(x), 6)
        return logits if classes is None else logits[:, classes]


def test_accuracy_with_an_output_mask_by_hand():
    x = torch.zeros(4, 1)
    learner = FixedLogits()
    # no mask: always output 5
    assert accuracy(learner, x, torch.tensor([5, 5, 0, 1])) == 0.5
    # mask [1, 3, 0]: logits [1, 3, 0], arg-max position 1 (output 3); labels are positions in the mask
    assert accuracy(learner, x, torch.tensor([1, 1, 1, 0]), classes=[1, 3, 0]) == 0.75
    assert accuracy(learner, x, torch.tensor([1, 1, 1, 0]), batch_size=3, classes=[1, 3, 0]) == 0.75


def _images(labels):
    return torch.zeros(len(labels), 1, 2, 2), torch.tensor(labels)


@pytest.mark.parametrize("scenario", ["task-incremental", "class-incremental"])
def test_task_incremental_streams_are_learned_and_tested_with_each_experiences_mask(scenario):
    # experience 0: classes [4, 1]; experience 1: classes [2, 5]; test labels: the higher output in each pair
    # (task-incremental: position 0 for [4, 1], position 1 for [2, 5]; class-incremental: 4 and 5)
    task = scenario == "task-incremental"
    ys = [[0, 0], [1, 1]] if task else [[4, 4], [5, 5]]
    experiences = [
        Experience(i, *_images(y + [1 - y[0]] if task else y), *_images(y), classes, i if task else 0)
        for i, (y, classes) in enumerate(zip(ys, [[4, 1], [2, 5]]))
    ]
    stream = Stream("split", scenario, experiences, 2 if task else 6)
    learner = FixedLogits()
    R = accuracy_matrix_of(learner, stream, torch.Generator().manual_seed(0), 1, 2, fisher_samples=5)
    # masked, the arg-max is output 4 of [4, 1] and output 5 of [2, 5]: all right; unmasked always output 5
    expected = [[1.0, 1.0], [1.0, 1.0]] if task else [[0.0, 1.0], [0.0, 1.0]]
    assert torch.equal(R, torch.tensor(expected, dtype=torch.float64))
    masks = [[4, 1], [2, 5]] if task else [None, None]
    assert [(kind, mask) for kind, mask, _ in learner.calls] == [
        ("train", masks[0]),
        ("end", masks[0]),
        ("train", masks[1]),
        ("end", masks[1]),
    ]
    assert learner.calls[1][2] == (3 if task else 2)  # fisher_samples (5) capped at the experience's size


def test_validation_is_carved_from_the_training_images_not_the_test_set():
    o = {"validation": 0.25}
    (train_x, _), (val_x, _) = experiments._stream_arrays("digits", o)
    (all_x, _), (test_x, _) = experiments._arrays("digits")
    assert len(val_x) == 1347 - int(1347 * 0.75) == 337 and len(train_x) == 1010
    rows = lambda x: {tuple(r.flatten().tolist()) for r in x}  # noqa: E731  (digits: no duplicate images)
    train_rows, val_rows = rows(train_x), rows(val_x)
    assert len(train_rows | val_rows) == 1347 and train_rows | val_rows == rows(all_x)  # a partition
    assert not val_rows & rows(test_x)
    assert torch.equal(experiments._stream_arrays("digits", o)[1][0], val_x)  # a fixed split
    assert experiments._stream_arrays("digits", {"validation": 0.0})[1][0] is test_x
    with pytest.raises(ValueError, match=r"validation must be a fraction in \[0, 1\).*got 1.0"):
        experiments._stream_arrays("digits", {"validation": 1.0})


def _spying(exp, record):
    """``exp`` whose make_stream calls ``record(stream)`` on each stream it builds."""

    def make(p, seed):
        stream = exp.make_stream(p, seed)
        record(stream)
        return stream

    return replace(exp, make_stream=make)


def test_validation_runs_evaluate_on_the_held_out_images_and_record_the_setting(tmp_path):
    sizes = []
    exp = _spying(experiments.get_experiment("digits-permuted"), lambda s: sizes.append(len(s[0].test_x)))
    profile = exp.profile("smoke").with_overrides({"validation": "0.2", "runs": "1", "experiences": "2"})
    results = run_streams(exp, ["sgd"], profile, 0, tmp_path, progress=False)
    assert sizes == [1347 - int(1347 * 0.8)] and "validation=0.2" in results["settings"]
    assert ": validation (0.2 of the training images) average_accuracy" in table(results).splitlines()[0]
    results["settings"] = "runs=1"
    assert ": test average_accuracy" in table(results).splitlines()[0]


def test_runner_sets_threads_for_the_run_and_restores_them(tmp_path):
    before = torch.get_num_threads()
    seen = []
    exp = _spying(experiments.get_experiment("digits-permuted"), lambda s: seen.append(torch.get_num_threads()))
    target = 2 if before == 1 else 1
    profile = exp.profile("smoke").with_overrides({"threads": str(target), "runs": "1", "experiences": "1"})
    run_streams(exp, ["sgd"], profile, 0, tmp_path / "a", progress=False)
    assert seen == [target] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be a positive int, got 0"):
        run_streams(exp, ["sgd"], profile.with_overrides({"threads": "0"}), 0, tmp_path / "b", progress=False)
    assert torch.get_num_threads() == before


# --------------------------------------------------------------------------- Fashion-MNIST experiments, generated data


def fake_fashion(per_class=(40, 10)):
    """Ten classes of 28×28 images (train, test): a random binary prototype per class (all classes
    share the pixels, so learning new classes interferes with old ones) plus noise."""
    g = torch.Generator().manual_seed(0)
    prototypes = (torch.rand(10, 1, 28, 28, generator=g) > 0.5).float()

    def part(n):
        y = torch.arange(10).repeat_interleave(n)
        return 0.7 * prototypes[y] + 0.3 * torch.rand(len(y), 1, 28, 28, generator=g), y

    return part(per_class[0]), part(per_class[1])


@pytest.fixture
def fashion(monkeypatch):
    """Fashion-MNIST experiments read small generated arrays (CI has no Fashion-MNIST files)."""
    arrays = fake_fashion()

    def fake(dataset):
        assert dataset == "fashion-mnist"
        return arrays

    monkeypatch.setattr(experiments.streams, "_arrays", fake)  # where _stream_arrays looks it up
    return arrays


def test_fmnist_split_streams(fashion):
    exp = experiments.get_experiment("fmnist-split")
    (train_x, train_y), (test_x, test_y) = fashion
    for scenario in ("task", "class"):
        profile = exp.profile("smoke").with_overrides({"scenario": scenario, "train_per_experience": "30"})
        stream = exp.make_stream(profile, 0)
        assert stream.scenario == f"{scenario}-incremental" and len(stream) == 5
        for t, e in enumerate(stream):
            assert e.classes == [2 * t, 2 * t + 1]  # the dataset's class order, every run
            assert len(e.train_y) == 30 and len(e.test_y) == 20  # 30 of 80 training images, every test image
            labels = [0, 1] if scenario == "task" else e.classes
            assert set(e.test_y.tolist()) == set(labels) and set(e.train_y.tolist()) <= set(labels)
            for k, c in enumerate(e.classes):  # images of label k are images of class c
                y = k if scenario == "task" else c
                rows = lambda x: {tuple(r.flatten().tolist()) for r in x}  # noqa: E731
                assert rows(e.train_x[e.train_y == y]) <= rows(train_x[train_y == c])
                assert torch.equal(e.test_x[e.test_y == y], test_x[test_y == c])
    other = exp.make_stream(exp.profile("smoke").with_overrides({"train_per_experience": "30"}), 1)
    assert not torch.equal(other[0].train_x, stream[0].train_x)  # the subsample depends on the run seed
    validation = exp.make_stream(exp.profile("smoke").with_overrides({"validation": "0.5"}), 0)
    assert sum(len(e.test_y) for e in validation) == 200  # half of the 400 training images
    with pytest.raises(ValueError, match=r"unknown scenario 'domain'; allowed: task, class"):
        exp.make_stream(exp.profile("smoke").with_overrides({"scenario": "domain"}), 0)


def test_fmnist_split_task_and_class_incremental_from_the_command_line(fashion, tmp_path, capsys):
    means = {}
    for scenario, methods in (("task", "sgd,dhp-ewc"), ("class", "sgd")):
        out = tmp_path / scenario
        args = ["run", "fmnist-split", "--profile", "smoke", "--method", methods, "--out", str(out), "--no-progress"]
        sets = [f"scenario={scenario}", "epochs=3", "lr=0.1", "runs=1", "ewc_lambda=1"]
        assert main([*args, *(a for kv in sets for a in ("--set", kv))]) == 0
        results = json.loads((out / "results.json").read_text())
        assert f"scenario={scenario}" in results["settings"]
        means[scenario] = {m: e["mean"] for m, e in results["methods"].items()}
        for entry in results["methods"].values():
            assert entry["steps"] == 5 and len(entry["accuracy_matrix"]) == 5
    # measured: task-incremental 1.0 (each pair told apart on its own two outputs); class-incremental SGD 0.4
    # (forgetting 0.75: it mostly predicts the latest classes)
    assert min(means["task"].values()) > 0.9 and means["class"]["sgd"] < 0.6, means
    capsys.readouterr()
    bad = ["run", "fmnist-split", "--profile", "smoke", "--set", "scenario=domain", "--out", str(tmp_path / "bad")]
    assert main([*bad, "--no-progress"]) == 2
    assert "unknown scenario 'domain'; allowed: task, class" in capsys.readouterr().err


def test_fmnist_permuted_from_the_command_line_on_generated_arrays(fashion, tmp_path):
    out = tmp_path / "fp"
    args = ["run", "fmnist-permuted", "--profile", "smoke", "--method", "sgd", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    entry = json.loads((out / "results.json").read_text())["methods"]["sgd"]
    assert entry["steps"] == 3 and 0.0 <= entry["mean"] <= 1.0


def test_a_diverging_learner_stops_the_run_naming_method_run_and_experience(tmp_path):
    exp = experiments.get_experiment("digits-permuted")
    profile = exp.profile("smoke").with_overrides({"runs": "2", "lr": "1e20"})
    with pytest.raises(TrainingDiverged, match=r"sgd \(run 1\) diverged at experience 1 of \d+ \(mean training loss"):
        run_streams(exp, ["sgd"], profile, 0, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing recorded, nothing left


def test_methods_finished_before_a_divergence_keep_their_entries(tmp_path):
    exp = experiments.get_experiment("digits-permuted")
    profile = exp.profile("smoke").with_overrides({"runs": "1"})
    real = streams_module._run_method

    def diverge_on_ewc(experiment, method, *args):
        if method == "ewc":
            raise TrainingDiverged("ewc diverged")
        return real(experiment, method, *args)

    streams_module._run_method = diverge_on_ewc
    try:
        with pytest.raises(TrainingDiverged):
            run_streams(exp, ["sgd", "ewc"], profile, 0, tmp_path / "out", progress=False)
    finally:
        streams_module._run_method = real
    assert list(read_results(tmp_path / "out" / "results.json")["methods"]) == ["sgd"]
