"""Any nn.Module: recurrent and dropout models fall back to a per-task loop with the same results.

A model with ``nn.LSTM`` and ``nn.Dropout`` cannot be batched by ``vmap``. With default options
MAML and WarpGrad warn once and process tasks in a loop; their meta-gradients must equal an
explicit per-task loop written here with ``torch.autograd.grad(..., create_graph=True)`` that
draws the same dropout masks (same global seed, same order of forward passes). Evaluation runs in
eval mode, so it is deterministic.
"""

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from warpgrad import MAML, Warp, WarpGrad, partition, sgd

pytestmark = pytest.mark.usefixtures("float64")

LR, STEPS = 0.1, 2


class SequenceModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(2, 4, batch_first=True)
        self.dropout = nn.Dropout(0.3)
        self.warp = Warp(nn.Linear(4, 4))
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.warp(self.dropout(self.lstm(x)[0][:, -1])))


def model():
    torch.manual_seed(0)
    return SequenceModel().double()


class SequenceTask:
    metric_name = "mse"
    lower_is_better = True

    def __init__(self, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(10, 5, 2, generator=g, dtype=torch.float64)
        y = x.sum((1, 2)).unsqueeze(1).sin()
        self.train, self.test = (x[:6], y[:6]), (x[6:], y[6:])

    def train_batch(self, generator):
        return self.train

    def test_batch(self):
        return self.test

    def loss(self, prediction, target):
        return F.mse_loss(prediction, target)

    metric = loss


TASKS = [SequenceTask(1), SequenceTask(2)]


def loss_at(net, theta, phi, batch):
    return F.mse_loss(functional_call(net, {**theta, **phi}, (batch[0],)), batch[1])


def test_maml_meta_gradient_equals_an_explicit_per_task_loop():
    net = model()
    with pytest.warns(UserWarning, match="one at a time.*(lstm|dropout)"):
        learner = MAML(net, sgd(LR), STEPS)
    theta0, phi = partition(net)
    torch.manual_seed(7)
    got = learner.meta_gradients(TASKS, torch.Generator())["init"]

    torch.manual_seed(7)  # the same dropout masks: the same forward passes in the same order
    phi = {k: v.detach() for k, v in phi.items()}
    losses = []
    for task in TASKS:
        theta = dict(theta0)
        for _ in range(STEPS):
            grads = torch.autograd.grad(loss_at(net, theta, phi, task.train), list(theta.values()), create_graph=True)
            theta = {k: theta[k] - LR * g for k, g in zip(theta, grads)}
        losses.append(loss_at(net, theta, phi, task.test))
    expected = torch.autograd.grad(torch.stack(losses).mean(), list(theta0.values()))
    for name, e in zip(theta0, expected):
        torch.testing.assert_close(got[name], e, rtol=1e-9, atol=1e-12)
    assert max(float(e.abs().max()) for e in expected) > 1e-4


def test_warpgrad_meta_gradient_equals_an_explicit_per_task_loop():
    net = model()
    with pytest.warns(UserWarning, match="one at a time"):
        learner = WarpGrad(net, sgd(LR), STEPS)  # default options: offline, exact, Warp-Leap
    theta0, phi = partition(net)
    torch.manual_seed(7)
    got = learner.meta_gradients(TASKS, torch.Generator().manual_seed(0))["warp"]

    torch.manual_seed(7)
    fixed_phi = {k: v.detach() for k, v in phi.items()}
    thetas = [{k: v.detach().clone() for k, v in theta0.items()} for _ in TASKS]
    visited = [[] for _ in TASKS]
    for _ in range(STEPS):  # the tasks' trajectories in lockstep: step k of every task, then k + 1
        for i, task in enumerate(TASKS):
            theta = {k: v.requires_grad_() for k, v in thetas[i].items()}
            grads = torch.autograd.grad(loss_at(net, theta, fixed_phi, task.train), list(theta.values()))
            visited[i].append({k: v.detach() for k, v in theta.items()})
            thetas[i] = {k: (v - LR * g).detach() for (k, v), g in zip(theta.items(), grads)}
    with torch.no_grad():  # the Leap path's last training loss of every task
        for theta, task in zip(thetas, TASKS):
            loss_at(net, theta, fixed_phi, task.train)
    points = [(task, theta) for task, path in zip(TASKS, visited) for theta in path]  # offered task by task
    losses = []
    for task, theta in points:  # the exact objective at every buffered point, in buffer order
        theta = {k: v.requires_grad_() for k, v in theta.items()}
        grads = torch.autograd.grad(loss_at(net, theta, phi, task.train), list(theta.values()), create_graph=True)
        stepped = {k: v.detach() - LR * g for (k, v), g in zip(theta.items(), grads)}
        losses.append(loss_at(net, stepped, phi, task.train))
    expected = torch.autograd.grad(torch.stack(losses).mean(), list(phi.values()))
    for name, e in zip(phi, expected):
        torch.testing.assert_close(got[name], e, rtol=1e-9, atol=1e-12)
    assert max(float(e.abs().max()) for e in expected) > 1e-5


def test_evaluation_runs_in_eval_mode_and_is_deterministic():
    net = model()
    with pytest.warns(UserWarning):
        learner = MAML(net, sgd(LR), STEPS)
    first = learner.evaluate(TASKS, torch.Generator().manual_seed(0))
    torch.manual_seed(123)  # a different global RNG state cannot change it: dropout is off
    second = learner.evaluate(TASKS, torch.Generator().manual_seed(0))
    torch.testing.assert_close(first["mse"], second["mse"], rtol=0, atol=0)
    assert net.training and net.dropout.training  # train mode restored afterwards
    modes = []
    net.dropout.register_forward_hook(lambda module, inputs, output: modes.append(module.training))
    learner.evaluate(TASKS, torch.Generator().manual_seed(0))
    assert modes and not any(modes)  # every forward pass of the evaluation (adaptation included)
    learner.meta_step(TASKS, torch.Generator().manual_seed(0))
    assert modes[-1]  # meta-training keeps dropout on


def test_the_fallback_warning_is_shown_once_per_process():
    import warnings

    with pytest.warns(UserWarning, match="one at a time"):
        MAML(model(), sgd(LR), STEPS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second learner on the same kind of model: no warning
        MAML(model(), sgd(LR), STEPS)
