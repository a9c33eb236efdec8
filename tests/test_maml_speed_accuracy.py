"""MAML's fast path: warpgrad's batch norm and the autograd inner loop, exact in float64 and as
accurate as torch's batch norm in float32.

:mod:`warpgrad.core.batchnorm` is checked against ``nn.BatchNorm2d(track_running_stats=False)`` up
to third derivatives and under vmap; the inner loop's plain-autograd gradient against
``torch.func.grad``'s; MAML's meta-gradient against a per-task create_graph loop through torch's
batch norm, exactly in float64 and in float32 with an error at most 2× that loop's own (geometric
mean over problems).
"""

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from warpgrad import MAML, Conv4, sgd
from warpgrad.core.batchnorm import batch_norm
from warpgrad.core.unroll import unroll
from warpgrad.layers import BatchNorm
from warpgrad.methods.maml import channels_last

F32_EPS = torch.finfo(torch.float32).eps


def derivatives(norm, x, weight, bias, orders=3):
    """Value, then the gradients of three nested scalar functionals w.r.t. (x, weight, bias)."""
    gen = torch.Generator().manual_seed(1)

    def like(t):  # the same numbers in either dtype
        return torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)

    inputs = [t for t in (x, weight, bias) if t is not None]
    y = norm(x, weight, bias)
    out, scalar = [y], (torch.sin(y) * like(y)).sum()
    for _ in range(orders):
        grads = torch.autograd.grad(scalar, inputs, create_graph=True, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]
        out += grads
        scalar = sum((g * like(g)).sum() for g in grads)
    return out


def torch_norm(x, weight, bias):
    return F.batch_norm(x, None, None, weight, bias, training=True)


def elementwise_norm(x, weight, bias):
    """Batch norm by its definition, differentiated by autograd alone: right at every order."""
    dims, shape = (0, *range(2, x.dim())), (1, -1) + (1,) * (x.dim() - 2)
    centred = x - x.mean(dims, keepdim=True)
    y = centred * torch.rsqrt((centred * centred).mean(dims, keepdim=True) + 1e-5)
    return y if weight is None else y * weight.view(shape) + bias.view(shape)


@pytest.mark.parametrize("shape", [(6, 3), (5, 3, 4), (4, 3, 3, 2), "channels_last"])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_equals_the_definition_up_to_third_derivatives_and_torch_up_to_second(float64, shape, affine):
    """torch's own third derivative w.r.t. x is off here (torch 2.13; finite differences agree with
    the definition), so torch is the reference for the value and two orders only."""
    torch.manual_seed(0)
    x = torch.randn((4, 3, 3, 2) if shape == "channels_last" else shape) * 2 + 0.5
    if shape == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.tensor([0.5, -1.5, 2.0], requires_grad=True) if affine else None
    bias = torch.tensor([0.1, -0.2, 0.3], requires_grad=True) if affine else None
    ours = derivatives(batch_norm, x, weight, bias)
    for got, expected in zip(ours, derivatives(elementwise_norm, x, weight, bias), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    for got, expected in zip(ours, derivatives(torch_norm, x, weight, bias, orders=2)):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("constant", ["x", "weight"])
def test_batch_norm_double_backward_skips_what_is_not_needed_and_keeps_the_rest(float64, constant):
    """An input that needs no gradient (a constant first-layer input in WarpGrad's objective, or
    constant weights) gets none computed in the double backward; the others keep their bits (the
    same as when it needs one) and equal the definition's."""
    torch.manual_seed(0)
    inputs = {"x": torch.randn(5, 3, 4) * 2 + 0.5, "weight": torch.tensor([0.5, -1.5, 2.0]), "bias": torch.randn(3)}
    c = torch.randn(5, 3, 4)
    wanted = [k for k in inputs if k != constant]

    def second_order(norm, constant_needs_grad):
        leaves = {k: v.clone().requires_grad_(k != constant or constant_needs_grad) for k, v in inputs.items()}
        y = norm(leaves["x"], leaves["weight"], leaves["bias"])
        first = torch.autograd.grad((torch.sin(y) * c).sum(), [leaves[k] for k in wanted], create_graph=True)
        return torch.autograd.grad(sum((g * g).sum() for g in first), [leaves[k] for k in wanted])

    skipped = second_order(batch_norm, False)
    for got, expected in zip(skipped, second_order(batch_norm, True), strict=True):
        assert torch.equal(got, expected)
    for got, expected in zip(skipped, second_order(elementwise_norm, False), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_batch_norm_second_order_under_vmap_equals_a_loop_through_torch_batch_norm(float64):
    """vmap over tasks of inner torch.func.grad steps, then an outer gradient: what MAML does.

    The input to the norm depends on an adapted parameter (a channel mix, as a conv's output
    does): torch's batch norm in place of ours is off by 0.1 here (pytorch/functorch#534)."""
    torch.manual_seed(0)
    xs = torch.randn(3, 5, 2, 4, 4)
    start = {
        "mix": torch.tensor([[1.0, 0.3], [-0.2, 0.8]], requires_grad=True),
        "w": torch.tensor([1.5, -0.5], requires_grad=True),
        "b": torch.tensor([0.2, 0.1], requires_grad=True),
    }

    def adapted_loss(norm, x):
        def loss(p):
            return (torch.tanh(norm(torch.einsum("oc,nchw->nohw", p["mix"], x), p["w"], p["b"])) ** 2).mean()

        p = start
        for _ in range(2):
            p = {k: v - 0.5 * g for (k, v), g in zip(p.items(), torch.func.grad(loss)(p).values())}
        return loss(p)

    batched = torch.func.vmap(lambda x: adapted_loss(batch_norm, x))(xs).sum()
    looped = sum(adapted_loss(torch_norm, x) for x in xs)
    params = list(start.values())
    for a, b in zip(torch.autograd.grad(batched, params), torch.autograd.grad(looped, params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("weights", ["batched", "shared"])
def test_batch_norm_under_nested_vmap_equals_a_loop_of_the_definition_up_to_third_derivatives(float64, weights):
    """The vmap rules (one more explicit batch dim per level): vmap of vmap, the batched dim not
    first, and weights batched with the input or shared by every slice (broadcast)."""
    torch.manual_seed(0)
    xs = (torch.randn(3, 2, 5, 3, 4) * 2 + 0.5).movedim(1, 3).requires_grad_()  # slice [i, :, :, j]
    shape = (3, 2, 3) if weights == "batched" else (3,)
    weight, bias = (torch.randn(shape, requires_grad=True) for _ in range(2))
    w_dims = (0, None) if weights == "batched" else (None, None)
    inner_w = 0 if weights == "batched" else None

    def nested(x, w, b):
        inner = torch.func.vmap(batch_norm, in_dims=(2, inner_w, inner_w), out_dims=2)
        return torch.func.vmap(inner, in_dims=(0, *w_dims[:1] * 2))(x, w, b)

    def looped(x, w, b):
        rows = []
        for i in range(x.shape[0]):
            slices = []
            for j in range(x.shape[3]):
                wij, bij = (w[i, j], b[i, j]) if weights == "batched" else (w, b)
                slices.append(elementwise_norm(x[i, :, :, j], wij, bij))
            rows.append(torch.stack(slices, 2))
        return torch.stack(rows)

    for got, expected in zip(derivatives(nested, xs, weight, bias), derivatives(looped, xs, weight, bias), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_batch_norm_compiles_under_vmap_as_lockstep_trajectories_do():
    """torch.compile cannot trace these autograd Functions under vmap (it stops at their
    ApplyTemplate); batch_norm then runs as plain operations, so lockstep's compiled step compiles."""
    gen = torch.Generator().manual_seed(0)
    params = {"w": torch.randn(3, 2, generator=gen) + 1}  # adapted per task, as lockstep's θ
    frozen = torch.randn(2, generator=gen).requires_grad_()  # a meta-parameter, as a warp layer's
    xs = torch.randn(3, 5, 2, 4, 4, generator=gen)

    def loss(p, x):
        return torch.tanh(batch_norm(x, p["w"], frozen)).pow(2).mean()

    step = torch.func.vmap(torch.func.grad_and_value(loss))
    try:
        got = torch.compile(step, fullgraph=True)(params, xs)  # fullgraph: a graph break raises
    except Exception as error:
        if "InductorError" in type(error).__name__ and "compil" in str(error).lower():
            pytest.skip(f"torch.compile cannot build kernels here: {error}")
        raise
    torch.testing.assert_close(got, step(params, xs))


@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_norm_float32_is_as_accurate_as_torch_when_the_mean_dwarfs_the_spread(channels_last):
    """Per quantity, the float32 relative error vs float64 is at most torch's (or 2 ulp).

    A channel mean 100× its spread is what a conv layer on images with a large offset gives;
    subtracting a float32 mean there loses digits that the corrected two-pass statistics keep.
    """
    gen = torch.Generator().manual_seed(0)
    x64 = (torch.randn(16, 4, 6, 6, generator=gen, dtype=torch.float64) * 2 + 100).float().double()
    w64, b64 = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64), torch.zeros(4, dtype=torch.float64)

    def run(norm, dtype, layout=torch.contiguous_format):
        x = x64.to(dtype).contiguous(memory_format=layout).requires_grad_()
        w, b = w64.to(dtype).requires_grad_(), b64.to(dtype).requires_grad_()
        return derivatives(norm, x, w, b, orders=2)

    reference = run(torch_norm, torch.float64)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    for ours, theirs, exact in zip(
        run(batch_norm, torch.float32, layout), run(torch_norm, torch.float32), reference, strict=True
    ):
        scale = exact.detach().abs().max()
        our_error = float((ours.detach().double() - exact.detach()).abs().max() / scale)
        their_error = float((theirs.detach().double() - exact.detach()).abs().max() / scale)
        assert our_error <= max(their_error, 2 * F32_EPS), (our_error, their_error)


# ------------------------------------------------------------------ the autograd inner loop


def meta_gradient_via_unroll(first_order, inside_vmap, theta_requires_grad=True):
    """∂/∂(θ₀, φ) of a query loss after 3 differentiable SGD steps; φ is closed over."""
    gen = torch.Generator().manual_seed(0)
    theta0 = {"w": torch.randn(3, 2, generator=gen, requires_grad=theta_requires_grad), "unused": torch.ones(2)}
    phi = torch.randn(2, requires_grad=True, generator=gen)
    x, y = torch.randn(5, 3, generator=gen), torch.randn(5, 2, generator=gen)

    def loss(p, batch):
        return ((torch.tanh(batch[0] @ p["w"]) * phi - batch[1]) ** 2).mean()

    def adapted(x):
        theta, _ = unroll(loss, theta0, sgd(0.3), [(x, y)] * 3, differentiable=True, first_order=first_order)
        return loss(theta, (x + 1, y)), theta

    if inside_vmap:  # a size-1 vmap makes unroll take torch.func.grad
        query, theta = torch.func.vmap(adapted)(x[None])
        query, theta = query[0], {k: v[0] for k, v in theta.items()}
    else:
        query, theta = adapted(x)
    wrt = [theta0["w"], phi] if theta_requires_grad else [phi]
    return torch.autograd.grad(query, wrt), theta


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("theta_requires_grad", [True, False])
def test_unroll_outside_functorch_gives_what_torch_func_grad_gives(float64, first_order, theta_requires_grad):
    fast, theta = meta_gradient_via_unroll(first_order, False, theta_requires_grad)
    reference, theta_ref = meta_gradient_via_unroll(first_order, True, theta_requires_grad)
    for a, b in zip(fast, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert torch.equal(theta["unused"], theta_ref["unused"])  # a parameter the loss ignores: zero gradient


def test_unroll_under_no_grad_adapts_without_building_a_graph():
    theta0 = {"w": torch.ones(3, requires_grad=True)}

    def loss(p, batch):
        return ((p["w"] - batch) ** 2).sum()

    with torch.no_grad():
        theta, _ = unroll(loss, theta0, sgd(0.25), [torch.zeros(3)] * 2, differentiable=True)
    assert not theta["w"].requires_grad
    torch.testing.assert_close(theta["w"], torch.full((3,), 0.25))


# ------------------------------------------------------------------ MAML through batch norm


class ImageTask:
    metric_name, lower_is_better = "accuracy", False

    def __init__(self, seed, ways=3, shots=2, queries=3, size=16, offset=0.0, dtype=torch.float64, channels=1):
        g = torch.Generator().manual_seed(seed)
        images = [torch.randn(ways * n, channels, size, size, generator=g) + offset for n in (shots, queries)]
        self.train = (images[0].to(dtype), torch.arange(ways).repeat(shots))
        self.test = (images[1].to(dtype), torch.arange(ways).repeat(queries))

    def train_batch(self, generator):
        return self.train

    def test_batch(self):
        return self.test

    def loss(self, prediction, target):
        return F.cross_entropy(prediction, target)

    def metric(self, prediction, target):
        return (prediction.argmax(1) == target).to(prediction.dtype).mean()


def with_torch_batch_norm(model):
    """A copy of ``model`` with every warpgrad BatchNorm replaced by torch's (same parameters)."""
    twin = copy.deepcopy(model)
    for module in list(twin.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, BatchNorm):
                torch_bn = nn.BatchNorm2d(child.num_features, track_running_stats=False).to(child.weight.dtype)
                setattr(module, child_name, torch_bn)
    twin.load_state_dict(model.state_dict())
    return twin


def create_graph_loop(model, tasks, steps, lr):
    """The mean query loss's gradient by a per-task loop of autograd.grad(create_graph=True)."""
    params = dict(model.named_parameters())

    def loss(p, batch):
        return F.cross_entropy(torch.func.functional_call(model, p, (batch[0],)), batch[1])

    total = 0.0
    for task in tasks:
        theta = params
        for _ in range(steps):
            grads = torch.autograd.grad(loss(theta, task.train), list(theta.values()), create_graph=True)
            theta = {k: theta[k] - lr * g for k, g in zip(theta, grads)}
        total = total + loss(theta, task.test)
    return list(torch.autograd.grad(total / len(tasks), list(params.values())))


def maml_gradient(model, tasks, steps, lr, batched, nhwc=False):
    learner = MAML(copy.deepcopy(model), sgd(lr), steps, batched=batched)
    learner.channels_last = nhwc
    return list(learner.meta_gradients(tasks, torch.Generator())["init"].values())


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("nhwc", [False, True], ids=["nchw", "channels_last"])
def test_maml_through_conv4_equals_a_create_graph_loop_through_torch_batch_norm(float64, one_thread, batched, nhwc):
    torch.manual_seed(0)
    model = Conv4(2, 3, image_size=16, width=4)
    tasks = [ImageTask(seed, channels=2) for seed in range(3)]
    expected = create_graph_loop(with_torch_batch_norm(model), tasks, 3, 0.4)
    for got, want in zip(maml_gradient(model, tasks, 3, 0.4, batched, nhwc), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_channels_last_copies_single_channel_images_into_nhwc_strides():
    images, labels = torch.randn(4, 1, 5, 5), torch.arange(4)
    converted, same_labels = channels_last((images, labels))
    assert converted.stride() == (25, 1, 5, 1) and torch.equal(converted, images)
    assert same_labels is labels
    features = nn.Conv2d(1, 3, 3)(converted)
    assert features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous()


def smooth_convnet(seed):
    """Conv4's blocks with tanh and average pooling: no ReLU or max-pool switches, whose flips at
    float32 rounding would make the float32 error a lottery (docs/benchmarks.md, MAML vs peers).
    The first conv has no padding, so an offset of the images is an offset of its output (zero
    padding would turn it into edges)."""
    torch.manual_seed(seed)
    layers, channels = [], 1
    for padding in (0, 1, 1):
        layers += [nn.Conv2d(channels, 8, 3, padding=padding), BatchNorm(8), nn.Tanh(), nn.AvgPool2d(2)]
        channels = 8
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(8, 3))


def test_maml_float32_meta_gradient_is_as_accurate_as_torch_batch_norm_in_a_loop(one_thread):
    """Our float32 meta-gradient's max error vs float64, over the per-task create_graph loop's
    through ``nn.BatchNorm2d``: at most 2 in geometric mean over eight problems, vmapped and looped.

    The images carry an offset of 100, so the first layer's channel means are ~100× their spread
    and batch norm's precision counts (a one-pass variance makes the ratio ~12). On one problem
    the ratio ranges over ~0.3-3 by the luck of rounding, amplified by the inner loop; the mean of
    eight logs has a standard error of ~0.15, so 2 (log 0.69) is far from either side.
    """
    log_ratios = {"vmap": [], "loop": []}
    for seed in range(8):
        model = smooth_convnet(seed)
        tasks = [ImageTask(10 * seed + i, offset=100.0, dtype=torch.float32) for i in range(3)]
        tasks64 = [ImageTask(10 * seed + i, offset=100.0, dtype=torch.float64) for i in range(3)]
        exact = create_graph_loop(with_torch_batch_norm(model).double(), tasks64, 2, 0.4)

        def error(grads):
            return max(float((g.double() - e).abs().max()) for g, e in zip(grads, exact, strict=True))

        theirs = error(create_graph_loop(with_torch_batch_norm(model), tasks, 2, 0.4))
        for name, batched in (("vmap", True), ("loop", False)):
            log_ratios[name].append(math.log(error(maml_gradient(model, tasks, 2, 0.4, batched)) / theirs))
    for name, logs in log_ratios.items():
        assert math.exp(sum(logs) / len(logs)) <= 2, (name, [round(math.exp(v), 2) for v in logs])
