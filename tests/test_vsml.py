"""VS-ML (Kirsch & Schmidhuber 2021) as a learned rule: the protocol, vmap equals a loop, one step
by hand, no label leaks, BPTT meta-gradients equal finite differences, meta-training and
learning-algorithm cloning lower their losses and a cloned VS-ML learns."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from rules_helpers import assert_predictions_precede_labels, looping, random_episodes

from warpgrad.errors import UsageError
from warpgrad.rules import Episodes, OnlineGradient, episode_loss, online_metrics, run_episodes
from warpgrad.rules.vsml import VSML, clone_backprop, cloning_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _blobs(count, length, dim=8, seed=0, separation=2.0, noise=0.5):
    """Two-class Gaussian blobs, a new pair of class means per episode."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(count, 2, dim, generator=generator)
    means = means / means.norm(dim=-1, keepdim=True) * separation / 2
    y = torch.randint(2, (count, length), generator=generator)
    x = means[torch.arange(count)[:, None], y] + noise * torch.randn(count, length, dim, generator=generator)
    return Episodes(x.to(torch.get_default_dtype()), y, 2)


def test_shapes_and_the_protocol(float64):
    rule = VSML(6, 3, hidden_layers=(4,))
    meta = rule.init_meta(torch.Generator().manual_seed(0))
    assert {k: tuple(v.shape) for k, v in meta.items()} == {
        "lstm_w": (32, 64),
        "lstm_b": (64,),
        "fwd_w": (16, 8),
        "fwd_b": (8,),
        "bwd_w": (16, 8),
        "bwd_b": (8,),
    }
    state = rule.init_state(meta, torch.Generator().manual_seed(1))
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        "h0": (6, 4, 16),
        "c0": (6, 4, 16),
        "b0": (4, 8),
        "h1": (4, 3, 16),
        "c1": (4, 3, 16),
        "logits": (3,),
    }
    assert not state["h0"].any() and not state["c0"][..., 8:].any()  # h = 0, second half of c = 0
    assert state["c0"][..., :8].abs().max() <= 2 / math.sqrt(6)  # truncated at 2σ, σ = 1/√fan_in
    assert state["c1"][..., :8].abs().max() <= 2 / math.sqrt(4)
    new, logits = rule.step(meta, state, torch.randn(6), torch.zeros(3))
    assert logits.shape == (3,) and logits.dtype == torch.float64 and list(new) == list(state)
    assert all(new[k].shape == state[k].shape for k in state)
    out = run_episodes(rule, meta, random_episodes(2, 5, 6, 3), torch.Generator().manual_seed(2))
    assert out.shape == (2, 5, 3) and torch.isfinite(out).all()
    with pytest.raises(UsageError):
        VSML(6, 3, msg_size=1)
    with pytest.raises(UsageError):
        VSML(6, 0)
    with pytest.raises(UsageError):
        run_episodes(rule, meta, random_episodes(2, 5, 7, 3), torch.Generator())


@pytest.mark.parametrize("hidden", [(), (4,)])
def test_vmapped_episodes_equal_the_loop(float64, hidden):
    rule = VSML(6, 3, hidden_layers=hidden)
    meta = rule.init_meta(torch.Generator().manual_seed(0))
    episodes = random_episodes(3, 8, 6, 3)
    vmapped = run_episodes(rule, meta, episodes, torch.Generator().manual_seed(1))
    looped = run_episodes(looping(rule), meta, episodes, torch.Generator().manual_seed(1))
    torch.testing.assert_close(vmapped, looped, rtol=1e-12, atol=1e-12)


def _lstm_by_hand(meta, inputs, h, c):
    """The reference's CustomLSTM for ONE sub-RNN: gates from one Linear on [x, h], split i, g, f, o."""
    i, g, f, o = (torch.cat([inputs, h]) @ meta["lstm_w"] + meta["lstm_b"]).split(h.shape[0])
    c = torch.sigmoid(f + 5) * c + torch.sigmoid(i - 5) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def test_one_step_of_a_2x2_layer_by_hand(float64):
    rule = VSML(2, 2)
    meta = rule.init_meta(torch.Generator().manual_seed(0))
    meta["lstm_b"] = 0.3 * torch.randn(64, generator=torch.Generator().manual_seed(3))
    state = rule.init_state(meta, torch.Generator().manual_seed(1))
    state["logits"] = torch.tensor([0.4, -0.2])
    x, feedback = torch.tensor([0.7, -1.3]), torch.tensor([0.0, 1.0])
    new, logits = rule.step(meta, state, x, feedback)

    error = torch.softmax(state["logits"], -1) - feedback  # ∂CE/∂logits of the previous example
    fwd_out = torch.zeros(2, 8)
    for b in range(2):
        for a in range(2):
            inputs = torch.cat([F.pad(x[a : a + 1], (0, 7)), F.pad(error[b : b + 1], (0, 7))])
            h, c = state["h0"][a, b], state["c0"][a, b]
            for _ in range(2):  # micro-ticks, the same incoming messages
                h, c = _lstm_by_hand(meta, inputs, h, c)
            torch.testing.assert_close(new["h0"][a, b], h, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(new["c0"][a, b], c, rtol=1e-12, atol=1e-12)
            fwd_out[b] += (meta["fwd_w"].T @ h + meta["fwd_b"]) / 2  # mean over a
    torch.testing.assert_close(logits, 100 * torch.tanh(fwd_out[:, 1] / 100), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(new["logits"], logits)

    # gate biases: with no weights and no gate biases, c ← σ(5)·c + σ(−5)·tanh(g_bias) per micro-tick
    zero = {k: torch.zeros_like(v) for k, v in meta.items()}
    zero["lstm_b"][16:32] = 0.8  # cell-input pre-activation g (order i, g, f, o)
    zero["fwd_b"][1] = 1000.0  # the logit is bounded: 100·tanh(1000/100)
    new, logits = rule.step(zero, state, x, feedback)
    c = state["c0"]
    for _ in range(2):
        c = torch.sigmoid(torch.tensor(5.0)) * c + torch.sigmoid(torch.tensor(-5.0)) * math.tanh(0.8)
    torch.testing.assert_close(new["c0"], c, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(new["h0"], 0.5 * torch.tanh(c), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logits, torch.full((2,), 100 * math.tanh(10.0)), rtol=1e-12, atol=1e-12)
    assert logits.abs().max() < 100


def test_the_error_reaches_lower_layers_one_example_later(float64):
    rule = VSML(3, 2, hidden_layers=(4,))
    meta = rule.init_meta(torch.Generator().manual_seed(0))
    state = rule.init_state(meta, torch.Generator().manual_seed(1))
    state["logits"] = torch.tensor([0.5, -0.5])
    x = torch.randn(3, generator=torch.Generator().manual_seed(2))
    one, _ = rule.step(meta, state, x, torch.tensor([1.0, 0.0]))
    other, _ = rule.step(meta, state, x, torch.tensor([0.0, 1.0]))
    assert torch.equal(one["c0"], other["c0"])  # the bottom layer only sees last step's backward messages
    assert not torch.equal(one["c1"], other["c1"]) and not torch.equal(one["b0"], other["b0"])
    # the new incoming backward messages of the hidden neurons: mean over the top layer's outputs
    torch.testing.assert_close(one["b0"], one["h1"].mean(1) @ meta["bwd_w"] + meta["bwd_b"])
    after_one, _ = rule.step(meta, one, x, torch.zeros(2))
    after_other, _ = rule.step(meta, other, x, torch.zeros(2))
    assert not torch.equal(after_one["c0"], after_other["c0"])  # ... and reach it one step later


def test_a_prediction_never_depends_on_its_own_label_or_later_ones(float64):
    rule = VSML(6, 3, hidden_layers=(4,))
    meta = rule.init_meta(torch.Generator().manual_seed(0))
    assert_predictions_precede_labels(rule, meta, random_episodes(1, 10, 6, 3))


@pytest.mark.parametrize(
    "name, index", [("lstm_w", (8, 20)), ("lstm_w", (20, 5)), ("fwd_w", (2, 1)), ("bwd_w", (2, 1))]
)
def test_bptt_meta_gradient_equals_finite_differences(float64, name, index):
    rule = VSML(3, 2, hidden_layers=(2,))
    meta = rule.init_meta(torch.Generator().manual_seed(0))
    meta = {k: v * 3 for k, v in meta.items()}  # larger weights: the messages really change the states
    episodes = random_episodes(2, 5, 3, 2, seed=4)

    def loss(meta):
        return episode_loss(rule, meta, episodes, torch.Generator().manual_seed(1))

    leaf = {k: v.clone().requires_grad_(True) for k, v in meta.items()}
    grad = torch.autograd.grad(loss(leaf), leaf[name])[0][index]
    eps = 1e-6
    plus, minus = {k: v.clone() for k, v in meta.items()}, {k: v.clone() for k, v in meta.items()}
    plus[name][index] += eps
    minus[name][index] -= eps
    numeric = (loss(plus) - loss(minus)) / (2 * eps)
    assert grad.abs() > 1e-5  # rows: 0–7 forward message, 8–15 backward (the error), 16– h
    torch.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-10)


def _imbalanced(count, length, seed, majority=0.85):
    """Noise inputs, a random majority class per episode: the loss drops below ln 2 only if the rule
    learns the label frequency within the episode (all output neurons share one sub-RNN)."""
    generator = torch.Generator().manual_seed(seed)
    major = torch.randint(2, (count, 1), generator=generator)
    y = (major + (torch.rand(count, length, generator=generator) > majority).long()) % 2
    return Episodes(torch.randn(count, length, 8, generator=generator), y, 2)


def _meta_train(rule, meta, tasks, held_out, steps, lr):
    meta = {k: v.detach().clone().requires_grad_(True) for k, v in meta.items()}
    optimizer = torch.optim.Adam(meta.values(), lr=lr)

    def held_out_loss():
        with torch.no_grad():
            return episode_loss(rule, meta, held_out, torch.Generator().manual_seed(7)).item()

    before = held_out_loss()
    for i in range(steps):
        loss = episode_loss(rule, meta, tasks(i), torch.Generator().manual_seed(1000 + i))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return before, held_out_loss()


def test_a_few_adam_steps_of_bptt_meta_training_lower_the_meta_loss():
    rule = VSML(8, 2)
    meta = rule.init_meta(torch.Generator().manual_seed(0))
    tasks = lambda i: _imbalanced(8, 15, seed=i)  # noqa: E731
    before, after = _meta_train(rule, meta, tasks, _imbalanced(16, 15, seed=100), steps=12, lr=0.1)
    assert abs(before - math.log(2)) < 0.01 and after < before - 0.05, (before, after)


@pytest.fixture(scope="module")
def cloned():
    torch.set_num_threads(1)
    rule = VSML(8, 2)
    initial = rule.init_meta(torch.Generator().manual_seed(0))
    losses = []
    meta = clone_backprop(rule, initial, torch.Generator().manual_seed(1), steps=150, lr=0.05, losses=losses)
    return rule, initial, meta, losses


def test_learning_algorithm_cloning_lowers_its_regression_loss(cloned):
    rule, initial, meta, losses = cloned
    assert len(losses) == 150 and all(math.isfinite(v) for v in losses)
    before = cloning_loss(rule, initial, torch.Generator().manual_seed(5)).item()
    after = cloning_loss(rule, meta, torch.Generator().manual_seed(5)).item()
    assert after < 0.2 * before, (before, after)
    assert all(torch.equal(initial[k], rule.init_meta(torch.Generator().manual_seed(0))[k]) for k in initial)
    with pytest.raises(UsageError):
        clone_backprop(rule, initial, torch.Generator(), steps=0, lr=0.1)


def test_a_cloned_vsml_learns_online(cloned):
    rule, initial, meta, _ = cloned
    episodes = _blobs(32, 100, seed=3)
    with torch.no_grad():
        cloned_accuracy, random_accuracy, sgd = (
            online_metrics(run_episodes(r, m, episodes, torch.Generator().manual_seed(4)), episodes.y)
            for r, m in ((rule, meta), (rule, initial), (OnlineGradient(8, 2, lr=0.2 / 8), {}))
        )
    assert abs(random_accuracy["online_accuracy"].mean() - 0.5) < 0.05  # an uncloned VS-ML does not learn
    assert cloned_accuracy["online_accuracy"].mean() > 0.75
    assert cloned_accuracy["final_accuracy"].mean() > 0.75
    assert cloned_accuracy["final_accuracy"].mean() > sgd["final_accuracy"].mean() - 0.15


def _handwritten_backprop(rule, meta, episodes, generator, alpha=0.2):
    """The algorithm VS-ML was cloned from, written out: a linear layer with weights w (A, B) read
    from c[..., 0] of the same initial states, logits = mean_a w_ab x_a, and
    w ← w − alpha·x_{t−1} e_{t−1}ᵀ before predicting x_t."""
    logits = []
    for e in range(episodes.x.shape[0]):
        w = rule.init_state(meta, generator)["c0"][..., 0]
        previous_x, previous = torch.zeros(rule.in_dim), torch.zeros(rule.n_classes)
        for t in range(episodes.x.shape[1]):
            fb = F.one_hot(episodes.y[e, t - 1], 2).to(previous.dtype) if t else torch.zeros(2)
            w = w - alpha * torch.outer(previous_x, torch.softmax(previous, -1) * fb.sum() - fb)
            previous, previous_x = 100 * torch.tanh(episodes.x[e, t] @ w / rule.in_dim / 100), episodes.x[e, t]
            logits.append(previous)
    return torch.stack(logits).reshape(*episodes.y.shape, 2)


def test_a_cloned_vsml_tracks_the_backprop_it_was_cloned_from(cloned):
    rule, _, meta, _ = cloned
    episodes = _blobs(16, 30, seed=5)
    with torch.no_grad():
        logits = run_episodes(rule, meta, episodes, torch.Generator().manual_seed(4))
    hand = _handwritten_backprop(rule, meta, episodes, torch.Generator().manual_seed(4))
    margin, hand_margin = (logits[..., 1] - logits[..., 0]).flatten(), (hand[..., 1] - hand[..., 0]).flatten()
    assert torch.corrcoef(torch.stack([margin, hand_margin]))[0, 1] > 0.9
    assert ((margin > 0) == (hand_margin > 0)).double().mean() > 0.88


def test_bptt_meta_training_improves_the_cloned_rule(cloned):
    rule, _, meta, _ = cloned
    tasks = lambda i: _blobs(8, 15, seed=i)  # noqa: E731
    before, after = _meta_train(rule, meta, tasks, _blobs(16, 15, seed=100), steps=9, lr=0.01)
    assert after < before - 0.02, (before, after)


def test_hand_set_parameters_make_a_vsml_layer_the_equivalent_dense_layer(float64):
    """Gates: input closed, forget open (c keeps the weight W_ab = tanh c_ab, stored in cells 0 and 1),
    output gates σ(±k x_a) on cells 0 and 1, read-out (2/k)(h_0 − h_1) = (2/k) tanh(k x_a / 2) W_ab
    = x_a W_ab + O(k²): the layer computes logit_b = 100 tanh(mean_a W_ab x_a / 100), error stated."""
    a_size, b_size, k = 4, 3, 1e-2
    rule = VSML(a_size, b_size)
    s = rule.state_size
    meta = {key: torch.zeros_like(value) for key, value in rule.init_meta(torch.Generator().manual_seed(0)).items()}
    meta["lstm_b"][:s] = -50.0  # input gate shut
    meta["lstm_b"][2 * s : 3 * s] = 50.0  # forget gate open
    meta["lstm_w"][0, 3 * s], meta["lstm_w"][0, 3 * s + 1] = k, -k  # output gates of cells 0, 1 see x_a
    meta["fwd_w"][0, 1], meta["fwd_w"][1, 1] = 2 / k, -2 / k  # read out into message slot 1, the logit
    weights = torch.rand(a_size, b_size, generator=torch.Generator().manual_seed(1)) * 1.8 - 0.9
    state = rule.init_state(meta, torch.Generator().manual_seed(2))
    state["c0"][..., 0] = state["c0"][..., 1] = torch.atanh(weights)
    x = torch.randn(a_size, generator=torch.Generator().manual_seed(3))
    _, logits = rule.step(meta, state, x, torch.zeros(b_size))
    dense = 100 * torch.tanh((x @ weights) / a_size / 100)
    bound = k**2 * float(x.abs().max()) ** 3 / 12  # the tanh series' next term, per input
    assert (logits - dense).abs().max() <= bound and bound < 1e-3
    assert (logits - dense).abs().max() > 0  # an approximation, not an identity: k enters
