"""core.pooling.max_pool against torch's own max-pooling: the same values and gradients of every
order, bit for bit, where windows tie, hold NaNs, infinities or signed zeros; under vmap; and
torch's kernel wherever the fast path does not apply."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from warpgrad.core import pooling
from warpgrad.core.pooling import _window_argmax, max_pool


@pytest.fixture
def fast_everywhere(monkeypatch):
    """The fast path for small tensors too, with a count of its calls."""
    monkeypatch.setattr(pooling, "MIN_ELEMENTS", 0)
    monkeypatch.setattr(pooling, "MIN_CHANNELS", 1)
    calls = []
    apply = pooling._WindowArgmax.apply
    monkeypatch.setattr(pooling._WindowArgmax, "apply", lambda x: calls.append(x.shape) or apply(x))
    return calls


def awkward(shape, dtype=torch.float32, seed=0):
    """Random values with tied windows (a constant band), NaNs, infinities and signed zeros."""
    x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    x[..., :3, :] = 0.25
    flat = x.view(-1)
    flat[::97] = float("nan")
    flat[5::89] = float("inf")
    flat[6::101] = -float("inf")
    flat[7::83] = -0.0
    flat[8::79] = 0.0
    return x


def same(a, b):
    """Bitwise equal, NaNs included."""
    return a.shape == b.shape and torch.equal(a.view(-1).view(torch.int8), b.view(-1).view(torch.int8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(5, 16, 28, 28), (3, 8, 6, 10), (2, 3, 2, 2)])
def test_window_argmax_picks_what_torchs_kernel_picks(shape, dtype):
    x = awkward(shape, dtype)
    assert torch.equal(_window_argmax(x), F.max_pool2d_with_indices(x, 2)[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(5, 16, 28, 28), (3, 8, 6, 10)])
def test_max_pool_has_torchs_values_and_gradients_to_second_order(shape, dtype, fast_everywhere):
    pool = nn.MaxPool2d(2)
    x = awkward(shape, dtype).requires_grad_(True)

    def derivatives(run):
        y = run(x)
        g = torch.randn(y.shape, dtype=dtype, generator=torch.Generator().manual_seed(1), requires_grad=True)
        first = torch.autograd.grad(y, x, g, create_graph=True)[0]
        h = torch.randn(first.shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
        return y, first, torch.autograd.grad(first, g, h)[0]

    for got, expected in zip(derivatives(lambda x: max_pool(pool, x)), derivatives(pool), strict=True):
        assert same(got, expected)
    assert fast_everywhere, "the fast path did not run"


@pytest.mark.parametrize("in_dim", [0, 1])
def test_max_pool_under_vmap(in_dim, fast_everywhere):
    pool = nn.MaxPool2d(2)
    x = awkward((3, 4, 8, 6, 6)).nan_to_num(0.5)  # a NaN would make every gradient NaN

    def grads(run):
        return torch.func.vmap(torch.func.grad(lambda x: (run(x) ** 2).sum()), in_dims=in_dim)(x)

    assert same(
        torch.func.vmap(lambda x: max_pool(pool, x), in_dims=in_dim)(x), torch.func.vmap(pool, in_dims=in_dim)(x)
    )
    assert same(grads(lambda x: max_pool(pool, x)), grads(pool))
    assert fast_everywhere


@pytest.mark.parametrize(
    "pool, shape",
    [
        (nn.MaxPool2d(2), (2, 16, 7, 8)),  # odd height
        (nn.MaxPool2d(3), (2, 16, 9, 9)),
        (nn.MaxPool2d(2, stride=1), (2, 16, 8, 8)),
        (nn.MaxPool2d(2, padding=1), (2, 16, 8, 8)),
        (nn.MaxPool2d(2), (16, 8, 8)),  # unbatched
        (nn.MaxPool2d(2, return_indices=True), (2, 16, 8, 8)),
    ],
)
def test_other_pools_run_torchs_kernel(pool, shape, fast_everywhere):
    x = awkward(shape)
    got, expected = max_pool(pool, x), pool(x)
    if pool.return_indices:  # (values, indices), as the module returns them
        assert same(got[0], expected[0]) and torch.equal(got[1], expected[1])
    else:
        assert same(got, expected)
    assert not fast_everywhere


def test_small_or_narrow_inputs_run_torchs_kernel(monkeypatch):
    calls = []
    apply = pooling._WindowArgmax.apply
    monkeypatch.setattr(pooling._WindowArgmax, "apply", lambda x: calls.append(x.shape) or apply(x))
    pool = nn.MaxPool2d(2)
    for shape in [(4, 16, 14, 14), (80, 4, 28, 28)]:  # too few elements; too few channels
        max_pool(pool, torch.randn(shape))
    assert not calls
    max_pool(pool, torch.randn(20, 16, 28, 28))
    assert calls == [(20, 16, 28, 28)]
