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
