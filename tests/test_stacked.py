"""Stacked forward passes against ``vmap(functional_call)``: the same values and gradients, bit for
bit, in float32 (the rules issue the operations torch's batching rules issue), and ``None`` for a
model or task the rules do not cover."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from warpgrad import partition
from warpgrad.core import pooling
from warpgrad.core.params import scored_loss
from warpgrad.core.stacked import stacked_loss, supports
from warpgrad.layers import MLP, BatchNorm, Conv4, Residual, Warp, conv_warp
from warpgrad.tasks.base import objective


class Classify:
    def loss(self, prediction, target):
        return F.cross_entropy(prediction, target)


class Regress:
    def loss(self, prediction, target):
        return F.mse_loss(prediction, target)


def conv4(**warp):
    return Conv4(1, 5, 16, 6, warp=warp)


MODELS = {
    "conv4": lambda: Conv4(1, 5, 16, 6),
    "conv4 + warps": lambda: conv4(),
    "conv4 + depthwise 1x1 warps": lambda: conv4(kernel_size=1, depthwise=True),
    "conv4 + deep bn relu residual warps": lambda: conv4(depth=2, batchnorm=True, activation="relu", residual=True),
    "mlp + warps": lambda: MLP(3, (8, 8), 2, warp={}),
    "mlp + bn tanh warps": lambda: MLP(3, (8,), 2, warp={"batchnorm": True, "activation": "tanh"}),
    "mlp + leaky warps": lambda: MLP(3, (8,), 2, warp={"activation": "leaky_relu", "residual": True}),
    "sequential": lambda: nn.Sequential(
        nn.Linear(3, 8),
        BatchNorm(8, affine=False),
        nn.Sigmoid(),
        Residual(nn.Linear(8, 8), gated=True),
        nn.Linear(8, 2),
    ),
}


def batch(name, count, generator):
    if name.startswith("conv4"):
        x = torch.rand(count, 7, 1, 16, 16, generator=generator)
        return Classify(), (x, torch.randint(0, 5, (count, 7), generator=generator))
    x = torch.randn(count, 7, 3, generator=generator)
    return Regress(), (x, torch.randn(count, 7, 2, generator=generator))


def perturbed(params, count, generator):
    return {k: v.detach() + 0.1 * torch.randn(count, *v.shape, generator=generator) for k, v in params.items()}


def loss_and_grads(loss, theta, data):
    theta = {k: v.clone().requires_grad_() for k, v in theta.items()}
    values = loss(theta, data)
    return values, torch.autograd.grad(values.sum(), list(theta.values()))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("roles", ["warps frozen", "all adapted", "all frozen but the head", "weights adapted"])
def test_stacked_loss_equals_vmap_bit_for_bit(name, roles):
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = MODELS[name]()
    theta0, phi = partition(model)
    if roles == "all adapted":
        theta0, phi = dict(model.named_parameters()), {}
    elif roles == "weights adapted":  # biases shared: stacked weights with shared biases
        everything = dict(model.named_parameters())
        theta0 = {k: v for k, v in everything.items() if k.endswith("weight")}
        phi = {k: v for k, v in everything.items() if k not in theta0}
    elif roles == "all frozen but the head":
        everything = dict(model.named_parameters())
        head = list(everything)[-2:]
        theta0 = {k: everything[k] for k in head}
        phi = {k: v for k, v in everything.items() if k not in head}
    task, data = batch(name, 3, generator)
    theta = perturbed(theta0, 3, generator)
    frozen = {k: v.detach() for k, v in phi.items()}
    stacked = stacked_loss(model, task, frozen)
    assert stacked is not None
    expected = loss_and_grads(torch.func.vmap(scored_loss(model, objective(task), frozen)), theta, data)
    got = loss_and_grads(stacked, theta, data)
    assert torch.equal(got[0], expected[0])
    for g, e in zip(got[1], expected[1]):
        assert torch.equal(g, e)


def test_stacked_loss_with_shared_warps_differentiates_through_them_as_vmap_does():
    generator = torch.Generator().manual_seed(1)
    model = conv4()
    theta0, phi = partition(model)
    task, data = batch("conv4", 2, generator)
    theta = perturbed(theta0, 2, generator)
    phi = {k: v.detach().clone().requires_grad_() for k, v in phi.items()}

    def warp_grads(loss):
        return torch.autograd.grad(loss(theta, data).sum(), list(phi.values()))

    expected = warp_grads(torch.func.vmap(scored_loss(model, objective(task), phi)))
    for g, e in zip(warp_grads(stacked_loss(model, task, phi)), expected):
        assert torch.equal(g, e)


class Own(nn.Module):
    def forward(self, x):
        return x * 2


class OwnObjective:
    def objective(self, forward, batch):
        return forward(batch[0]).sum()


def test_models_and_tasks_without_rules_fall_back_to_vmap():
    assert not supports(nn.Sequential(nn.Linear(2, 2), Own()))
    assert not supports(nn.Sequential(nn.Conv2d(1, 2, 3, padding="same")))
    assert not supports(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")))
    assert not supports(Warp(nn.Sequential(nn.Linear(4, 4), Own())))
    assert not supports(nn.Sequential(type("MyLinear", (nn.Linear,), {})(2, 2)))  # a subclass may compute more
    assert not supports(nn.Sequential(nn.MaxPool2d(2, return_indices=True)))
    hooked = MLP(2, (4,), 1)
    hooked.layers[0].register_forward_hook(lambda *args: None)
    assert not supports(hooked)  # a hook the stacked rules would skip
    assert supports(conv_warp(4, depth=2, batchnorm=True, activation="relu"))
    assert stacked_loss(nn.Sequential(nn.Linear(2, 2), Own()), Regress(), {}) is None
    assert stacked_loss(MLP(2, (4,), 1), OwnObjective(), {}) is None
    assert stacked_loss(MLP(2, (4,), 1), Regress(), {}) is not None


def test_autocast_falls_back_to_vmap_whose_casts_the_stacked_ops_would_not_repeat():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert stacked_loss(MLP(2, (4,), 1), Regress(), {}) is None
    assert stacked_loss(MLP(2, (4,), 1), Regress(), {}) is not None


@pytest.mark.parametrize("fast_pooling", [False, True])
def test_conv4_pools_before_relu_with_the_written_orders_bits_to_second_order(fast_pooling, monkeypatch):
    """Conv4 runs each block's ReLU after its max-pool (layers.pool_before_relu), through
    core.pooling's fast path where it applies (forced here for these small images); every
    derivative keeps its bits, also where pooling windows tie (mostly blank images: many equal
    activations, where a pool that split the gradient among ties would differ)."""
    if fast_pooling:
        monkeypatch.setattr(pooling, "MIN_ELEMENTS", 0)
        monkeypatch.setattr(pooling, "MIN_CHANNELS", 1)
    torch.manual_seed(3)
    model = Conv4(1, 5, 16, 6, warp={"batchnorm": True, "activation": "relu"})
    x = (torch.rand(8, 1, 16, 16) > 0.9).float()
    y = torch.randint(0, 5, (8,))
    params = dict(model.named_parameters())

    def derivatives(forward):
        loss = F.cross_entropy(forward(x), y)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        second = torch.autograd.grad(sum((g * g).sum() for g in grads), list(params.values()))
        return [loss, *grads, *second]

    written = derivatives(lambda x: model.classifier(model.features(x).flatten(1)))
    for got, expected in zip(derivatives(model), written, strict=True):
        assert torch.equal(got, expected)
