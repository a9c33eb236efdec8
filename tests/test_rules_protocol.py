"""The learned-rule protocol: episodes vmapped equal a loop, predictions precede their labels, and
the online SGD/Adam baseline makes the steps computed by hand."""

from __future__ import annotations

import pytest
import torch
from rules_helpers import assert_predictions_precede_labels, looping, random_episodes

from warpgrad.errors import UsageError
from warpgrad.rules import Episodes, OnlineGradient, episode_loss, online_metrics, run_episodes

pytestmark = pytest.mark.usefixtures("float64")


def _episodes(count=3, length=12, dim=6, classes=3, seed=0):
    return random_episodes(count, length, dim, classes, seed)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_vmapped_episodes_equal_the_loop(optimizer):
    rule = OnlineGradient(6, 3, hidden=4, optimizer=optimizer, lr=0.05)
    episodes = _episodes()
    vmapped = run_episodes(rule, {}, episodes, torch.Generator().manual_seed(1))
    looped = run_episodes(looping(rule), {}, episodes, torch.Generator().manual_seed(1))
    torch.testing.assert_close(vmapped, looped, rtol=1e-12, atol=1e-12)


def test_a_prediction_never_depends_on_its_own_label_or_later_ones():
    rule = OnlineGradient(6, 3, hidden=0, optimizer="sgd", lr=0.5)
    assert_predictions_precede_labels(rule, {}, _episodes(count=1))


def test_online_sgd_steps_by_hand():
    rule = OnlineGradient(6, 3, hidden=0, optimizer="sgd", lr=0.3)
    episodes = _episodes(count=1, length=4)
    logits = run_episodes(rule, {}, episodes, torch.Generator().manual_seed(2))
    state = rule.init_state({}, torch.Generator().manual_seed(2))
    w, b = state["params"]["w0"], state["params"]["b0"]
    x, y = episodes.x[0], episodes.y[0]
    for t in range(4):
        if t > 0:  # softmax cross-entropy gradient: (p − onehot) xᵀ
            p = torch.softmax(w @ x[t - 1] + b, -1)
            error = p - torch.nn.functional.one_hot(y[t - 1], 3).to(p.dtype)
            w, b = w - 0.3 * torch.outer(error, x[t - 1]), b - 0.3 * error
        torch.testing.assert_close(logits[0, t], w @ x[t] + b, rtol=1e-12, atol=1e-12)


def test_online_metrics_and_loss():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]]])
    metrics = online_metrics(logits, torch.tensor([[0, 0, 0, 1]]), final_fraction=0.5)
    assert metrics["online_accuracy"].tolist() == [0.75] and metrics["final_accuracy"].tolist() == [1.0]
    rule = OnlineGradient(6, 3, hidden=0, optimizer="sgd", lr=0.3)
    episodes = _episodes()
    expected = torch.nn.functional.cross_entropy(
        run_episodes(rule, {}, episodes, torch.Generator().manual_seed(0)).flatten(0, 1), episodes.y.flatten()
    )
    torch.testing.assert_close(episode_loss(rule, {}, episodes, torch.Generator().manual_seed(0)), expected)


def test_bad_inputs_are_refused_in_one_line():
    with pytest.raises(UsageError, match="'rmsprop'"):
        OnlineGradient(6, 3, optimizer="rmsprop")
    with pytest.raises(UsageError, match="lr"):
        OnlineGradient(6, 3, lr=-1.0)
    with pytest.raises(UsageError, match="takes 6 inputs"):
        run_episodes(OnlineGradient(6, 3), {}, _episodes(dim=5), torch.Generator())
    with pytest.raises(UsageError, match="episodes need"):
        Episodes(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), 3)
