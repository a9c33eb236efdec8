"""Representational forgetting in the sequential (OML/ANML) meta-test: warpgrad.engine.sequential.probes."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from warpgrad.cli import main
from warpgrad.data.base import InMemoryClassDataset
from warpgrad.engine.sequential import Scratch, meta_test_streams, sequential_streams
from warpgrad.engine.sequential.probes import StreamProbe, group_ends
from warpgrad.errors import UsageError
from warpgrad.methods.continual.oml import TrajectoryMetaLearner, conv_representation

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny per-example ops and probe fits

N_CLASSES = 8  # the test classes (2 groups of 4); two more for the train and val splits


def dataset(per_class=30):
    """Images whose pixel (0, 0) is the class index (the rest small noise); every class is a test class."""
    g = torch.Generator().manual_seed(0)
    images = []
    for c in range(N_CLASSES + 2):
        x = torch.rand(per_class, 1, 8, 8, generator=g) * 0.1
        x[:, 0, 0, 0] = float(c)
        images.append(x)
    splits = {"test": list(range(N_CLASSES)), "train": [N_CLASSES], "val": [N_CLASSES + 1]}
    return InMemoryClassDataset("tagged8", images, [f"c{c}" for c in range(N_CLASSES + 2)], splits)


def streams(seeds=(3, 4), stream_per_class=10, held_out=20):
    return sequential_streams(dataset(), "test", N_CLASSES, stream_per_class, held_out, list(seeds))


def one_hot(x):
    """A representation from which every class is linearly separable."""
    return F.one_hot(x[:, 0, 0, 0].round().long(), N_CLASSES).float() + 0.01 * x[:, 0, 1, :]


class Frozen(TrajectoryMetaLearner):
    """Fixed features and a linear head: a learner whose representation does not change. With a
    loss other than ``F.cross_entropy`` it is meta-tested by the library's ``continual_meta_test``
    instead of the closed-form head."""

    def __init__(self, loss_fn=F.cross_entropy):
        torch.manual_seed(0)
        self.head, self.loss_fn, self.inner_lr = nn.Linear(N_CLASSES, N_CLASSES), loss_fn, 0.5

    def frozen_features(self, x):
        return one_hot(x)


class TurnsToNoise:
    """A learner whose representation is informative until ``after`` classes were learned, then
    seeded noise; its head always predicts class 0."""

    def __init__(self, after):
        self.after = after

    def meta_test(self, stream_x, eval_x=None, *, labels=None, head_reset="zeros", lr=None, after_class=None):
        def noise(x):
            return torch.randn(x.shape[0], N_CLASSES, generator=torch.Generator().manual_seed(int(x.sum() * 1000)))

        for c in range(len(stream_x)):
            represent = one_hot if c < self.after else noise
            after_class(c, represent, lambda f: torch.zeros(f.shape[0], N_CLASSES).index_fill_(1, torch.tensor([0]), 1))
        return {"accuracy": torch.zeros(len(stream_x))}


def test_groups_end_after_nearly_equal_numbers_of_classes():
    assert group_ends(50, 5) == [10, 20, 30, 40, 50]
    assert group_ends(7, 3) == [2, 5, 7]
    assert group_ends(3, 5) == [1, 2, 3]  # at most one group per class
    with pytest.raises(UsageError, match="probe_groups must be a positive integer, got 0"):
        group_ends(5, 0)
    with pytest.raises(UsageError, match="probe_samples must be a positive integer, got 0"):
        StreamProbe(streams(seeds=(1,))[0], 0, 2)


def test_a_learner_that_does_not_change_has_no_representational_forgetting():
    out = meta_test_streams(Frozen(), streams(), lr=0.5, probe_samples=5, probe_groups=2)["probes"]
    assert out["points"] == [4, 8]
    assert out["representational_forgetting"] == [0.0, 0.0]
    P = out["probe_matrix"]
    assert torch.equal(P[0], P[1]) and torch.all(P == 1.0)  # separable, and read the same after every group
    assert torch.all(out["probe_curve"] == 1.0)


def test_a_representation_replaced_by_noise_loses_the_probe_accuracy():
    out = meta_test_streams(TurnsToNoise(after=4), streams(), lr=0.1, probe_samples=10, probe_groups=2)["probes"]
    P = out["probe_matrix"]
    assert float(P[0, 0]) == 1.0  # informative after the first group
    assert float(P[1, 0]) < 0.5  # noise after the second: about chance (1/4) for the first group's classes
    assert all(f > 0.5 for f in out["representational_forgetting"])
    assert float(out["probe_curve"][1]) < 0.3  # chance over all 8 classes: 1/8
    # the head predicts class 0: the output accuracy on the first group is 1/4, 0 on the second
    assert out["accuracy_matrix"].tolist() == [[0.25, 0.0], [0.25, 0.0]]


class NoHook:
    """A sequential learner whose meta_test has no ``after_class`` hook."""

    def meta_test(self, stream_x, eval_x=None, *, labels=None, head_reset="zeros", lr=None):
        return {"accuracy": torch.zeros(len(stream_x))}


def test_a_learner_without_the_probe_hook_is_refused_by_name_and_runs_without_probes():
    with pytest.raises(UsageError, match="NoHook.meta_test takes no after_class hook.*probe_samples=0"):
        meta_test_streams(NoHook(), streams(), lr=0.1, probe_samples=5)
    assert meta_test_streams(NoHook(), streams(), lr=0.1)["final"].tolist() == [0.0] * len(streams())


def test_probes_leave_the_output_accuracy_unchanged_and_read_it_at_the_group_ends():
    torch.manual_seed(0)
    body, width = conv_representation(1, (4,), 8)
    learners = {
        "sgd (whole network online)": Scratch(body, nn.Linear(width, N_CLASSES)),
        "closed-form head": Frozen(),
        "library head": Frozen(loss_fn=lambda logits, y: F.cross_entropy(logits, y)),
    }
    probed = {}
    for name, learner in learners.items():
        plain = meta_test_streams(learner, streams(), lr=0.1, train_accuracy=True)
        with_probes = meta_test_streams(learner, streams(), lr=0.1, train_accuracy=True, probe_samples=5)
        for key in ("curves", "final", "train_final"):
            assert torch.equal(plain[key], with_probes[key]), (name, key)
        # R at the end of each group, weighted by the group sizes, is the meta-test's held-out accuracy there
        R, curve = with_probes["probes"]["accuracy_matrix"], plain["curves"].mean(0)
        ends = with_probes["probes"]["points"]
        sizes = torch.tensor([b - a for a, b in zip([0, *ends[:-1]], ends)], dtype=torch.float64)
        for i, end in enumerate(ends):
            seen = sizes[: i + 1]
            assert torch.allclose((R[i, : i + 1] * seen).sum() / seen.sum(), curve[end - 1]), (name, i)
        probed[name] = with_probes["probes"]
    assert ends == [2, 3, 5, 6, 8]  # 8 classes, 5 groups by default
    # the online network changes its representation; the frozen ones do not (whichever meta-test path)
    assert any(f != 0.0 for f in probed["sgd (whole network online)"]["representational_forgetting"])
    assert torch.equal(probed["closed-form head"]["probe_matrix"], probed["library head"]["probe_matrix"])


def test_kanji_sequential_records_representational_forgetting_when_asked(tmp_path, capsys):
    out = tmp_path / "ks"
    argv = ["run", "kanji-sequential", "--profile", "smoke", "--method", "oml,sgd", "--out", str(out), "--no-progress"]
    assert main([*argv, "--set", "probe_samples=3", "--set", "probe_groups=2"]) == 0
    results = json.loads((out / "results.json").read_text())
    for method in ("oml", "sgd"):
        entry = results["methods"][method]
        assert {"forgetting", "representational_forgetting", "probe_accuracy"} <= set(entry["extra"])
        assert entry["probes"]["points"] == [2, 3] and entry["probes"]["samples_per_class"] == 3
        assert len(entry["probes"]["probe_matrix"]) == 2 and len(entry["probes"]["curve"]) == 2
    assert results["methods"]["oml"]["extra"]["representational_forgetting"]["mean"] == 0.0  # frozen RLN
    for name in ("probes_vs_classes.png", "probe_matrix_sgd.png", "accuracy_matrix_oml.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "representational_forgetting" in text and "output / linear probe (3 per class) after 2:" in text
    assert main([*argv[:-2], str(tmp_path / "bad"), "--no-progress", "--set", "probe_groups=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "probe_groups" in err[0] and "got 0" in err[0]
