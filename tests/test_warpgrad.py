"""WarpGrad's meta-gradients against independent computations (float64).

The reference model is written out by hand (no nn.Module, no warpgrad code), so every
gradient warpgrad computes is compared with something it did not compute itself: central
finite differences of the objective, a hand-written Leap formula, and a per-task MAML loop with
``create_graph=True``.
"""

import copy

import pytest
import torch
from reference import (
    WW,
    FixedTask,
    adam_step,
    batch,
    finite_difference,
    momentum_step,
    point,
    reference_grad,
    reference_loss,
    sgd_step,
    tiny_model,
)
from torch.nn import functional as F

from warpgrad import MLP, adam, momentum, partition, sgd
from warpgrad.core.replay import PointBuffer, last_writers
from warpgrad.methods.warpgrad import WarpGrad, warp_objective

pytestmark = pytest.mark.usefixtures("float64")


INNER = {
    "sgd": (lambda: sgd(0.1), sgd_step, lambda th: {}),
    "adam": (
        lambda: adam(0.05, eps_root=0.0),
        adam_step,
        lambda th: {  # a point in the middle of a trajectory: non-zero moments
            "m": {k: 0.1 * torch.ones_like(v) for k, v in th.items()},
            "v": {k: 0.02 * torch.ones_like(v) for k, v in th.items()},
            "t": torch.tensor(3.0),
        },
    ),
    "momentum": (
        lambda: momentum(0.1, 0.9),
        momentum_step,
        lambda th: {"buf": {k: 0.05 * torch.ones_like(v) for k, v in th.items()}},
    ),
}


def autograd_objective_grad(model, objective, optimizer, theta, state, inner, meta):
    _, phi = partition(model)
    loss = warp_objective(model, F.mse_loss, optimizer, theta, state, phi, inner, meta, objective)
    return dict(zip(phi, torch.autograd.grad(loss, list(phi.values()))))


@pytest.mark.parametrize("inner", ["sgd", "adam", "momentum"])
def test_exact_objective_equals_finite_differences_of_the_one_step_look_ahead(inner):
    make_opt, step, make_state = INNER[inner]
    model = tiny_model()
    theta = point(model)
    state = make_state(theta)
    b1, b2 = batch(1), batch(2)

    def objective(phi):
        return reference_loss(step(theta, reference_grad(theta, phi, b1), state), phi, b2)

    _, phi = partition(model)
    expected = finite_difference(objective, phi)
    got = autograd_objective_grad(model, "exact", make_opt(), theta, state, b1, b2)
    for k in phi:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_first_order_objective_cuts_the_inner_gradients_dependence_on_phi(inner):
    make_opt, step, make_state = INNER[inner]
    model = tiny_model()
    theta = point(model)
    state = make_state(theta)
    b1, b2 = batch(1), batch(2)
    _, phi0 = partition(model)
    stepped = step(theta, reference_grad(theta, phi0, b1), state)  # computed once, at phi0

    expected = finite_difference(lambda phi: reference_loss(stepped, phi, b2), phi0)
    got = autograd_objective_grad(model, "first_order", make_opt(), theta, state, b1, b2)
    for k in phi0:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-8)
    exact = autograd_objective_grad(model, "exact", make_opt(), theta, state, b1, b2)
    assert (exact[WW] - got[WW]).abs().max() > 1e-4  # the cut term is not negligible here


def test_approx_objective_is_the_gradient_at_the_visited_point():
    model = tiny_model()
    theta = point(model)
    b2 = batch(2)
    _, phi0 = partition(model)
    expected = finite_difference(lambda phi: reference_loss(theta, phi, b2), phi0)
    got = autograd_objective_grad(model, "approx", sgd(0.1), theta, {}, batch(1), b2)
    for k in phi0:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-8)


def make_learner(**kwargs):
    options = {"objective": "exact", "init": "none", "meta_loss_data": "test"}
    options.update(kwargs)
    return WarpGrad(tiny_model(), options.pop("inner", sgd(0.1)), options.pop("inner_steps", 1), **options)


def test_learner_meta_gradient_over_a_meta_batch_equals_finite_differences():
    tasks = [FixedTask(0), FixedTask(1)]
    learner = make_learner()
    theta0, phi0 = partition(learner.model)
    theta0 = {k: v.detach() for k, v in theta0.items()}

    def objective(phi):  # mean over the two tasks' first trajectory points (theta0)
        losses = [
            reference_loss(sgd_step(theta0, reference_grad(theta0, phi, t.train), {}), phi, t.test) for t in tasks
        ]
        return sum(losses) / len(losses)

    expected = finite_difference(objective, phi0)
    got = learner.meta_gradients(tasks, torch.Generator().manual_seed(0))["warp"]
    for k in phi0:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("objective", ["exact", "first_order", "approx"])
def test_vmap_and_loop_give_the_same_meta_gradient(objective):
    tasks = [FixedTask(i) for i in range(3)]
    grads = []
    for batched in (True, False):
        learner = make_learner(objective=objective, inner=adam(0.05), inner_steps=4, batched=batched)
        grads.append(learner.meta_gradients(tasks, torch.Generator().manual_seed(0))["warp"])
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-10, atol=1e-12)


def test_warp_parameters_are_frozen_and_task_parameters_restart_from_theta0():
    learner = make_learner()
    theta0, phi = partition(learner.model)
    before = {k: v.detach().clone() for k, v in {**theta0, **phi}.items()}
    gen = torch.Generator().manual_seed(0)
    first = learner.adapt(FixedTask(0), gen, steps=5)
    learner.adapt(FixedTask(1), gen, steps=5)
    again = learner.adapt(FixedTask(0), gen, steps=5)
    for k in phi:
        assert torch.equal(first[k], before[k])  # adapted dict carries phi unchanged
    for k in theta0:
        assert not torch.equal(first[k], before[k])  # task parameters did move
        assert torch.equal(first[k], again[k])  # and restart from theta0 for each task
    for k, v in {**theta0, **phi}.items():
        assert torch.equal(v, before[k])  # the model itself is untouched by adaptation


def test_every_task_trajectory_in_a_meta_step_starts_at_theta0(monkeypatch):
    learner = make_learner(inner_steps=3, buffer_size=100)
    theta0, _ = partition(learner.model)
    start = {k: v.detach().clone() for k, v in theta0.items()}
    first_points = {}
    real_store = PointBuffer.store

    def spy(self, slots, points):
        for j, task in enumerate(points.task.tolist()):
            first_points.setdefault(task, {n: v[j].clone() for n, v in points.theta.items()})
        real_store(self, slots, points)

    monkeypatch.setattr(PointBuffer, "store", spy)
    learner.meta_step([FixedTask(0), FixedTask(1), FixedTask(2)], torch.Generator().manual_seed(0))
    assert sorted(first_points) == [0, 1, 2]
    for p in first_points.values():
        for k, v in start.items():
            assert torch.equal(p[k], v)


@pytest.mark.parametrize(
    "options",
    [
        {"leap_norm": True, "leap_loss_term": True, "leap_stabilizer": True},
        {"leap_norm": True, "leap_loss_term": False, "leap_stabilizer": False},
        {"leap_norm": False, "leap_loss_term": True, "leap_stabilizer": False},
    ],
)
def test_warp_leap_initialisation_gradient_equals_the_leap_formula(options):
    steps, lr = 4, 0.3
    tasks = [FixedTask(0), FixedTask(1)]
    learner = make_learner(init="leap", inner=sgd(lr), inner_steps=steps, **options)
    theta0, phi = partition(learner.model)
    phi = {k: v.detach() for k, v in phi.items()}
    names = list(theta0)

    def flat(params):
        return torch.cat([params[k].reshape(-1) for k in names])

    expected = torch.zeros(sum(v.numel() for v in theta0.values()))
    for task in tasks:
        theta = {k: v.detach().clone() for k, v in theta0.items()}
        points, losses, grads = [flat(theta)], [], []
        for _ in range(steps):
            g = reference_grad(theta, phi, task.train)
            losses.append(reference_loss(theta, phi, task.train).detach())
            grads.append(flat(g))
            theta = sgd_step(theta, g, {}, lr)
            points.append(flat(theta))
        losses.append(reference_loss(theta, phi, task.train).detach())
        for k in range(steps):
            d_loss = losses[k + 1] - losses[k] if options["leap_loss_term"] else torch.tensor(0.0)
            if options["leap_stabilizer"]:
                d_loss = -d_loss.abs()
            increment = (points[k] - points[k + 1]) - d_loss * grads[k]
            if options["leap_norm"]:
                increment = increment / torch.sqrt(((points[k + 1] - points[k]) ** 2).sum() + d_loss**2)
            expected += increment / len(tasks)

    got = learner.meta_gradients(tasks, torch.Generator().manual_seed(0))["init"]
    torch.testing.assert_close(flat(got), expected, rtol=1e-9, atol=1e-12)


def test_warp_maml_initialisation_gradient_equals_a_per_task_create_graph_loop():
    steps, lr = 3, 0.1
    tasks = [FixedTask(0), FixedTask(1), FixedTask(2)]
    learner = make_learner(init="maml", inner=sgd(lr), inner_steps=steps)
    theta0, phi = partition(learner.model)
    phi = {k: v.detach() for k, v in phi.items()}
    leaves = {k: v.detach().clone().requires_grad_() for k, v in theta0.items()}
    expected = {k: torch.zeros_like(v) for k, v in leaves.items()}
    first_order = {k: torch.zeros_like(v) for k, v in leaves.items()}
    for task in tasks:
        theta = dict(leaves)
        for _ in range(steps):
            g = torch.autograd.grad(reference_loss(theta, phi, task.train), list(theta.values()), create_graph=True)
            theta = {k: theta[k] - lr * gk for k, gk in zip(theta, g)}
        test_loss = reference_loss(theta, phi, task.test)
        for k, g in zip(leaves, torch.autograd.grad(test_loss, list(leaves.values()), retain_graph=True)):
            expected[k] += g / len(tasks)
        for k, g in zip(theta, torch.autograd.grad(test_loss, list(theta.values()))):
            first_order[k] += g / len(tasks)

    got = learner.meta_gradients(tasks, torch.Generator().manual_seed(0))["init"]
    for k in leaves:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-9, atol=1e-12)
    assert max((expected[k] - first_order[k]).abs().max() for k in leaves) > 1e-4  # second order matters


@pytest.mark.parametrize("algorithm", ["offline", "online"])
def test_offline_and_online_compute_the_same_gradient_when_the_buffer_holds_every_point(algorithm):
    # With a buffer large enough for every point and fixed batches, Algorithm 2's single warp
    # update averages the same terms that Algorithm 1 accumulates step by step.
    tasks = [FixedTask(0), FixedTask(1)]
    reference = make_learner(algorithm="offline", inner_steps=3, buffer_size=100)
    learner = make_learner(algorithm=algorithm, inner_steps=3, buffer_size=100)
    expected = reference.meta_gradients(tasks, torch.Generator().manual_seed(0))["warp"]
    got = learner.meta_gradients(tasks, torch.Generator().manual_seed(0))["warp"]
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-10, atol=1e-12)


def test_meta_step_moves_phi_and_theta0_along_the_negative_meta_gradients():
    tasks = [FixedTask(0), FixedTask(1)]
    learner = make_learner(init="maml", inner_steps=2, warp_lr=0.5, init_lr=0.25)
    theta0, phi = partition(learner.model)
    before = {k: v.detach().clone() for k, v in {**theta0, **phi}.items()}
    grads = copy.deepcopy(learner).meta_gradients(tasks, torch.Generator().manual_seed(0))
    learner.meta_step(tasks, torch.Generator().manual_seed(0))
    for k in phi:
        torch.testing.assert_close(phi[k].detach(), before[k] - 0.5 * grads["warp"][k])
    for k in theta0:
        torch.testing.assert_close(theta0[k].detach(), before[k] - 0.25 * grads["init"][k])


def test_reservoir_buffer_is_bounded_and_keeps_each_item_with_equal_probability():
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(50)
    for _ in range(2000):
        buffer = PointBuffer(10)
        kept = last_writers(buffer.plan(20, gen) + buffer.plan(30, gen))  # planned in two parts
        assert len(buffer) == 10 and sorted(kept.values()) == list(range(10))
        for i in kept:
            counts[i] += 1
    frequency = counts / 2000
    assert (frequency - 0.2).abs().max() < 0.04  # each kept with probability 10/50 (±4.5 sd)


def test_buffer_memory_does_not_grow_with_the_number_of_inner_steps(monkeypatch):
    sizes = []
    real = PointBuffer.sample

    def spy(self, n, generator):
        sizes.append(len(self))
        return real(self, n, generator)

    monkeypatch.setattr(PointBuffer, "sample", spy)
    for steps in (5, 40):
        make_learner(inner_steps=steps, buffer_size=16).meta_step([FixedTask(0), FixedTask(1)], torch.Generator())
    assert sizes == [10, 16]


def test_bad_options_name_the_value_and_the_allowed_ones():
    with pytest.raises(ValueError, match=r"objective 'second'.*exact, first_order, approx"):
        make_learner(objective="second")
    with pytest.raises(ValueError, match=r"init 'reptile'.*none, leap, maml"):
        make_learner(init="reptile")
    with pytest.raises(ValueError, match="Warp layer"):
        WarpGrad(MLP(1, (3,), 1), sgd(0.1), 1)


def test_trajectory_point_state_is_what_the_inner_optimiser_had_at_that_step():
    # For Adam the look-ahead must continue from the stored moments, not from a fresh state.
    tasks = [FixedTask(0)]
    learner = make_learner(inner=adam(0.05), inner_steps=3, buffer_size=100, warp_batch=100)
    recorded = []
    real_store = PointBuffer.store

    def spy(self, slots, points):
        recorded.extend(points.state["t"].tolist())
        real_store(self, slots, points)

    PointBuffer.store = spy
    try:
        learner.meta_step(tasks, torch.Generator().manual_seed(0))
    finally:
        PointBuffer.store = real_store
    assert recorded == [0.0, 1.0, 2.0]
