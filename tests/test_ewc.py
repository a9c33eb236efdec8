"""EWC: Fisher variants against hand formulas on a linear softmax (also over an output mask) and a direct
loop on an MLP, penalty, online EWC, forgetting; masked training steps."""

import re

import pytest
import torch
from torch import nn

from warpgrad.methods.continual import EWC, SGDLearner, ewc_penalty, fisher_diagonal
from warpgrad.methods.continual.base import select_outputs


def linear_model(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


def data(seed=1, n=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)


def hand_grads(model, x, labels):
    """Per-example ∂ log p_y/∂W = (onehot(y) − p) xᵀ and ∂/∂b = onehot(y) − p, written out."""
    W, b = model.weight.detach(), model.bias.detach()
    p = torch.softmax(x @ W.T + b, dim=1)
    r = torch.nn.functional.one_hot(labels, 2).to(x.dtype) - p  # [N, 2]
    return r[:, :, None] * x[:, None, :], r, p


def params_of(model):
    return {k: v.detach() for k, v in model.named_parameters()}


def test_exact_fisher(float64):
    model, (x, y) = linear_model(), data()
    fisher = fisher_diagonal(model, params_of(model), x, y, "exact", batch_size=3)
    fw, fb = torch.zeros(2, 3), torch.zeros(2)
    for c in range(2):  # explicit sum over classes, weighted by p(c|x)
        gw, gb, p = hand_grads(model, x, torch.full((len(x),), c))
        fw += (p[:, c, None, None] * gw**2).mean(0)
        fb += (p[:, c, None] * gb**2).mean(0)
    torch.testing.assert_close(fisher["weight"], fw)
    torch.testing.assert_close(fisher["bias"], fb)


def test_sampled_fisher_reproduces_labels(float64):
    model, (x, y) = linear_model(), data()
    fisher = fisher_diagonal(model, params_of(model), x, y, "sampled", generator=torch.Generator().manual_seed(5))
    p = torch.softmax(model(x).detach(), dim=1)
    labels = torch.multinomial(p, 1, generator=torch.Generator().manual_seed(5)).squeeze(1)
    gw, gb, _ = hand_grads(model, x, labels)
    torch.testing.assert_close(fisher["weight"], (gw**2).mean(0))
    torch.testing.assert_close(fisher["bias"], (gb**2).mean(0))
    other = fisher_diagonal(model, params_of(model), x, y, "sampled", generator=torch.Generator().manual_seed(6))
    assert not torch.allclose(other["weight"], fisher["weight"])  # a different draw, a different value


def test_empirical_fisher(float64):
    model, (x, y) = linear_model(), data()
    fisher = fisher_diagonal(model, params_of(model), x, y, "empirical")
    gw, gb, _ = hand_grads(model, x, y)
    torch.testing.assert_close(fisher["weight"], (gw**2).mean(0))
    torch.testing.assert_close(fisher["bias"], (gb**2).mean(0))


def test_batched_fisher(float64):
    model, (x, y) = linear_model(), data(n=7)
    fisher = fisher_diagonal(model, params_of(model), x, y, "batched", batch_size=3)
    gw, gb, _ = hand_grads(model, x, y)
    batches = [slice(0, 3), slice(3, 6), slice(6, 7)]  # in order without a generator
    fw = sum(gw[s].mean(0) ** 2 for s in batches) / 3  # (gradient of the mean loss)², then mean
    fb = sum(gb[s].mean(0) ** 2 for s in batches) / 3
    torch.testing.assert_close(fisher["weight"], fw)
    torch.testing.assert_close(fisher["bias"], fb)
    empirical = fisher_diagonal(model, params_of(model), x, y, "empirical")
    assert not torch.allclose(fisher["weight"], empirical["weight"])


def test_fisher_errors():
    model, (x, y) = linear_model(), data()
    with pytest.raises(ValueError, match="unknown Fisher kind"):
        fisher_diagonal(model, params_of(model), x, y, "diagonal")
    with pytest.raises(ValueError, match="batch_size"):
        fisher_diagonal(model, params_of(model), x, y, "batched")
    with pytest.raises(ValueError, match="generator"):
        fisher_diagonal(model, params_of(model), x, y, "sampled")


def test_penalty_and_gradient_closed_form(float64):
    g = torch.Generator().manual_seed(0)
    theta = {
        "a": torch.randn(2, 3, generator=g, requires_grad=True),
        "b": torch.randn(4, generator=g, requires_grad=True),
    }
    anchor = {k: torch.randn(v.shape, generator=g) for k, v in theta.items()}
    fisher = {k: torch.rand(v.shape, generator=g) for k, v in theta.items()}
    lam = 3.0
    value = ewc_penalty(theta, fisher, anchor, lam)
    expected = sum(0.5 * lam * (fisher[k] * (theta[k] - anchor[k]) ** 2).sum() for k in theta)
    torch.testing.assert_close(value, expected)
    grads = torch.autograd.grad(value, list(theta.values()))
    for k, grad in zip(theta, grads):
        torch.testing.assert_close(grad, lam * fisher[k] * (theta[k] - anchor[k]).detach())


def test_standard_ewc_sums_penalties(float64):
    model, (x, y) = linear_model(), data()
    learner = EWC(model, lr=0.1, lam=2.0, fisher="empirical")
    gen = torch.Generator().manual_seed(0)
    learner.train_experience(x, y, gen, batch_size=4)
    learner.end_experience(x, y, gen)
    learner.train_experience(x, 1 - y, gen, batch_size=4)
    learner.end_experience(x, 1 - y, gen)
    assert len(learner.fishers) == len(learner.anchors) == 2
    params = dict(model.named_parameters())
    expected = sum(ewc_penalty(params, f, a, 2.0) for f, a in zip(learner.fishers, learner.anchors))
    torch.testing.assert_close(learner.penalty(params), expected)


def test_online_ewc(float64):
    model, (x, y) = linear_model(), data()
    gamma = 0.7
    learner = EWC(model, lr=0.1, lam=1.0, fisher="exact", online=True, gamma=gamma)
    gen = torch.Generator().manual_seed(0)
    learner.train_experience(x, y, gen, batch_size=4)
    learner.end_experience(x, y, gen)
    f1 = fisher_diagonal(model, params_of(model), x, y, "exact")
    x2, y2 = data(seed=2)
    learner.train_experience(x2, y2, gen, batch_size=4)
    learner.end_experience(x2, y2, gen)
    f2 = fisher_diagonal(model, params_of(model), x2, y2, "exact")
    assert len(learner.fishers) == len(learner.anchors) == 1
    for k in f1:
        torch.testing.assert_close(learner.fishers[0][k], gamma * f1[k] + f2[k])
        torch.testing.assert_close(learner.anchors[0][k], params_of(model)[k])
    assert not torch.allclose(f1["weight"], f2["weight"])  # the sum is not trivially one term


def two_tasks(n=200):
    """Two linear tasks sharing input feature 1 (with conflicting use) plus a ±1 context feature."""
    g = torch.Generator().manual_seed(0)
    xa = torch.randn(n, 4, generator=g)
    xb = torch.randn(n, 4, generator=g)
    ya = (xa[:, 0] + xa[:, 1] > 0).long()
    yb = (xb[:, 1] - xb[:, 2] > 0).long()
    xa[:, 3], xb[:, 3] = 1.0, -1.0
    return (xa, ya), (xb, yb)


def run_stream(learner, tasks, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for x, y in tasks:
        learner.train_experience(x, y, gen, epochs=5, batch_size=20)
        learner.end_experience(x, y, gen)
    xa, ya = tasks[0]
    return float(torch.nn.functional.cross_entropy(learner.predict(xa), ya))


@pytest.mark.parametrize("kind, online", [("exact", False), ("empirical", True)])
def test_ewc_reduces_forgetting(float64, kind, online):
    tasks = two_tasks()
    sgd_loss = run_stream(SGDLearner(linear4(), lr=0.5), tasks)
    ewc = EWC(linear4(), lr=0.5, lam=5.0, fisher=kind, online=online)
    ewc_loss = run_stream(ewc, tasks)
    # measured: SGD 1.34; EWC exact 0.31, empirical 0.57 (task-A cross-entropy after task B)
    assert ewc_loss < 0.5 * sgd_loss, (ewc_loss, sgd_loss)
    xb, yb = tasks[1]  # and still learns task B (chance is 0.5; measured 0.76 / 0.87, SGD 0.995)
    assert (ewc.predict(xb).argmax(1) == yb).double().mean() > 0.7


def linear4():
    torch.manual_seed(0)
    return nn.Linear(4, 2)


def test_state_dict_roundtrip(float64):
    tasks = two_tasks(40)
    a = EWC(linear4(), lr=0.5, lam=5.0, fisher="batched", fisher_batch_size=8)
    run_stream(a, tasks)
    b = EWC(nn.Linear(4, 2), lr=0.5, lam=5.0, fisher="batched", fisher_batch_size=8)
    b.load_state_dict(a.state_dict())
    x = tasks[0][0]
    torch.testing.assert_close(b.predict(x), a.predict(x))
    params = dict(b.model.named_parameters())
    torch.testing.assert_close(b.penalty(params), a.penalty(params))
    assert b.experiences_seen == 2


# --------------------------------------------------------------------------- output masks (task-incremental)


def test_fisher_over_an_output_mask_by_hand(float64):
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    x, _ = data(n=6)
    classes = [3, 1]  # the predictive distribution is the softmax over outputs 3 and 1; labels are positions
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    W, b = model.weight.detach(), model.bias.detach()
    p = torch.softmax((x @ W.T + b)[:, classes], dim=1)  # [N, 2]

    def grads(labels):  # ∂ log p(label|x)/∂W: rows 3 and 1 get (onehot − p) xᵀ, rows 0 and 2 nothing
        r = torch.nn.functional.one_hot(labels, 2).to(x.dtype) - p
        gw, gb = torch.zeros(len(x), 4, 3), torch.zeros(len(x), 4)
        for k, c in enumerate(classes):
            gw[:, c], gb[:, c] = r[:, k, None] * x, r[:, k]
        return gw, gb

    kw = {"classes": classes}
    exact = fisher_diagonal(model, params_of(model), x, y, "exact", **kw)
    fw = sum(p[:, k, None, None] * grads(torch.full((6,), k))[0] ** 2 for k in range(2)).mean(0)
    fb = sum(p[:, k, None] * grads(torch.full((6,), k))[1] ** 2 for k in range(2)).mean(0)
    torch.testing.assert_close(exact["weight"], fw)
    torch.testing.assert_close(exact["bias"], fb)
    assert exact["weight"][[0, 2]].abs().sum() == 0  # outputs outside the mask get no Fisher
    empirical = fisher_diagonal(model, params_of(model), x, y, "empirical", **kw)
    gw, gb = grads(y)
    torch.testing.assert_close(empirical["weight"], (gw**2).mean(0))
    torch.testing.assert_close(empirical["bias"], (gb**2).mean(0))
    sampled = fisher_diagonal(
        model, params_of(model), x, y, "sampled", generator=torch.Generator().manual_seed(3), **kw
    )
    drawn = torch.multinomial(p, 1, generator=torch.Generator().manual_seed(3)).squeeze(1)
    torch.testing.assert_close(sampled["weight"], (grads(drawn)[0] ** 2).mean(0))
    batched = fisher_diagonal(model, params_of(model), x, y, "batched", batch_size=4, **kw)
    torch.testing.assert_close(batched["weight"], (gw[:4].mean(0) ** 2 + gw[4:].mean(0) ** 2) / 2)


def direct_fisher(model, x, labels=None, classes=None):
    """Σ over examples (and, without ``labels``, classes weighted by p) of squared autograd gradients / N."""
    names = [k for k, _ in model.named_parameters()]
    out = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    for n in range(len(x)):  # one example and one class at a time
        logits = model(x[n : n + 1])
        logp = torch.log_softmax(logits if classes is None else logits[:, classes], dim=1)[0]
        for c in range(len(logp)) if labels is None else [int(labels[n])]:
            grads = torch.autograd.grad(logp[c], list(model.parameters()), retain_graph=True, allow_unused=True)
            weight = logp[c].exp().detach() if labels is None else 1.0
            for k, g in zip(names, grads):
                if g is not None:
                    out[k] += weight * g**2 / len(x)
    return out


def test_exact_fisher_of_an_mlp_equals_a_direct_loop_for_any_chunk(float64, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4))
    x = torch.randn(7, 3)
    expected = direct_fisher(model, x)

    def no_vmap(*args, **kwargs):
        raise AssertionError("linear layers take the (δ²)ᵀ(a²) path, not per-example gradients")

    monkeypatch.setattr(torch.func, "vmap", no_vmap)
    for chunk in (None, 1, 3):
        fisher = fisher_diagonal(
            model, params_of(model), x, torch.zeros(7, dtype=torch.long), "exact", batch_size=chunk
        )
        for k in expected:
            torch.testing.assert_close(fisher[k], expected[k])


class Scaled(nn.Module):
    """A linear layer followed by a learned per-output scale (not a linear layer's parameter)."""

    def __init__(self):
        super().__init__()
        self.linear, self.scale = nn.Linear(3, 4), nn.Parameter(torch.tensor([1.0, 2.0, -1.0, 0.5]))

    def forward(self, x):
        return self.linear(torch.tanh(x)) * self.scale


class Reused(nn.Module):
    """The same linear layer applied twice."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        return self.linear(torch.tanh(self.linear(x)))


class Peeking(nn.Module):
    """A linear layer whose weight is also used outside its forward (the gradient check must catch it)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        return self.linear(x) + x @ self.linear.weight


class Sequence3d(nn.Module):
    """A linear layer on [batch, time, features] inputs."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 4)

    def forward(self, x):
        return self.linear(x.view(len(x), 2, 2)).sum(1)


@pytest.mark.parametrize("module", [Scaled, Reused, Peeking, Sequence3d])
def test_fisher_falls_back_to_per_example_gradients_where_the_linear_shortcut_does_not_hold(
    float64, monkeypatch, module
):
    # Scaled: the linear layer by the shortcut, the scale by vmap; the others: everything by vmap
    torch.manual_seed(0)
    model = module()
    x = torch.randn(6, 3 if module is Scaled else 4)
    y = torch.tensor([0, 2, 1, 1, 2, 0])
    calls = []
    vmap = torch.func.vmap
    monkeypatch.setattr(torch.func, "vmap", lambda *a, **k: calls.append(1) or vmap(*a, **k))
    for kind, labels in (("exact", None), ("empirical", y)):
        fisher = fisher_diagonal(model, params_of(model), x, y, kind, classes=[3, 0, 1] if module is Scaled else None)
        expected = direct_fisher(model, x, labels, classes=[3, 0, 1] if module is Scaled else None)
        for k in expected:
            torch.testing.assert_close(fisher[k], expected[k])
    assert calls  # the per-example path ran


def test_select_outputs_errors_name_the_bad_classes():
    logits = torch.zeros(2, 4)
    torch.testing.assert_close(select_outputs(logits + torch.arange(4.0), [2, 0]), torch.tensor([[2.0, 0.0]] * 2))
    assert select_outputs(logits, None) is logits
    for bad in ([], [1, 1], [0, 4], [-1]):
        with pytest.raises(ValueError, match=rf"distinct output indices in 0\.\.3, got {re.escape(str(bad))}"):
            select_outputs(logits, bad)


def test_masked_training_step_and_ewc_fisher_use_only_the_experiences_outputs(float64):
    torch.manual_seed(0)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])  # positions in classes [2, 0]
    learner = EWC(nn.Linear(3, 4), lr=0.5, lam=1.0, fisher="exact")
    before = {k: v.clone() for k, v in params_of(learner.model).items()}
    p = {k: v.clone().requires_grad_() for k, v in before.items()}
    loss = nn.functional.cross_entropy((x @ p["weight"].T + p["bias"])[:, [2, 0]], y)
    grads = dict(zip(p, torch.autograd.grad(loss, list(p.values()))))
    metrics = learner.train_experience(x, y, torch.Generator().manual_seed(0), batch_size=5, classes=[2, 0])
    assert abs(metrics["loss"] - float(loss.detach())) < 1e-12
    for k, v in learner.model.named_parameters():
        torch.testing.assert_close(v.detach(), before[k] - 0.5 * grads[k])
    assert torch.equal(learner.model.weight[[1, 3]].detach(), before["weight"][[1, 3]])  # untouched outputs
    learner.end_experience(x, y, torch.Generator().manual_seed(0), classes=[2, 0])
    expected = fisher_diagonal(learner.model, params_of(learner.model), x, y, "exact", classes=[2, 0])
    for k in expected:
        torch.testing.assert_close(learner.fishers[0][k], expected[k])
    torch.testing.assert_close(learner.predict(x, classes=[2, 0]), learner.predict(x)[:, [2, 0]])


@pytest.mark.parametrize("online", [False, True])
def test_training_step_adds_the_summed_penalty_gradient(float64, online):
    # the closed form (one merged pair) against autograd through the literal sum of per-experience penalties
    model, (x, y) = linear_model(), data()
    learner = EWC(model, lr=0.1, lam=3.0, fisher="exact", online=online)
    gen = torch.Generator().manual_seed(0)
    for labels in (y, 1 - y, y):
        learner.train_experience(x, labels, gen, batch_size=4)
        learner.end_experience(x, labels, gen)
    learner.fishers[0]["bias"][0] = 0.0  # an entry without Fisher in one pair (and, online, in all)
    learner._merged = None
    learner.train_experience(x, 1 - y, gen, batch_size=4)  # away from the (latest) anchor
    assert len(learner.fishers) == (1 if online else 3)
    before = {k: v.clone() for k, v in params_of(model).items()}
    p = {k: v.clone().requires_grad_() for k, v in before.items()}
    loss = nn.functional.cross_entropy(x @ p["weight"].T + p["bias"], y)
    penalty = sum(ewc_penalty(p, f, a, 3.0) for f, a in zip(learner.fishers, learner.anchors))
    grads = dict(zip(p, torch.autograd.grad(loss + penalty, list(p.values()))))
    metrics = learner.train_step(x, y)
    assert metrics["penalty"] == pytest.approx(float(penalty.detach()), rel=1e-10) and metrics["penalty"] > 0
    for k, v in model.named_parameters():
        torch.testing.assert_close(v.detach(), before[k] - 0.1 * grads[k])


def test_adam_optimizer_first_step_by_hand_and_errors(float64):
    # Adam's first step is lr · m̂ / (√v̂ + ε) = lr · g / (|g| + ε): a step of lr against the gradient's sign
    model, (x, y) = linear_model(), data()
    learner = EWC(model, lr=0.01, lam=1.0, optimizer="adam")
    assert isinstance(learner.optimizer, torch.optim.Adam)
    before = {k: v.clone() for k, v in params_of(model).items()}
    p = {k: v.clone().requires_grad_() for k, v in before.items()}
    loss = nn.functional.cross_entropy(x @ p["weight"].T + p["bias"], y)
    grads = dict(zip(p, torch.autograd.grad(loss, list(p.values()))))
    learner.train_step(x, y)
    for k, v in model.named_parameters():
        torch.testing.assert_close(v.detach(), before[k] - 0.01 * grads[k] / (grads[k].abs() + 1e-8))
    with pytest.raises(ValueError, match=r"unknown optimizer 'rmsprop'; allowed: sgd, adam"):
        SGDLearner(linear_model(), lr=0.1, optimizer="rmsprop")
    with pytest.raises(ValueError, match=r"momentum=0.9 is for optimizer='sgd', not 'adam'"):
        SGDLearner(linear_model(), lr=0.1, momentum=0.9, optimizer="adam")


def test_fisher_of_a_diverged_model_is_nan_not_an_error():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    x, y = data()
    for kind in ("exact", "empirical"):
        fisher = fisher_diagonal(model, params_of(model), x, y, kind)
        assert torch.isnan(fisher["weight"]).any()
