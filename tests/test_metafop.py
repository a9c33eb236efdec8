"""Meta-learned FOP: the pure FOP-over-SGD inner optimiser against warpgrad.FOP, and MetaFOP's
meta-gradients against finite differences of a hand-written inner loop (float64)."""

import pytest
import torch
from reference import W1, W2, FixedTask, finite_difference, reference_grad, reference_loss, tiny_model
from torch import nn

from warpgrad import FOP, MAML, MetaFOP, partition, sgd
from warpgrad.cli import main
from warpgrad.errors import UsageError
from warpgrad.methods.metafop import fop_sgd

pytestmark = pytest.mark.usefixtures("float64")

STEPS, LR, RHO = 3, 0.1, 0.5
DIMS = {W1: 2, W2: 3}  # tiny_model's preconditioned weights: (3, 2) and (1, 3); biases are not


def detached(params):
    return {k: v.detach().clone() for k, v in params.items()}


def fop_reference_loss(theta0, phi, m0, tasks, rho=RHO, fixed_grads=None, record=None):
    """Mean post-adaptation test loss with FOP-over-SGD written out by hand (first-order autograd
    only). ``fixed_grads[t][k]``: task t's k-th inner gradient, used instead of computing it;
    ``record[t]``: a list that receives task t's inner gradients."""
    total = 0.0
    for t, task in enumerate(tasks):
        theta, m = dict(theta0), dict(m0)
        prev = {k: torch.zeros(theta[k].numel() // d, d) for k, d in DIMS.items()}
        for step in range(STEPS):
            g = reference_grad(theta, phi, task.train) if fixed_grads is None else fixed_grads[t][step]
            if record is not None:
                record[t].append(g)
            for k in theta:
                if k not in DIMS:
                    theta[k] = theta[k] - LR * g[k]
                    continue
                G = g[k].reshape(-1, DIMS[k])
                H = -LR * prev[k].T @ G
                m[k] = m[k] - rho * m[k] @ (H + H.T)
                theta[k] = theta[k] - LR * (G @ m[k].T @ m[k]).reshape(theta[k].shape)
                prev[k] = G
        total = total + reference_loss(theta, phi, task.test)
    return total / len(tasks)


def perturbed_learner(**kwargs):
    learner = MetaFOP(tiny_model(), STEPS, inner_lr=LR, **({"hyper_lr": RHO} | kwargs))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():  # away from the identity and not symmetric, so a wrong transpose would show
        for m in learner.initial_preconditioners:
            m.add_(0.3 * torch.randn(m.shape, generator=g))
    return learner


def meta_gradient(learner, tasks):
    params = learner.named_meta_parameters()
    loss = learner.meta_loss(tasks, torch.Generator().manual_seed(0))
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


# ------------------------------------------------------------------ the inner optimiser


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)  # kernel (3, 2, 3, 3): G viewed as 6 × 9
        self.fc = nn.Linear(27, 2)  # weight (2, 27): G is 2 × 27

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


def test_fop_sgd_follows_the_trajectory_of_the_fop_optimiser():
    torch.manual_seed(0)
    net = ConvNet()
    x, y = torch.randn(8, 2, 5, 5), torch.randn(8, 2)
    theta = detached(dict(net.named_parameters()))
    m0 = {"conv.weight": torch.eye(9), "fc.weight": torch.eye(27)}
    inner = fop_sgd(m0, lr=0.2, hyper_lr=2.0)
    state = inner.init(theta)
    assert set(state["M"]) == set(m0)  # biases are stepped by plain SGD
    reference = FOP(net.parameters(), lr=0.2, hyper_lr=2.0, base="sgd", parameterization="factored", structure="layer")

    def loss_at(params):
        return ((torch.func.functional_call(net, params, (x,)) - y) ** 2).mean()

    for _ in range(4):
        reference.zero_grad()
        loss_at(dict(net.named_parameters())).backward()
        reference.step()
        grads = torch.func.grad(loss_at)(theta)
        theta, state = inner.update(grads, state, theta)
        for name, p in net.named_parameters():
            torch.testing.assert_close(theta[name], p.detach(), rtol=1e-10, atol=1e-12)
    for name, p in (("conv.weight", net.conv.weight), ("fc.weight", net.fc.weight)):
        torch.testing.assert_close(state["M"][name].T @ state["M"][name], reference.preconditioner(p))
        assert (state["M"][name] - m0[name]).abs().max() > 1e-3  # the hypergradient steps did move M


def test_fop_sgd_refuses_a_preconditioner_of_the_wrong_shape():
    params = {"w": torch.zeros(4, 3), "b": torch.zeros(4)}
    with pytest.raises(UsageError, match=r"m0\['w'\] has shape \(4, 4\), expected \(3, 3\)"):
        fop_sgd({"w": torch.eye(4)}, 0.1, 0.1).init(params)
    with pytest.raises(UsageError, match=r"lacks \['w'\] and has no preconditioned parameter for \['b'\]"):
        fop_sgd({"b": torch.eye(1)}, 0.1, 0.1).init(params)


# ------------------------------------------------------------------ MetaFOP's meta-gradient


@pytest.mark.parametrize("batched", [True, False])
def test_metafop_gradient_with_respect_to_the_initial_preconditioners_equals_finite_differences(batched):
    tasks = [FixedTask(0), FixedTask(1)]
    learner = perturbed_learner(batched=batched)
    assert learner.preconditioner_names == [W1, W2]
    theta0, phi = partition(learner.model)
    theta0, phi = detached(theta0), detached(phi)
    m0 = {k: m.detach().clone() for k, m in zip(learner.preconditioner_names, learner.initial_preconditioners)}
    expected = finite_difference(lambda m: fop_reference_loss(theta0, phi, m, tasks), m0)
    got = meta_gradient(learner, tasks)
    for k in m0:
        assert expected[k].abs().max() > 1e-4  # M₀ matters
        torch.testing.assert_close(got[f"M0:{k}"], expected[k], rtol=1e-6, atol=1e-8)


def test_metafop_gradient_with_respect_to_the_initialisation_equals_finite_differences():
    tasks = [FixedTask(0), FixedTask(1)]
    learner = perturbed_learner()
    theta0, phi = partition(learner.model)
    theta0, phi = detached(theta0), detached(phi)
    m0 = {k: m.detach().clone() for k, m in zip(learner.preconditioner_names, learner.initial_preconditioners)}
    expected = finite_difference(lambda th: fop_reference_loss(th, phi, m0, tasks), theta0)
    got = meta_gradient(learner, tasks)
    for k in theta0:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-8)


def test_first_order_metafop_holds_the_inner_gradients_constant_and_still_learns_the_preconditioners():
    tasks = [FixedTask(0), FixedTask(1)]
    learner = perturbed_learner(first_order=True)
    theta0, phi = partition(learner.model)
    theta0, phi = detached(theta0), detached(phi)
    m0 = {k: m.detach().clone() for k, m in zip(learner.preconditioner_names, learner.initial_preconditioners)}
    recorded = [[] for _ in tasks]  # the inner gradients of the unperturbed trajectory
    fop_reference_loss(theta0, phi, m0, tasks, record=recorded)
    expected = finite_difference(lambda m: fop_reference_loss(theta0, phi, m, tasks, fixed_grads=recorded), m0)
    got = meta_gradient(learner, tasks)
    for k in m0:
        assert expected[k].abs().max() > 1e-4  # first order still reaches M₀
        torch.testing.assert_close(got[f"M0:{k}"], expected[k], rtol=1e-6, atol=1e-8)


def test_with_no_hypergradient_steps_and_identity_preconditioners_metafop_is_maml():
    tasks = [FixedTask(0), FixedTask(1), FixedTask(2)]
    metafop = MetaFOP(tiny_model(), STEPS, inner_lr=LR, hyper_lr=0.0)
    maml = MAML(tiny_model(), sgd(LR), STEPS)
    got, expected = meta_gradient(metafop, tasks), meta_gradient(maml, tasks)
    assert set(expected) < set(got)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-10, atol=1e-12)


def test_the_initial_preconditioners_are_meta_learned_and_checkpointed():
    learner = perturbed_learner()
    before = [m.detach().clone() for m in learner.initial_preconditioners]
    learner.meta_step([FixedTask(0), FixedTask(1)], torch.Generator().manual_seed(0))
    assert all((m.detach() - b).abs().max() > 0 for m, b in zip(learner.initial_preconditioners, before))
    extra = learner.state_dict()["extra"]
    assert sorted(extra) == ["M0/layers/0/weight", "M0/layers/3/weight"]
    torch.testing.assert_close(extra["M0/layers/0/weight"], learner.initial_preconditioners[0].detach())


# ------------------------------------------------------------------ bad values


@pytest.mark.parametrize(
    "option, value, shown",
    [
        ("hyper_lr", -0.1, "hyper_lr=-0.1"),
        ("hyper_lr", float("nan"), "hyper_lr=nan"),
        ("inner_lr", 0.0, "inner_lr=0.0"),
    ],
)
def test_bad_values_are_refused_in_one_line_naming_them(option, value, shown):
    with pytest.raises(UsageError) as refused:
        MetaFOP(tiny_model(), STEPS, **{option: value})
    assert shown in str(refused.value) and "\n" not in str(refused.value)


def test_the_command_line_refuses_a_negative_hyper_lr(capsys):
    code = main(["run", "sine", "--profile", "smoke", "--method", "metafop", "--set=metafop.hyper_lr=-1"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "metafop.hyper_lr" in err[0] and "-1" in err[0], err
