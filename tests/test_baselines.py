"""The baselines' meta-gradients against finite differences, create_graph loops and closed forms."""

import pytest
import torch
from reference import FixedTask, finite_difference, reference_grad, reference_loss, sgd_step, tiny_model
from torch import nn

from warpgrad import MAML, FineTune, Leap, MetaSGD, Reptile, TNets, partition, sgd
from warpgrad.errors import UsageError

pytestmark = pytest.mark.usefixtures("float64")

STEPS, LR = 3, 0.1


def detached(params):
    return {k: v.detach().clone() for k, v in params.items()}


def maml_reference_loss(theta0, phi, tasks, lrs=None):
    """Mean post-adaptation test loss, inner loop by hand (first-order autograd only)."""
    total = 0.0
    for task in tasks:
        theta = dict(theta0)
        for _ in range(STEPS):
            g = reference_grad(theta, phi, task.train)
            theta = {k: theta[k] - (LR if lrs is None else lrs[k]) * g[k] for k in theta}
        total = total + reference_loss(theta, phi, task.test)
    return total / len(tasks)


def meta_gradient(learner, tasks):
    params = learner.meta_parameters()
    loss = learner.meta_loss(tasks, torch.Generator().manual_seed(0))
    return torch.autograd.grad(loss, params)


@pytest.mark.parametrize("batched", [True, False])
def test_maml_meta_gradient_equals_finite_differences(batched):
    tasks = [FixedTask(0), FixedTask(1)]
    learner = MAML(tiny_model(), sgd(LR), STEPS, batched=batched)
    theta0, phi = partition(learner.model)
    phi = detached(phi)
    expected = finite_difference(lambda th: maml_reference_loss(th, phi, tasks), detached(theta0), eps=1e-6)
    got = dict(zip(theta0, meta_gradient(learner, tasks)))
    for k in theta0:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("first_order", [False, True])
def test_a_shorter_meta_training_horizon_differentiates_horizon_steps_and_adapts_with_all(first_order):
    tasks = [FixedTask(0), FixedTask(1)]
    learner = MAML(tiny_model(), sgd(LR), STEPS + 4, horizon=STEPS, first_order=first_order)
    reference = MAML(tiny_model(), sgd(LR), STEPS, first_order=first_order)
    reference.model.load_state_dict(learner.model.state_dict())
    theta0, phi = partition(learner.model)
    phi = detached(phi)
    got = dict(zip(theta0, meta_gradient(learner, tasks)))
    if first_order:  # the test gradient after STEPS steps, as the STEPS-step learner has it
        expected = dict(zip(theta0, meta_gradient(reference, tasks)))
    else:
        expected = finite_difference(lambda th: maml_reference_loss(th, phi, tasks), detached(theta0), eps=1e-6)
    for k in theta0:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-8)
    adapted = learner.adapt(tasks[0], torch.Generator().manual_seed(0))
    theta = detached(theta0)
    for _ in range(STEPS + 4):
        g = reference_grad(theta, phi, tasks[0].train)
        theta = {k: theta[k] - LR * g[k] for k in theta}
    for k in theta:
        torch.testing.assert_close(adapted[k], theta[k], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("horizon", [0, -1, 2.5, True])
def test_a_bad_horizon_is_refused_with_its_value(horizon):
    with pytest.raises(UsageError, match=f"horizon must be an integer >= 1 or None, got {horizon!r}"):
        MAML(tiny_model(), sgd(LR), STEPS, horizon=horizon)


def test_maml_meta_gradient_equals_a_per_task_create_graph_loop_and_vmap_equals_loop():
    tasks = [FixedTask(i) for i in range(4)]
    learner = MAML(tiny_model(), sgd(LR), STEPS)
    theta0, phi = partition(learner.model)
    phi = detached(phi)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in theta0.items()}
    expected = {k: torch.zeros_like(v) for k, v in leaves.items()}
    for task in tasks:
        theta = dict(leaves)
        for _ in range(STEPS):
            g = torch.autograd.grad(reference_loss(theta, phi, task.train), list(theta.values()), create_graph=True)
            theta = {k: theta[k] - LR * gk for k, gk in zip(theta, g)}
        for k, g in zip(leaves, torch.autograd.grad(reference_loss(theta, phi, task.test), list(leaves.values()))):
            expected[k] += g / len(tasks)
    batched = dict(zip(theta0, meta_gradient(learner, tasks)))
    learner.batched = False
    looped = dict(zip(theta0, meta_gradient(learner, tasks)))
    for k in theta0:
        torch.testing.assert_close(batched[k], expected[k], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(looped[k], batched[k], rtol=1e-10, atol=1e-12)


def test_fomaml_is_the_test_gradient_at_the_adapted_parameters():
    tasks = [FixedTask(0), FixedTask(1)]
    learner = MAML(tiny_model(), sgd(LR), STEPS, first_order=True)
    theta0, phi = partition(learner.model)
    phi = detached(phi)
    expected = {k: torch.zeros_like(v) for k, v in theta0.items()}
    for task in tasks:
        theta = detached(theta0)
        for _ in range(STEPS):
            theta = sgd_step(theta, reference_grad(theta, phi, task.train), {}, LR)
        for k, g in reference_grad(theta, phi, task.test).items():
            expected[k] += g / len(tasks)
    got = dict(zip(theta0, meta_gradient(learner, tasks)))
    for k in theta0:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-9, atol=1e-12)


def test_metasgd_gradient_with_respect_to_its_learning_rates_equals_finite_differences():
    tasks = [FixedTask(0), FixedTask(1)]
    learner = MetaSGD(tiny_model(), STEPS, inner_lr=LR)
    theta0, phi = partition(learner.model)
    phi = detached(phi)
    with torch.no_grad():  # distinct rates per element, so a wrong broadcast would show
        for lr in learner.learning_rates:
            lr.mul_(1 + 0.5 * torch.rand(lr.shape, generator=torch.Generator().manual_seed(3)))
    rates = {k: lr.detach().clone() for k, lr in zip(learner.lr_names, learner.learning_rates)}
    expected = finite_difference(lambda r: maml_reference_loss(detached(theta0), phi, tasks, r), rates)
    grads = meta_gradient(learner, tasks)
    got = dict(zip(learner.lr_names, grads[len(theta0) :]))
    for k in rates:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-8)


def test_tnets_learns_the_warp_layers_through_the_inner_loop():
    tasks = [FixedTask(0), FixedTask(1)]
    learner = TNets(tiny_model(), sgd(LR), STEPS)
    theta0, phi = partition(learner.model)
    expected = finite_difference(lambda p: maml_reference_loss(detached(theta0), p, tasks), detached(phi))
    grads = meta_gradient(learner, tasks)
    got = dict(zip(phi, grads[len(theta0) :]))
    for k in phi:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="Warp"):
        TNets(nn.Linear(1, 1), sgd(LR), 1)


# ------------------------------------------------------------------ closed forms on a quadratic


class Point(nn.Module):
    """A 'model' whose output is its parameter vector: L(θ) = ½‖θ − c‖² has closed-form paths."""

    def __init__(self, start):
        super().__init__()
        self.w = nn.Parameter(start.clone())

    def forward(self, x):
        return self.w.expand(x.shape[0], -1)


class QuadraticTask:
    metric_name = "loss"
    lower_is_better = True

    def __init__(self, centre):
        self.centre = centre

    def train_batch(self, generator):
        return torch.zeros(1, 1), self.centre[None]

    def test_batch(self):
        return self.train_batch(None)

    def loss(self, prediction, target):
        return 0.5 * ((prediction - target) ** 2).sum()

    metric = loss


START = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
CENTRES = [torch.tensor(c, dtype=torch.float64) for c in ([0.0, 0.0, 0.0], [2.0, 1.0, -1.0], [-1.0, 3.0, 0.0])]


def test_reptile_update_matches_the_closed_form_on_a_quadratic():
    alpha, steps = 0.3, 5
    learner = Reptile(Point(START), sgd(alpha), steps, meta_optimizer="sgd", meta_lr=0.5)
    grad, _ = learner.meta_gradient([QuadraticTask(c) for c in CENTRES], torch.Generator())
    # θ_K − c = (1 − α)^K (θ₀ − c), so θ₀ − mean θ_K = (1 − (1 − α)^K)(θ₀ − mean c)
    expected = (1 - (1 - alpha) ** steps) * (START - torch.stack(CENTRES).mean(0))
    torch.testing.assert_close(grad["w"], expected, rtol=1e-12, atol=1e-12)
    learner.meta_step([QuadraticTask(c) for c in CENTRES], torch.Generator())
    torch.testing.assert_close(learner.model.w.detach(), START - 0.5 * expected)


@pytest.mark.parametrize("alpha", [0.3, 2.5], ids=["converging", "diverging"])
@pytest.mark.parametrize("stabilizer", [True, False])
def test_leap_gradient_matches_the_closed_form_on_a_quadratic(alpha, stabilizer):
    steps = 4
    learner = Leap(Point(START), sgd(alpha), steps, stabilizer=stabilizer)
    grad, _ = learner.meta_gradient([QuadraticTask(c) for c in CENTRES], torch.Generator())
    r = 1 - alpha
    expected = torch.zeros(3)
    for c in CENTRES:
        d = START - c  # θ_k − c = r^k d, ∇L(θ_k) = r^k d, L_k = ½ r^{2k} ‖d‖²
        for k in range(steps):
            d_loss = 0.5 * (d @ d) * r ** (2 * k) * (r**2 - 1)
            if stabilizer:
                d_loss = -abs(d_loss)
            length = torch.sqrt(alpha**2 * r ** (2 * k) * (d @ d) + d_loss**2)
            expected += r**k * d * (alpha - d_loss) / length / len(CENTRES)
    torch.testing.assert_close(grad["w"], expected, rtol=1e-10, atol=1e-12)


def test_finetune_takes_a_step_on_the_mean_training_loss_of_the_meta_batch():
    learner = FineTune(Point(START), sgd(0.1), 1, meta_optimizer="sgd", meta_lr=0.2)
    learner.meta_step([QuadraticTask(c) for c in CENTRES], torch.Generator())
    expected = START - 0.2 * (START - torch.stack(CENTRES).mean(0))
    torch.testing.assert_close(learner.model.w.detach(), expected)


# ------------------------------------------------------------------ batch-norm task learners


class ImageTask:
    """3-way classification on fixed random 16×16 images (support 6, query 9)."""

    metric_name = "accuracy"
    lower_is_better = False

    def __init__(self, seed):
        g = torch.Generator().manual_seed(seed)
        self.train = (torch.randn(6, 1, 16, 16, generator=g), torch.tensor([0, 1, 2, 0, 1, 2]))
        self.test = (torch.randn(9, 1, 16, 16, generator=g), torch.arange(9) % 3)

    def train_batch(self, generator):
        return self.train

    def test_batch(self):
        return self.test

    def loss(self, prediction, target):
        return nn.functional.cross_entropy(prediction, target)

    def metric(self, prediction, target):
        return (prediction.argmax(1) == target).double().mean()


def conv4(warp=None):
    from warpgrad import Conv4

    torch.manual_seed(0)
    return Conv4(1, 3, image_size=16, width=4, warp=warp).double()


def test_batchnorm_learners_give_the_same_meta_gradients_under_vmap_and_loop():
    from warpgrad import WarpGrad

    tasks = [ImageTask(i) for i in range(3)]
    warp = {"batchnorm": True, "activation": "relu"}
    maml = [
        dict(zip(partition(m.model)[0], meta_gradient(m, tasks)))
        for m in (MAML(conv4(), sgd(0.1), 2, batched=b) for b in (True, False))
    ]
    warpgrad = [
        WarpGrad(conv4(warp), sgd(0.1), 2, init="none", batched=b).meta_gradients(tasks, torch.Generator())
        for b in (True, False)
    ]
    for k in maml[0]:
        torch.testing.assert_close(maml[0][k], maml[1][k], rtol=1e-9, atol=1e-12)
    for k in warpgrad[0]["warp"]:
        torch.testing.assert_close(warpgrad[0]["warp"][k], warpgrad[1]["warp"][k], rtol=1e-9, atol=1e-12)
    assert any(g.abs().max() > 0 for g in warpgrad[0]["warp"].values())


def test_warpgrad_batchnorm_equals_torch_batchnorm_in_value_and_gradients():
    from warpgrad.layers import BatchNorm

    torch.manual_seed(0)
    ours, theirs = BatchNorm(4), nn.BatchNorm2d(4, track_running_stats=False)
    with torch.no_grad():
        for m in (ours, theirs):
            m.weight.copy_(torch.tensor([0.5, 1.0, 1.5, 2.0]))
            m.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    x = torch.randn(5, 4, 3, 3, requires_grad=True)
    outs = [m(x) for m in (ours, theirs)]
    torch.testing.assert_close(outs[0], outs[1])
    grads = [torch.autograd.grad((o**3).sum(), [x, m.weight]) for o, m in zip(outs, (ours, theirs))]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_models_with_torch_batchnorm_fall_back_to_the_loop_and_say_why():
    tasks = [ImageTask(i) for i in range(3)]
    model = conv4()
    model.features[1] = nn.BatchNorm2d(4, track_running_stats=False).double()
    with pytest.warns(UserWarning, match=r"features\.1.*functorch#534"):
        learner = MAML(model, sgd(0.1), 2, batched=True)
    assert learner.batched is False
    # the loop with torch's batch-norm gives what the vmapped warpgrad.layers.BatchNorm gives
    reference = MAML(conv4(), sgd(0.1), 2, batched=True)
    assert reference.batched is True
    for got, expected in zip(meta_gradient(learner, tasks), meta_gradient(reference, tasks)):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_batchnorm_with_running_statistics_is_refused_with_a_clear_message():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
    with pytest.raises(ValueError, match=r"'1'.*track_running_stats=False"):
        MAML(model, sgd(0.1), 1)
