"""EWC on continual sine's sequences: against a hand-written loop with the literal penalty."""

import pytest
import torch
from reference import reference_forward, reference_loss, tiny_model
from test_continual_warpgrad import sequence

from warpgrad import partition, sgd
from warpgrad.errors import UsageError
from warpgrad.methods.continual.ewc import ewc_penalty
from warpgrad.methods.continual.sequence_ewc import SequenceEWC, gaussian_fisher_diagonal
from warpgrad.methods.continual.warpgrad import SequentialBaseline

pytestmark = pytest.mark.usefixtures("float64")


def test_fisher_of_a_linear_regressor_is_its_squared_inputs():
    model = torch.nn.Linear(3, 1).double()
    x = torch.randn(7, 3, dtype=torch.float64)
    fisher = gaussian_fisher_diagonal(model, dict(model.named_parameters()), {}, x)
    torch.testing.assert_close(fisher["weight"], (x**2).mean(0, keepdim=True))
    torch.testing.assert_close(fisher["bias"], torch.ones(1, dtype=torch.float64))


def _hand_written(parts, lam, steps, lr, model):
    """θ after each part: SGD on the part's loss plus the literal EWC penalty of every earlier part,
    the Fisher from a per-example loop."""
    theta0, phi = partition(model)
    phi = {k: v.detach() for k, v in phi.items()}
    theta = {k: v.detach().clone() for k, v in theta0.items()}
    fishers, anchors, after = [], [], []
    for part in parts:
        for _ in range(steps):
            leaves = {k: v.clone().requires_grad_() for k, v in theta.items()}
            loss = reference_loss(leaves, phi, (part.train_x, part.train_y))
            for fisher, anchor in zip(fishers, anchors):
                loss = loss + ewc_penalty(leaves, fisher, anchor, lam)
            grads = torch.autograd.grad(loss, list(leaves.values()))
            theta = {k: theta[k] - lr * g for k, g in zip(theta, grads)}
        squares = {k: torch.zeros_like(v) for k, v in theta.items()}
        for x in part.train_x:
            leaves = {k: v.clone().requires_grad_() for k, v in theta.items()}
            grads = torch.autograd.grad(reference_forward(leaves, phi, x[None]).sum(), list(leaves.values()))
            for k, g in zip(leaves, grads):
                squares[k] += g**2 / len(part.train_x)
        fishers.append(squares)
        anchors.append({k: v.clone() for k, v in theta.items()})
        after.append(theta)
    return after


def test_steps_descend_the_task_loss_plus_every_earlier_experiences_penalty():
    parts, steps, lr, lam = sequence(), 3, 0.1, 5.0
    learner = SequenceEWC(tiny_model(), sgd(lr), steps, lam=lam)
    seen = []
    learner.train_sequence(parts, torch.Generator(), on_experience=lambda t, theta: seen.append(theta))
    expected = _hand_written(parts, lam, steps, lr, tiny_model())
    assert len(seen) == 3
    for ours, theirs in zip(seen, expected):
        for name in theirs:
            torch.testing.assert_close(ours[name], theirs[name])


def test_without_penalty_it_is_the_baseline_and_a_large_penalty_forgets_less():
    parts, generator = sequence(), torch.Generator()
    baseline = SequentialBaseline(tiny_model(), sgd(0.1), 3).loss_matrix(parts, generator)
    torch.testing.assert_close(SequenceEWC(tiny_model(), sgd(0.1), 3, lam=0.0).loss_matrix(parts, generator), baseline)

    def forgetting(matrix):
        return float((matrix[-1, :-1] - matrix.diagonal()[:-1]).mean())

    long_baseline = SequentialBaseline(tiny_model(), sgd(0.05), 40).loss_matrix(parts, generator)
    anchored = SequenceEWC(tiny_model(), sgd(0.05), 40, lam=1.0).loss_matrix(parts, generator)
    assert forgetting(anchored) < 0.5 * forgetting(long_baseline)  # 0.08 against 0.32


def test_refuses_a_negative_penalty_and_meta_gradients():
    with pytest.raises(UsageError, match="lam"):
        SequenceEWC(tiny_model(), sgd(0.1), 3, lam=-1.0)
    with pytest.raises(UsageError, match="meta-gradient"):
        SequenceEWC(tiny_model(), sgd(0.1), 3).meta_gradient([sequence()], torch.Generator())
