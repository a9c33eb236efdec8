"""BLUR (Sandler et al. 2021) in the learned-rule protocol: shapes, vmap equals the loop, predictions
precede their labels, the backprop genome makes SGD's steps, the BPTT meta-gradient matches finite
differences, and Adam and CMA-ES on the genome lower the meta-loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from rules_helpers import assert_predictions_precede_labels, looping, random_episodes

from warpgrad.errors import UsageError
from warpgrad.rules import Episodes, episode_loss, run_episodes
from warpgrad.rules.blur import BLUR, backprop_genome, episode_mse, meta_train_adam, meta_train_cma

pytestmark = pytest.mark.usefixtures("one_thread")


def _blobs(generator, count=8, length=16, dim=8):
    """Two Gaussian blobs per episode, at means drawn anew: only learning within it beats chance."""
    means = torch.randn(count, 2, dim, generator=generator)
    y = torch.randint(2, (count, length), generator=generator)
    x = means.gather(1, y[..., None].expand(-1, -1, dim)) + 0.5 * torch.randn(count, length, dim, generator=generator)
    return Episodes(x, y, 2)


def _learning(meta):  # a random genome with a synapse update large enough to matter in 8 steps
    return meta | {"synapse_update": torch.tensor(-0.3, dtype=meta["synapse_update"].dtype)}


def test_protocol_shapes_and_genome():
    rule = BLUR(6, 3, hidden=(5, 4), k=3)
    meta = rule.init_meta(torch.Generator().manual_seed(0))
    assert {name: tuple(p.shape) for name, p in meta.items()} == {
        "nu_fwd": (3, 3), "nu_bwd": (3, 3), "mu_pre": (3, 3), "mu_post": (3, 3),
        "neuron_keep": (), "neuron_update": (), "synapse_keep": (), "synapse_update": (),
    }  # fmt: skip
    state = rule.init_state(meta, torch.Generator().manual_seed(1))
    shapes = {name: tuple(s.shape) for name, s in state["synapses"].items()}
    assert shapes == {"w0": (7, 5, 3), "w1": (6, 4, 3), "b1": (4, 5, 3), "w2": (5, 3, 3), "b2": (3, 4, 3)}
    state, logits = rule.step(meta, state, torch.randn(6), torch.zeros(3))
    assert logits.shape == (3,) and bool((logits.abs() < 1).all())  # tanh output layer
    assert [tuple(n.shape) for n in state["layers"]] == [(6, 3), (5, 3), (4, 3), (3, 3)]
    out = run_episodes(rule, meta, random_episodes(), torch.Generator().manual_seed(2))
    assert out.shape == (3, 8, 3) and bool(out.isfinite().all())
    with pytest.raises(UsageError):
        BLUR(6, 3, k=1)
    with pytest.raises(UsageError):
        BLUR(6, 3, feedback="gradient")


@pytest.mark.parametrize("symmetric", [False, True])
def test_vmapped_episodes_equal_the_loop(symmetric):
    rule = BLUR(6, 3, hidden=(5, 4), symmetric=symmetric)
    meta = _learning(rule.init_meta(torch.Generator().manual_seed(0)))
    episodes = random_episodes()
    vmapped = run_episodes(rule, meta, episodes, torch.Generator().manual_seed(1))
    looped = run_episodes(looping(rule), meta, episodes, torch.Generator().manual_seed(1))
    torch.testing.assert_close(vmapped, looped, rtol=1e-5, atol=1e-6)
    frozen = run_episodes(
        rule, meta | {"synapse_update": torch.tensor(0.0)}, episodes, torch.Generator().manual_seed(1)
    )
    assert not torch.allclose(vmapped[:, 1:], frozen[:, 1:], atol=1e-3)  # the Hebbian updates ran under vmap
    torch.testing.assert_close(vmapped[:, 0], frozen[:, 0])  # and not before the first label


def test_a_prediction_never_depends_on_its_own_label_or_later_ones():
    rule = BLUR(6, 3, hidden=(5,))
    meta = _learning(rule.init_meta(torch.Generator().manual_seed(0)))
    assert_predictions_precede_labels(rule, meta, random_episodes(count=1))


@pytest.mark.parametrize("feedback", ["error", "label"])
def test_the_backprop_genome_makes_the_sgd_steps_of_the_mlp(feedback):
    """With the reference's gradient genome, each BLUR step is an SGD step (autograd) of the MLP
    y = W2ᵀ[tanh(W1ᵀ[tanh(W0ᵀ[x; 1]); 1]); 1] on ½‖t − y‖² ("error") or −⟨t, y⟩ ("label")."""
    dtype, lr = torch.float64, 0.1
    rule = BLUR(
        5, 3, hidden=(4, 3), forward_activation="tanh_grad", backward_activation="identity",
        last_activation="identity", backward_update="multiplicative_second_state", symmetric=True, feedback=feedback,
    )  # fmt: skip
    meta = backprop_genome(k=2, lr=lr, dtype=dtype)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 5, generator=generator, dtype=dtype), torch.randint(3, (6,), generator=generator)
    state = rule.init_state(meta, torch.Generator().manual_seed(1))
    weights = [state["synapses"][f"w{i}"][..., 0].clone() for i in range(3)]

    def mlp(weights, x):
        for i, w in enumerate(weights):
            x = torch.cat([x, x.new_ones(1)]) @ w
            x = torch.tanh(x) if i < len(weights) - 1 else x
        return x

    for t in range(6):
        feedback_t = F.one_hot(y[t - 1], 3).to(dtype) if t > 0 else torch.zeros(3, dtype=dtype)
        state, logits = rule.step(meta, state, x[t], feedback_t)
        if t > 0:
            params = [w.clone().requires_grad_(True) for w in weights]
            out, target = mlp(params, x[t - 1]), 2 * feedback_t - 1
            loss = 0.5 * ((target - out) ** 2).sum() if feedback == "error" else -(target * out).sum()
            weights = [w - lr * g for w, g in zip(weights, torch.autograd.grad(loss, params))]
        torch.testing.assert_close(logits, mlp(weights, x[t]), rtol=1e-12, atol=1e-12)
        for i, w in enumerate(weights):
            torch.testing.assert_close(
                state["synapses"][f"w{i}"], w[..., None].expand(-1, -1, 2), rtol=1e-12, atol=1e-12
            )
    assert not torch.allclose(weights[0], state["synapses"]["w0"][..., 0] * 0)


@pytest.mark.parametrize("entry", [("nu_bwd", (1, 0)), ("mu_post", (0, 1)), ("synapse_update", ())])
def test_bptt_meta_gradient_equals_central_finite_differences(entry):
    name, index = entry
    rule = BLUR(4, 2, hidden=(3,))
    meta = {n: p.to(torch.float64) for n, p in _learning(rule.init_meta(torch.Generator().manual_seed(3))).items()}
    episodes = random_episodes(count=2, length=6, dim=4, classes=2, seed=4)
    episodes = Episodes(episodes.x.to(torch.float64), episodes.y, 2)

    def loss(meta):
        return episode_loss(rule, meta, episodes, torch.Generator().manual_seed(5))

    params = {n: p.clone().requires_grad_(True) for n, p in meta.items()}
    gradient = torch.autograd.grad(loss(params), params[name])[0][index]
    eps, values = 1e-6, []
    for sign in (1, -1):
        shifted = {n: p.clone() for n, p in meta.items()}
        shifted[name][index] += sign * eps
        values.append(loss(shifted))
    difference = (values[0] - values[1]) / (2 * eps)
    assert abs(float(gradient)) > 1e-6
    torch.testing.assert_close(gradient, difference, rtol=1e-6, atol=1e-9)


def _meta_loss(rule, meta, episodes):
    with torch.no_grad():
        return float(episode_loss(rule, meta, episodes, torch.Generator().manual_seed(99)))


def test_adam_on_the_genome_lowers_the_meta_loss():
    rule = BLUR(8, 2, hidden=(8,))
    held_out = _blobs(torch.Generator().manual_seed(123), count=16)
    start = rule.init_meta(torch.Generator().manual_seed(0))
    meta, history = meta_train_adam(rule, _blobs, 8, lr=0.05, seed=0, meta=start)
    assert len(history) == 8 and all(torch.isfinite(torch.tensor(history)))
    assert _meta_loss(rule, meta, held_out) < _meta_loss(rule, start, held_out) - 0.05
    mse = episode_mse(rule, meta, held_out, torch.Generator().manual_seed(0))
    assert mse.shape == () and bool(mse.isfinite())


def test_cma_es_on_the_genome_lowers_the_meta_loss():
    pytest.importorskip("cma")
    rule = BLUR(8, 2, hidden=(8,))
    held_out = _blobs(torch.Generator().manual_seed(123), count=16)
    start = rule.init_meta(torch.Generator().manual_seed(0))
    sample = lambda generator: _blobs(generator, count=16)  # noqa: E731
    best, history = meta_train_cma(rule, sample, 8, sigma=0.2, seed=0, meta=start, population=8)
    assert len(history) == 8 and set(best) == set(start)
    assert _meta_loss(rule, best, held_out) < _meta_loss(rule, start, held_out) - 0.05
