"""Functional core and warp layers, checked against torch.optim and direct computations."""

import pytest
import torch
from torch import nn

from warpgrad import MLP, Conv4, Warp, adam, combine, conv_warp, linear_warp, momentum, partition, sgd
from warpgrad.functional import functional_apply, make_inner_optimizer


def test_partition_splits_by_role_and_returns_the_modules_own_parameters():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), Warp(nn.Linear(3, 3)), nn.Linear(3, 1))
    theta, phi = partition(model)
    assert sorted(theta) == ["0.bias", "0.weight", "3.bias", "3.weight"]
    assert sorted(phi) == ["2.module.bias", "2.module.weight"]
    assert theta["0.weight"] is model[0].weight
    assert phi["2.module.weight"] is model[2].module.weight


def test_combine_rejects_a_name_defined_twice():
    with pytest.raises(ValueError, match="defined twice"):
        combine({"a": torch.zeros(1)}, {"a": torch.ones(1)})


def test_functional_apply_uses_the_given_parameters_and_leaves_the_module_alone():
    model = nn.Linear(2, 1)
    before = model.weight.detach().clone()
    params = {"weight": torch.tensor([[1.0, 2.0]]), "bias": torch.tensor([0.5])}
    out = functional_apply(model, params, torch.tensor([[3.0, 4.0]]))
    assert out.item() == pytest.approx(3 + 8 + 0.5)
    assert torch.equal(model.weight, before)


@pytest.mark.parametrize(
    "ours, reference",
    [
        (lambda: sgd(0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
        (lambda: momentum(0.1, 0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
        (lambda: adam(0.01, eps_root=0.0), lambda p: torch.optim.Adam(p, lr=0.01)),
    ],
    ids=["sgd", "momentum", "adam"],
)
def test_inner_optimisers_match_torch_optim_over_several_steps(ours, reference):
    torch.manual_seed(0)
    target = torch.randn(4, 3, dtype=torch.float64)
    start = torch.randn(4, 3, dtype=torch.float64)
    ref_param = nn.Parameter(start.clone())
    ref_opt = reference([ref_param])
    opt = ours()
    params = {"w": start.clone()}
    state = opt.init(params)
    for step in range(6):
        scale = 1.0 + step  # changing gradients exercise the state
        ref_opt.zero_grad()
        (scale * ((ref_param - target) ** 3).sum()).backward()
        ref_opt.step()
        grads = {"w": scale * 3 * (params["w"] - target) ** 2}
        params, state = opt.update(grads, state, params)
    torch.testing.assert_close(params["w"], ref_param.detach(), rtol=1e-12, atol=1e-12)


def test_inner_optimiser_update_does_not_modify_its_inputs():
    params = {"w": torch.ones(3)}
    opt = adam(0.1)
    state = opt.init(params)
    grads = {"w": torch.full((3,), 2.0)}
    opt.update(grads, state, params)
    assert torch.equal(params["w"], torch.ones(3)) and torch.equal(state["m"]["w"], torch.zeros(3))


def test_adam_meta_gradient_is_finite_when_a_gradient_element_is_zero():
    lr = torch.tensor(0.1, requires_grad=True)
    scale = torch.tensor([1.0, 0.0], requires_grad=True)
    params = {"w": torch.tensor([1.0, 1.0])}
    opt = adam(0.1)
    new, _ = opt.update({"w": scale * params["w"]}, opt.init(params), params)
    (g,) = torch.autograd.grad((new["w"] * lr).sum(), scale)
    assert torch.isfinite(g).all()


def test_unknown_inner_optimiser_names_the_value_and_the_allowed_ones():
    with pytest.raises(ValueError, match=r"'rmsprop'.*sgd, momentum, adam"):
        make_inner_optimizer("rmsprop", lr=0.1)


@pytest.mark.parametrize("residual", [False, True])
def test_identity_initialised_linear_warp_is_the_identity_map(residual):
    warp = linear_warp(5, depth=2, residual=residual)
    x = torch.randn(7, 5)
    torch.testing.assert_close(warp(x), x)


def test_identity_initialised_conv_warp_is_the_identity_map():
    warp = conv_warp(4, kernel_size=3)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(warp(x), x)


def test_channel_scale_warp_scales_and_shifts_each_channel_on_its_own():
    warp = conv_warp(3, kernel_size=1, depthwise=True)
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(warp(x), x)  # identity at initialisation
    (conv,) = [m for m in warp.modules() if isinstance(m, torch.nn.Conv2d)]
    assert conv.weight.shape == (3, 1, 1, 1)  # one scale per channel, no mixing
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0, 0.5]).view(3, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, 1.0, -2.0]))
    expected = x * torch.tensor([2.0, -1.0, 0.5]).view(1, 3, 1, 1) + torch.tensor([0.0, 1.0, -2.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(warp(x), expected)


@pytest.mark.parametrize("depth", [1, 2])
def test_a_residual_warp_ending_in_bn_and_relu_starts_as_the_identity_and_can_learn(depth):
    warp = conv_warp(4, depth=depth, batchnorm=True, activation="relu", residual=True)
    x = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(warp(x), x)
    warp(x).pow(2).sum().backward()
    gate = warp.module.gate
    assert gate is not None and gate.grad.abs() > 0  # a zero-initialised conv here would get no gradient ever
    with torch.no_grad():
        gate -= 0.1 * gate.grad
    warp.zero_grad()
    warp(x).pow(2).sum().backward()
    convs = [m for m in warp.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.grad.abs().sum() > 0 for c in convs)


def test_warp_builders_reject_bad_options():
    with pytest.raises(ValueError, match="activation"):
        linear_warp(3, activation="softsign")
    with pytest.raises(ValueError, match="depth"):
        conv_warp(3, depth=0)
    with pytest.raises(ValueError, match="kernel_size"):
        conv_warp(3, kernel_size=2)


def test_warp_options_build_the_requested_layers():
    warp = conv_warp(8, depth=2, batchnorm=True, activation="relu", residual=True)
    kinds = [type(m).__name__ for m in warp.modules()]
    assert kinds.count("Conv2d") == 2 and kinds.count("BatchNorm") == 2 and kinds.count("ReLU") == 2
    assert "Residual" in kinds


def test_mlp_with_identity_warps_computes_the_same_function_as_without():
    warped = MLP(1, (8, 8), 1, warp={})
    theta, phi = partition(warped)
    assert len(phi) == 4  # a weight and a bias per hidden block
    x = torch.randn(10, 1)
    h = x
    for layer in warped.layers:
        if not isinstance(layer, Warp):
            h = layer(h)
    torch.testing.assert_close(warped(x), h)


def test_conv4_has_a_warp_after_each_block_and_classifies():
    model = Conv4(1, 5, image_size=28, width=8, warp={})
    theta, phi = partition(model)
    assert len([n for n in phi if n.endswith("weight")]) == 4
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 5)
