"""Continual WarpGrad (Algorithm 3): meta-gradient against finite differences of a hand-written objective."""

from dataclasses import dataclass

import pytest
import torch
from reference import batch, finite_difference, reference_grad, reference_loss, sgd_step, tiny_model
from torch import Tensor

from warpgrad import MLP, partition, sgd
from warpgrad.methods.continual.warpgrad import ContinualWarpGrad

pytestmark = pytest.mark.usefixtures("float64")


@dataclass
class Part:
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


def sequence():
    parts = []
    for i in range(3):
        (x, y), (tx, ty) = batch(10 + i, n=5), batch(20 + i, n=4)
        parts.append(Part(x + 2 * i, y, tx + 2 * i, ty))  # inputs of each part in their own region
    return parts


@pytest.mark.parametrize("objective", ["exact", "first_order", "approx"])
def test_meta_gradient_averages_the_look_ahead_loss_on_current_and_previous_parts(objective):
    steps, lr = 2, 0.1
    parts = sequence()
    learner = ContinualWarpGrad(tiny_model(), sgd(lr), steps, objective=objective)
    theta0, phi0 = partition(learner.model)
    phi0 = {k: v.detach().clone() for k, v in phi0.items()}
    # the trajectory (at phi0) and, for each point, the part it trains on
    theta = {k: v.detach().clone() for k, v in theta0.items()}
    points = []
    for t, part in enumerate(parts):
        for _ in range(steps):
            points.append((theta, t))
            theta = sgd_step(theta, reference_grad(theta, phi0, (part.train_x, part.train_y)), {}, lr)

    def objective_fn(phi):
        total = 0.0
        for theta_p, t in points:
            current = (parts[t].train_x, parts[t].train_y)
            if objective == "approx":
                stepped = theta_p
            else:
                grad_phi = phi if objective == "exact" else phi0
                stepped = sgd_step(theta_p, reference_grad(theta_p, grad_phi, current), {}, lr)
            seen = (torch.cat([p.train_x for p in parts[: t + 1]]), torch.cat([p.train_y for p in parts[: t + 1]]))
            total = total + reference_loss(stepped, phi, seen)
        return total / len(points)

    expected = finite_difference(objective_fn, phi0)
    got = dict(zip(phi0, learner.meta_gradient([parts], torch.Generator())))
    for k in phi0:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-8)


def test_loss_matrix_rows_are_test_losses_after_each_part():
    steps, lr = 3, 0.1
    parts = sequence()
    learner = ContinualWarpGrad(tiny_model(), sgd(lr), steps)
    theta0, phi = partition(learner.model)
    phi = {k: v.detach() for k, v in phi.items()}
    theta = {k: v.detach().clone() for k, v in theta0.items()}
    expected = torch.zeros(3, 3)
    for i, part in enumerate(parts):
        for _ in range(steps):
            theta = sgd_step(theta, reference_grad(theta, phi, (part.train_x, part.train_y)), {}, lr)
        for j, other in enumerate(parts):
            expected[i, j] = reference_loss(theta, phi, (other.test_x, other.test_y))
    torch.testing.assert_close(learner.loss_matrix(parts, torch.Generator()), expected)


def test_needs_warp_layers_and_a_known_objective():
    with pytest.raises(ValueError, match="Warp layer"):
        ContinualWarpGrad(MLP(2, (3,), 1), sgd(0.1), 1)
    with pytest.raises(ValueError, match="objective 'second'"):
        ContinualWarpGrad(tiny_model(), sgd(0.1), 1, objective="second")


@pytest.mark.parametrize("batched", [True, False])
def test_sequences_in_lockstep_draw_and_compute_what_training_them_one_after_another_does(batched):
    # Minibatches of 3 of each part's 5 points: the draws must come in the sequential order.
    sequences = [sequence(), [Part(p.train_x + 0.5, p.train_y, p.test_x, p.test_y) for p in sequence()]]
    learner = ContinualWarpGrad(tiny_model(), sgd(0.1), 2, batch_size=3, batched=batched)
    _, phi = partition(learner.model)
    generator = torch.Generator().manual_seed(4)
    expected = [torch.zeros_like(p) for p in phi.values()]
    one_by_one = [learner.train_sequence(s, generator, meta_gradient=expected) for s in sequences]
    got = [torch.zeros_like(p) for p in phi.values()]
    theta, loss_sum, points = learner.train_sequences(sequences, torch.Generator().manual_seed(4), meta_gradient=got)
    assert points == sum(p for _, _, p in one_by_one) == 2 * 3 * 2
    assert loss_sum == pytest.approx(sum(loss for _, loss, _ in one_by_one), rel=1e-10)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    for i, (theta_i, _, _) in enumerate(one_by_one):
        for name, value in theta_i.items():
            torch.testing.assert_close(theta[name][i], value, rtol=1e-10, atol=1e-12)
    assert not torch.equal(theta[next(iter(theta))][0], theta[next(iter(theta))][1])
