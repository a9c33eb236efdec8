"""Meta-training learned rules: BPTT and ES lower the meta-loss, a resumed meta-training equals the
uninterrupted one, and the episode sampler draws what it says."""

from __future__ import annotations

import pytest
import torch

from warpgrad.errors import UsageError
from warpgrad.rules import OnlineGradient, episode_loss
from warpgrad.rules.base import Episodes
from warpgrad.rules.meta import MetaTrainConfig, meta_train
from warpgrad.rules.tasks import EpisodeSampler, load_source


class LearnedRateSGD(OnlineGradient):
    """Online SGD whose log learning rate and initial bias are meta-parameters: the smallest rule
    with something to meta-learn."""

    def __init__(self) -> None:
        super().__init__(4, 2, hidden=0, optimizer="sgd", lr=1.0)
        self.name = "learned-rate"

    def init_meta(self, generator):
        return {"log_lr": torch.tensor(-4.0), "bias": torch.zeros(2)}

    def init_state(self, meta, generator):
        state = super().init_state(meta, generator)
        state["params"]["b0"] = meta["bias"].expand(2).clone() + state["params"]["b0"]
        return state

    def step(self, meta, state, x, feedback):
        def loss(params):
            return -(feedback * torch.log_softmax(self.forward(params, state["previous_x"]), -1)).sum()

        grads = torch.func.grad(loss)(state["params"])
        params = {k: p - meta["log_lr"].exp() * grads[k] for k, p in state["params"].items()}
        return {**state, "params": params, "previous_x": x}, self.forward(params, x)


class Blobs:
    """2-class Gaussian blobs in 4-D, labels permuted per episode."""

    def sample(self, count, generator):
        y = torch.randint(2, (count, 20), generator=generator)
        centres = torch.randn(count, 2, 4, generator=generator) * 2
        x = centres[torch.arange(count)[:, None], y] + torch.randn(count, 20, 4, generator=generator) * 0.5
        return Episodes(x, y, 2)


def _config(**changes):
    return MetaTrainConfig(
        **{"steps": 6, "episodes": 4, "lr": 0.3, "checkpoint_every": 2, "es_population": 4, "es_sigma": 0.1, **changes}
    )


@pytest.mark.parametrize("trainer", ["bptt", "es"])
def test_meta_training_lowers_the_meta_loss(trainer):
    rule = LearnedRateSGD()
    meta = rule.init_meta(torch.Generator())
    held_out = Blobs().sample(32, torch.Generator().manual_seed(99))
    before = float(episode_loss(rule, meta, held_out, torch.Generator().manual_seed(0)))
    trained, history = meta_train(rule, meta, Blobs(), _config(trainer=trainer, steps=6), seed=0)
    after = float(episode_loss(rule, trained, held_out, torch.Generator().manual_seed(0)))
    assert after < before - 0.05 and trained["log_lr"] > meta["log_lr"]
    assert [row["step"] for row in history] == list(range(1, 7))


@pytest.mark.parametrize("trainer", ["bptt", "es"])
def test_a_resumed_meta_training_equals_the_uninterrupted_one(tmp_path, trainer):
    rule = LearnedRateSGD()
    meta = rule.init_meta(torch.Generator())
    full, full_history = meta_train(rule, meta, Blobs(), _config(trainer=trainer), seed=3)
    path = tmp_path / "checkpoint.pt"
    assert meta_train(rule, meta, Blobs(), _config(trainer=trainer), seed=3, checkpoint=path, stop_after=3) is None
    resumed, history = meta_train(rule, meta, Blobs(), _config(trainer=trainer), seed=3, checkpoint=path, resume=True)
    assert all(torch.equal(full[k], resumed[k]) for k in full) and history == full_history
    with pytest.raises(UsageError, match="not these settings"):
        meta_train(rule, meta, Blobs(), _config(trainer=trainer, lr=0.1), seed=3, checkpoint=path, resume=True)


def test_bad_meta_training_settings_are_refused():
    for bad in ({"trainer": "sgd"}, {"steps": -1}, {"lr": 0.0}, {"clip": -1.0}, {"episodes": 0}):
        with pytest.raises(UsageError):
            MetaTrainConfig(**bad)


def test_sampler_draws_ways_classes_with_permuted_labels_from_the_allowed_ones():
    sampler = EpisodeSampler(("digits",), (0, 1, 2, 3, 4), ways=3, length=60)
    episodes = sampler.sample(4, torch.Generator().manual_seed(0))
    assert episodes.x.shape == (4, 60, 64) and episodes.y.max() < 3
    x, y = load_source("digits")
    rows = {tuple(r.tolist()): int(c) for r, c in zip(x, y)}
    for e in range(4):
        originals = {}
        for row, label in zip(episodes.x[e], episodes.y[e]):
            originals.setdefault(int(label), set()).add(rows[tuple(row.tolist())])
        assert all(len(v) == 1 for v in originals.values())  # one original class per label
        assert set().union(*originals.values()) <= {0, 1, 2, 3, 4}
    again = sampler.sample(4, torch.Generator().manual_seed(0))
    assert torch.equal(again.x, episodes.x) and torch.equal(again.y, episodes.y)
    with pytest.raises(UsageError, match="fewer than ways"):
        EpisodeSampler(("digits",), (0, 1), ways=3, length=5).sample(1, torch.Generator())
    with pytest.raises(UsageError, match="unknown sources"):
        EpisodeSampler(("cifar",), None, ways=3, length=5)


def _rule(name):
    from warpgrad.rules import BLUR, VSML
    from warpgrad.rules.local_rules import LocalRules

    return {
        "vsml": lambda: VSML(4, 2),
        "blur": lambda: BLUR(4, 2, hidden=(3,)),
        "local-rules": lambda: LocalRules(4, 2, hidden=3),
    }[name]()


@pytest.mark.parametrize("name, trainer", [("vsml", "bptt"), ("vsml", "es"), ("blur", "bptt"), ("local-rules", "bptt")])
def test_every_rules_meta_training_resumes_to_the_uninterrupted_result(tmp_path, name, trainer):
    rule = _rule(name)
    meta = rule.init_meta(torch.Generator().manual_seed(0))
    config = _config(steps=4, episodes=2, lr=1e-2, trainer=trainer)
    full, full_history = meta_train(rule, meta, Blobs(), config, seed=5)
    path = tmp_path / "checkpoint.pt"
    assert meta_train(rule, meta, Blobs(), config, seed=5, checkpoint=path, stop_after=2) is None
    resumed, history = meta_train(rule, meta, Blobs(), config, seed=5, checkpoint=path, resume=True)
    assert all(torch.equal(full[k], resumed[k]) for k in full) and history == full_history
    assert any(not torch.equal(full[k], meta[k]) for k in full)  # it did meta-train
