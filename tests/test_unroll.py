"""The one inner loop (``warpgrad.unroll``) against hand-written loops, in float64.

The hand-written loops below use their own optimiser formulas (from ``reference.py``) and
``torch.autograd.grad(..., create_graph=True)``, so the unroll is compared with code it shares
nothing with: values after K steps (both modes) and the gradient of the post-unroll loss with
respect to the initial parameters (differentiable mode).
"""

import pytest
import torch
from reference import adam_step, momentum_step, sgd_step

from warpgrad import adam, momentum, sgd, unroll

pytestmark = pytest.mark.usefixtures("float64")

STEPS = 4
OPTIMIZERS = {
    "sgd": (lambda: sgd(0.1), lambda th, g, s: (sgd_step(th, g, s, lr=0.1), s)),
    "momentum": (
        lambda: momentum(0.1, 0.9),
        lambda th, g, s: (
            momentum_step(th, g, s, lr=0.1, beta=0.9),
            {"buf": {k: 0.9 * s["buf"][k] + g[k] for k in th}},
        ),
    ),
    "adam": (
        lambda: adam(0.05, eps_root=0.0),
        lambda th, g, s: (
            adam_step(th, g, s, lr=0.05),
            {
                "m": {k: 0.9 * s["m"][k] + 0.1 * g[k] for k in th},
                "v": {k: 0.999 * s["v"][k] + 0.001 * g[k] ** 2 for k in th},
                "t": s["t"] + 1,
            },
        ),
    ),
}


def initial_state(name, theta):
    if name == "sgd":
        return {}
    if name == "momentum":
        return {"buf": {k: torch.zeros_like(v) for k, v in theta.items()}}
    return {
        "m": {k: torch.zeros_like(v) for k, v in theta.items()},
        "v": {k: torch.zeros_like(v) for k, v in theta.items()},
        "t": torch.tensor(0.0),
    }


def loss(params, batch):
    x, y = batch
    h = torch.tanh(x @ params["w1"] + params["b1"])
    return ((h @ params["w2"] - y) ** 2).mean()


def problem():
    g = torch.Generator().manual_seed(0)
    params = {
        "w1": torch.randn(3, 5, generator=g),
        "b1": torch.randn(5, generator=g),
        "w2": torch.randn(5, 1, generator=g),
    }
    batches = [(torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)) for _ in range(STEPS)]
    query = (torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g))
    return params, batches, query


def hand_loop(name, theta0, batches, create_graph):
    theta, state = dict(theta0), initial_state(name, theta0)
    for b in batches:
        grads = dict(zip(theta, torch.autograd.grad(loss(theta, b), list(theta.values()), create_graph=create_graph)))
        theta, state = OPTIMIZERS[name][1](theta, grads, state)
    return theta


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_unroll_values_equal_a_hand_written_loop(name):
    params, batches, _ = problem()
    expected = hand_loop(name, {k: v.requires_grad_() for k, v in params.items()}, batches, create_graph=False)
    for differentiable in (False, True):
        got, _ = unroll(loss, params, OPTIMIZERS[name][0](), batches, differentiable=differentiable)
        for k in params:
            torch.testing.assert_close(got[k], expected[k].detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_differentiable_unroll_gradient_equals_a_create_graph_loop(name):
    params, batches, query = problem()
    theta0 = {k: v.clone().requires_grad_() for k, v in params.items()}
    expected = torch.autograd.grad(loss(hand_loop(name, theta0, batches, True), query), list(theta0.values()))
    theta0 = {k: v.clone().requires_grad_() for k, v in params.items()}
    final, _ = unroll(loss, theta0, OPTIMIZERS[name][0](), batches, differentiable=True)
    got = torch.autograd.grad(loss(final, query), list(theta0.values()))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert max(float(g.abs().max()) for g in got) > 1e-3  # not trivially zero


def test_first_order_unroll_drops_the_second_order_terms():
    params, batches, query = problem()
    theta0 = {k: v.clone().requires_grad_() for k, v in params.items()}
    final, _ = unroll(loss, theta0, sgd(0.1), batches, differentiable=True, first_order=True)
    got = torch.autograd.grad(loss(final, query), list(theta0.values()))
    # first order: dθ_K/dθ₀ = I, so the meta-gradient is the query gradient at θ_K
    at_final = {k: v.detach().requires_grad_() for k, v in final.items()}
    expected = torch.autograd.grad(loss(at_final, query), list(at_final.values()))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def test_hook_sees_every_point_loss_gradient_and_batch_in_order():
    params, batches, _ = problem()
    seen = []

    def hook(k, theta, state, value, grad, batch):
        seen.append((k, {n: v.clone() for n, v in theta.items()}, float(value), batch))

    final, _ = unroll(loss, params, sgd(0.1), batches, on_step=hook)
    assert [s[0] for s in seen] == list(range(STEPS))
    assert all(s[3] is b for s, b in zip(seen, batches))
    torch.testing.assert_close(seen[0][1]["w1"], params["w1"])
    assert seen[0][2] == pytest.approx(float(loss(params, batches[0])))
    assert not any(v.requires_grad for v in final.values())  # non-differentiable mode: no graph


def test_batches_are_drawn_lazily_one_per_step():
    params, batches, _ = problem()
    order = []

    def draws():
        for i, b in enumerate(batches):
            order.append(f"draw {i}")
            yield b

    unroll(loss, params, sgd(0.1), draws(), on_step=lambda k, *rest: order.append(f"step {k}"))
    assert order == [f"{what} {i}" for i in range(STEPS) for what in ("draw", "step")]
