"""Hand-written references for gradient tests: a tiny warped MLP and optimiser steps in float64.

Nothing here uses warpgrad's algorithms: the model is written out by hand, so gradients that
warpgrad computes are compared with computations it did not make.
"""

import torch
from torch.nn import functional as F

from warpgrad import MLP, partition

W1, B1, WW, BW, W2, B2 = (
    "layers.0.weight",
    "layers.0.bias",
    "layers.2.module.weight",
    "layers.2.module.bias",
    "layers.3.weight",
    "layers.3.bias",
)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    model = MLP(2, (3,), 1, warp={}).double()
    with torch.no_grad():  # move the warp away from the identity so its Jacobian matters
        model.layers[2].module.weight.add_(0.3 * torch.randn(3, 3))
        model.layers[2].module.bias.add_(0.1 * torch.randn(3))
    return model


def reference_forward(theta, phi, x):
    h = torch.relu(x @ theta[W1].T + theta[B1])
    h = h @ phi[WW].T + phi[BW]
    return h @ theta[W2].T + theta[B2]


def reference_loss(theta, phi, batch):
    x, y = batch
    return ((reference_forward(theta, phi, x) - y) ** 2).mean()


def reference_grad(theta, phi, batch):
    theta = {k: v.detach().requires_grad_() for k, v in theta.items()}
    grads = torch.autograd.grad(reference_loss(theta, phi, batch), list(theta.values()))
    return dict(zip(theta, grads))


def sgd_step(theta, grads, state, lr=0.1):
    return {k: theta[k] - lr * grads[k] for k in theta}


def adam_step(theta, grads, state, lr=0.05, b1=0.9, b2=0.999, eps=1e-8):
    t = state["t"] + 1
    out = {}
    for k in theta:
        m = b1 * state["m"][k] + (1 - b1) * grads[k]
        v = b2 * state["v"][k] + (1 - b2) * grads[k] ** 2
        out[k] = theta[k] - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
    return out


def momentum_step(theta, grads, state, lr=0.1, beta=0.9):
    return {k: theta[k] - lr * (beta * state["buf"][k] + grads[k]) for k in theta}


def finite_difference(fn, phi, eps=1e-6):
    grads = {}
    for name, value in phi.items():
        g = torch.zeros_like(value)
        for i in range(value.numel()):
            plus = {k: v.detach().clone() for k, v in phi.items()}
            minus = {k: v.detach().clone() for k, v in phi.items()}
            plus[name].view(-1)[i] += eps
            minus[name].view(-1)[i] -= eps
            g.view(-1)[i] = (fn(plus) - fn(minus)) / (2 * eps)
        grads[name] = g
    return grads


def batch(seed, n=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    return x, torch.sin(x.sum(1, keepdim=True)) + 0.1 * torch.randn(n, 1, generator=g)


def point(model, seed=5):
    theta, _ = partition(model)
    g = torch.Generator().manual_seed(seed)
    return {k: v.detach() + 0.2 * torch.randn(v.shape, generator=g) for k, v in theta.items()}


class FixedTask:
    """A regression task with fixed training and test batches."""

    metric_name = "mse"
    lower_is_better = True

    def __init__(self, seed):
        self.train, self.test = batch(100 + seed), batch(200 + seed, n=8)

    def train_batch(self, generator):
        return self.train

    def test_batch(self):
        return self.test

    def loss(self, prediction, target):
        return F.mse_loss(prediction, target)

    metric = loss
