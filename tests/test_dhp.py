"""DHP Softmax: trace update and plastic logits by hand, gradients vs finite differences, learner."""

import torch
from reference import finite_difference
from torch import nn
from torch.nn import functional as F

from warpgrad.methods.continual import DHPLearner, DHPSoftmax, ewc_penalty, hebbian_update, plastic_logits


def test_hebbian_update_by_hand(float64):
    hebb = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # 3 classes, 2 features
    h = torch.tensor([[1.0, 0.0], [3.0, 2.0], [10.0, -4.0]])
    y = torch.tensor([0, 0, 2])  # class 1 absent
    eta = 0.25
    new = hebbian_update(hebb, h, y, eta)
    expected = torch.tensor(
        [
            [0.75 * 1 + 0.25 * 2.0, 0.75 * 2 + 0.25 * 1.0],  # mean of class 0: (2, 1)
            [3.0, 4.0],  # unchanged
            [0.75 * 5 + 0.25 * 10.0, 0.75 * 6 + 0.25 * -4.0],
        ]
    )
    torch.testing.assert_close(new, expected)
    assert torch.equal(hebb, torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))  # pure


def test_plastic_logits_by_hand(float64):
    layer = DHPSoftmax(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        layer.bias.copy_(torch.tensor([0.5, -0.5]))
        layer.alpha.copy_(torch.tensor([[2.0, 1.0], [0.0, 3.0]]))
        layer.hebb.copy_(torch.tensor([[1.0, 1.0], [4.0, -1.0]]))
    h = torch.tensor([[1.0, 2.0]])
    # effective W = [[1+2, 0+1], [0+0, 2-3]] = [[3, 1], [0, -1]]
    expected = torch.tensor([[3 * 1 + 1 * 2 + 0.5, 0 * 1 - 1 * 2 - 0.5]])
    torch.testing.assert_close(layer(h), expected)
    torch.testing.assert_close(plastic_logits(h, layer.weight, layer.alpha, layer.bias, layer.hebb), expected)


def test_update_trace_and_eta(float64):
    layer = DHPSoftmax(2, 3, eta_init=0.3)
    torch.testing.assert_close(layer.eta, torch.tensor(0.3))
    h, y = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([1, 1])
    layer.update_trace(h, y)
    torch.testing.assert_close(layer.hebb, torch.tensor([[0.0, 0.0], [0.6, 0.9], [0.0, 0.0]]))


def test_gradients_wrt_alpha_eta_match_finite_differences(float64):
    g = torch.Generator().manual_seed(0)
    hebb = torch.randn(3, 4, generator=g)
    h, y = torch.randn(5, 4, generator=g), torch.tensor([0, 2, 2, 0, 1])
    weight, bias = torch.randn(3, 4, generator=g), torch.randn(3, generator=g)
    theta = {"alpha": 0.5 * torch.randn(3, 4, generator=g), "eta_logit": torch.tensor(-0.3)}

    def loss(p):  # the training step's loss: trace updated from the batch, then logits
        new = hebbian_update(hebb, h, y, torch.sigmoid(p["eta_logit"]))
        return F.cross_entropy(plastic_logits(h, weight, p["alpha"], bias, new), y)

    p = {k: v.clone().requires_grad_() for k, v in theta.items()}
    grads = dict(zip(p, torch.autograd.grad(loss(p), list(p.values()))))
    fd = finite_difference(loss, theta)
    for k in theta:
        torch.testing.assert_close(grads[k], fd[k], rtol=1e-6, atol=1e-8)
    assert grads["eta_logit"].abs() > 1e-4 and grads["alpha"].abs().sum() > 1e-3


def test_learner_step_matches_manual_step(float64):
    torch.manual_seed(0)
    learner = DHPLearner(nn.Sequential(nn.Linear(3, 4), nn.Tanh()), 4, 2, lr=0.1, eta_init=0.2, alpha_init=0.3)
    model = learner.model
    with torch.no_grad():
        model.head.hebb.copy_(torch.randn(2, 4))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    hebb0 = model.head.hebb.clone()
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 1, 0, 1, 1])

    p = {k: v.clone().requires_grad_() for k, v in before.items()}
    h = torch.tanh(x @ p["features.0.weight"].T + p["features.0.bias"])
    new = hebbian_update(hebb0, h, y, torch.sigmoid(p["head.eta_logit"]))
    loss = F.cross_entropy(plastic_logits(h, p["head.weight"], p["head.alpha"], p["head.bias"], new), y)
    grads = dict(zip(p, torch.autograd.grad(loss, list(p.values()))))

    metrics = learner.train_step(x, y)
    assert abs(metrics["loss"] - float(loss.detach())) < 1e-12
    for k, v in model.named_parameters():
        torch.testing.assert_close(v.detach(), before[k] - 0.1 * grads[k])
    torch.testing.assert_close(model.head.hebb, new.detach())
    assert not model.head.eta_logit.detach().eq(before["head.eta_logit"]).item()  # η learned


def test_dhp_with_ewc_penalises_learned_params_not_hebb(float64):
    torch.manual_seed(0)
    learner = DHPLearner(nn.Sequential(nn.Linear(3, 4), nn.Tanh()), 4, 2, lr=0.1, ewc_lambda=2.0, fisher="empirical")
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, generator=gen), torch.randint(0, 2, (20,), generator=gen)
    learner.train_experience(x, y, gen, batch_size=5)
    hebb_before = learner.model.head.hebb.clone()
    learner.end_experience(x, y, gen)
    torch.testing.assert_close(learner.model.head.hebb, hebb_before)  # never reset
    fisher = learner.fishers[0]
    assert set(fisher) == {k for k, _ in learner.model.named_parameters()}
    assert "head.hebb" not in fisher and "head.alpha" in fisher and "head.eta_logit" in fisher
    learner.train_experience(x, 1 - y, gen, batch_size=5)
    params = dict(learner.model.named_parameters())
    penalty = ewc_penalty(params, fisher, learner.anchors[0], 2.0)
    assert float(penalty.detach()) > 0
    torch.testing.assert_close(learner.penalty(params), penalty)
    state = learner.state_dict()
    other = DHPLearner(nn.Sequential(nn.Linear(3, 4), nn.Tanh()), 4, 2, lr=0.1, ewc_lambda=2.0, fisher="empirical")
    other.load_state_dict(state)
    torch.testing.assert_close(other.predict(x), learner.predict(x))
    torch.testing.assert_close(other.model.head.hebb, learner.model.head.hebb)


def test_masked_step_updates_the_trace_rows_of_the_experiences_classes(float64):
    torch.manual_seed(0)
    learner = DHPLearner(nn.Sequential(nn.Linear(3, 4), nn.Tanh()), 4, 5, lr=0.1, eta_init=0.2, alpha_init=0.3)
    model = learner.model
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 1, 0, 1, 1])  # positions in classes [3, 1]
    classes = [3, 1]

    p = {k: v.clone().requires_grad_() for k, v in before.items()}
    h = torch.tanh(x @ p["features.0.weight"].T + p["features.0.bias"])
    new = hebbian_update(torch.zeros(5, 4), h, torch.tensor(classes)[y], torch.sigmoid(p["head.eta_logit"]))
    logits = plastic_logits(h, p["head.weight"], p["head.alpha"], p["head.bias"], new)[:, classes]
    loss = F.cross_entropy(logits, y)
    grads = dict(zip(p, torch.autograd.grad(loss, list(p.values()))))

    metrics = learner.train_step(x, y, classes)
    assert abs(metrics["loss"] - float(loss.detach())) < 1e-12
    for k, v in model.named_parameters():
        torch.testing.assert_close(v.detach(), before[k] - 0.1 * grads[k])
    torch.testing.assert_close(model.head.hebb, new.detach())
    # rows 3 and 1 moved to η × their class means; rows 0, 2, 4 still zero
    assert model.head.hebb[[0, 2, 4]].abs().sum() == 0 and model.head.hebb[[1, 3]].abs().min() > 0
    torch.testing.assert_close(learner.predict(x, classes), learner.predict(x)[:, classes])
