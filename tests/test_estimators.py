"""Zero-order estimators against independent computations: closed-form gradients of smoothed
objectives, autograd through full unrolls, hand-computed ranks."""

import math
import sys

import numpy as np
import pytest
import torch

from warpgrad.errors import UsageError
from warpgrad.estimators import CMAES, ES, PES, centered_ranks, z_scores

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def flat(grad):
    return torch.cat([g.reshape(-1) for g in grad.values()])


def mean_and_se(samples):
    """Mean and standard error per component of independent estimates (rows)."""
    samples = torch.stack(samples)
    return samples.mean(0), samples.std(0) / math.sqrt(len(samples))


def cosine(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def quadratic():
    """f(θ) = ½θᵀAθ + bᵀθ over θ = {"w": (3,), "v": (2,)} flattened; ∇f = Aθ + b."""
    g = gen(0)
    m = torch.randn(5, 5, generator=g, dtype=F64)
    a = m @ m.T / 5 + torch.eye(5, dtype=F64)
    b = torch.randn(5, generator=g, dtype=F64)
    params = {"w": torch.tensor([0.5, -1.0, 2.0], dtype=F64), "v": torch.tensor([1.5, -0.3], dtype=F64)}

    def f(p):
        x = torch.cat([p["w"], p["v"]])
        return 0.5 * x @ a @ x + b @ x

    return f, params, a @ torch.cat([params["w"], params["v"]]) + b


def test_es_antithetic_is_unbiased_on_a_quadratic_vectorized_or_not():
    f, params, true_grad = quadratic()
    es = ES(sigma=0.3, population=4)
    samples = []
    for seed in range(400):
        est = es.estimate(f, params, gen(seed), vectorized=True)
        assert est.evaluations == 8 and est.values.shape == (8,) and est.vectorized
        if seed < 5:
            loop = es.estimate(f, params, gen(seed), vectorized=False)
            assert not loop.vectorized
            torch.testing.assert_close(flat(loop.grad), flat(est.grad))
            torch.testing.assert_close(loop.values, est.values)
        samples.append(flat(est.grad))
    mean, se = mean_and_se(samples)
    assert torch.all((mean - true_grad).abs() < 4 * se)
    assert torch.any((mean - 2 * true_grad).abs() > 4 * se)  # a factor-2 error in the scaling would be caught


def test_es_estimates_the_gradient_of_the_smoothed_objective_not_the_raw_one():
    theta = torch.tensor([0.8, -1.2, 2.0, 1.5], dtype=F64)
    sigma = 1.0
    es = ES(sigma=sigma, population=16)
    samples = [flat(es.estimate(lambda p: torch.cos(p["x"]).sum(), {"x": theta}, gen(s)).grad) for s in range(300)]
    mean, se = mean_and_se(samples)
    smoothed = -math.exp(-(sigma**2) / 2) * torch.sin(theta)  # E cos(θ + σε) = e^{−σ²/2} cos θ
    assert torch.all((mean - smoothed).abs() < 4 * se)
    assert torch.all((mean + torch.sin(theta)).abs() > 4 * se)


def test_common_random_numbers_same_seed_same_perturbations_for_any_parameters():
    c = {"w": torch.tensor([1.0, -2.0, 0.5], dtype=F64), "v": torch.tensor([3.0], dtype=F64)}

    def linear(p):
        return sum((c[k] * p[k]).sum() for k in c)

    es = ES(sigma=0.2, population=6)
    theta1 = {"w": torch.zeros(3, dtype=F64), "v": torch.ones(1, dtype=F64)}
    theta2 = {"w": torch.tensor([4.0, 1.0, -2.0], dtype=F64), "v": torch.tensor([-7.0], dtype=F64)}
    a, b = es.estimate(linear, theta1, gen(11)), es.estimate(linear, theta2, gen(11))
    # f(θ ± σε) − f(θ) = ±σcᵀε depends on ε only: equal perturbations at different θ
    torch.testing.assert_close(a.values - linear(theta1), b.values - linear(theta2))
    again = es.estimate(linear, theta1, gen(11))
    assert torch.equal(again.values, a.values) and torch.equal(flat(again.grad), flat(a.grad))
    other = es.estimate(linear, theta1, gen(12))
    assert not torch.equal(other.values, a.values)


def test_vmap_fallback_gives_the_loop_numbers():
    def not_vmappable(p):  # .item() cannot run under vmap
        return torch.tensor(float(p["x"].sum()) ** 2, dtype=F64)

    es = ES(sigma=0.1, population=5)
    params = {"x": torch.tensor([0.3, -0.7], dtype=F64)}
    auto = es.estimate(not_vmappable, params, gen(2))
    loop = es.estimate(not_vmappable, params, gen(2), vectorized=False)
    assert not auto.vectorized
    assert torch.equal(flat(auto.grad), flat(loop.grad))
    with pytest.raises(RuntimeError):
        es.estimate(not_vmappable, params, gen(2), vectorized=True)


def test_centered_ranks_and_z_scores_by_hand():
    values = torch.tensor([3.0, 1.0, 2.0, 2.0, 10.0])
    # ranks 3, 0, 1.5 (tie), 1.5 (tie), 4 over n − 1 = 4, minus 0.5
    torch.testing.assert_close(centered_ranks(values), torch.tensor([0.25, -0.5, -0.125, -0.125, 0.5]))
    torch.testing.assert_close(centered_ranks(-values), -centered_ranks(values))
    s = math.sqrt(2 / 3)
    torch.testing.assert_close(z_scores(torch.tensor([1.0, 2.0, 3.0])), torch.tensor([-1 / s, 0.0, 1 / s]))
    assert torch.equal(z_scores(torch.full((4,), 7.0)), torch.zeros(4))


@pytest.mark.parametrize("shaping", ["centered-ranks", "z-score"])
def test_shaped_estimates_point_along_the_gradient(shaping):
    f, params, true_grad = quadratic()
    est = ES(sigma=0.1, population=2000, fitness_shaping=shaping).estimate(f, params, gen(5))
    assert cosine(flat(est.grad), true_grad) > 0.9


@pytest.mark.parametrize("shaping", ["none", "centered-ranks", "z-score"])
def test_maximize_returns_the_gradient_of_the_negated_objective(shaping):
    f, params, true_grad = quadratic()
    down = ES(sigma=0.1, population=500, fitness_shaping=shaping).estimate(f, params, gen(9))
    up = ES(sigma=0.1, population=500, fitness_shaping=shaping, maximize=True).estimate(f, params, gen(9))
    torch.testing.assert_close(flat(up.grad), -flat(down.grad))
    assert torch.equal(up.values, down.values)  # values stay f's own
    assert cosine(flat(up.grad), true_grad) < -0.9  # θ − lr·grad climbs f


# A linear recurrence s_{t+1} = a ⊙ s_t + c with loss_t = ‖s_{t+1}‖², from s_0 = (1, 2).
THETA = {"a": torch.tensor([0.5, 0.8], dtype=F64), "c": torch.tensor([1.0, -0.5], dtype=F64)}


def init_state():
    return torch.tensor([1.0, 2.0], dtype=F64)


def step(s, p):
    s = p["a"] * s + p["c"]
    return s, (s**2).sum()


def total_loss(p, steps, truncation=None):
    """The loss summed over ``steps``; with ``truncation``, the state is detached between windows."""
    s, total = init_state(), 0.0
    for t in range(steps):
        if truncation and t % truncation == 0:
            s = s.detach()
        s, loss = step(s, p)
        total = total + loss
    return total


def autograd_grad(steps, truncation=None):
    p = {k: v.clone().requires_grad_(True) for k, v in THETA.items()}
    return torch.cat(torch.autograd.grad(total_loss(p, steps, truncation), list(p.values())))


def test_pes_with_one_truncation_per_horizon_is_es_on_the_full_unroll():
    pes = PES(step, init_state, sigma=0.1, population=7, truncation=5, total_steps=5)
    est = pes.estimate(THETA, gen(3))
    es = ES(sigma=0.1, population=7).estimate(lambda p: total_loss(p, 5), THETA, gen(3), vectorized=False)
    torch.testing.assert_close(flat(est.grad), flat(es.grad), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(est.losses, es.values)
    assert es.evaluations == 14  # objective calls, each a full unroll of 5 steps
    assert est.evaluations == 14 * 5  # particle-steps


def test_pes_summed_over_a_horizon_is_unbiased_for_the_full_unroll_gradient():
    # σ tiny: the smoothed gradient is the plain gradient, which autograd gives through all T steps
    horizon, k, n, sigma = 6, 2, 8, 1e-3
    pes = PES(step, init_state, sigma=sigma, population=n, truncation=k, total_steps=horizon)
    es = ES(sigma=sigma, population=n)
    g = gen(0)
    pes_sums, es_samples = [], []
    for _ in range(250):  # one generator throughout: each horizon starts afresh after the reset
        estimates = [pes.estimate(THETA, g) for _ in range(horizon // k)]
        assert [e.evaluations for e in estimates] == [2 * n * k] * (horizon // k)
        pes_sums.append(sum(flat(e.grad) for e in estimates))
        es_samples.append(flat(es.estimate(lambda p: total_loss(p, horizon), THETA, g).grad))
    true_grad = autograd_grad(horizon)
    pes_mean, pes_se = mean_and_se(pes_sums)
    es_mean, es_se = mean_and_se(es_samples)
    assert torch.all((pes_mean - true_grad).abs() < 4 * pes_se)
    assert torch.all((es_mean - true_grad).abs() < 4 * es_se)
    assert torch.all((pes_mean - es_mean).abs() < 4 * torch.sqrt(pes_se**2 + es_se**2))
    # Truncated backpropagation (no credit across windows) is far off: the test can tell the two apart.
    assert torch.any((pes_mean - autograd_grad(horizon, truncation=k)).abs() > 4 * pes_se)


def test_pes_resets_each_horizon_and_resumes_from_its_state_dict():
    pes = PES(step, init_state, sigma=0.1, population=3, truncation=2, total_steps=5)
    g = gen(4)
    assert [(pes.estimate(THETA, g).steps, pes.t) for _ in range(4)] == [(2, 2), (2, 4), (1, 5), (2, 2)]
    saved = pes.state_dict()
    g_state = g.get_state()
    first = [flat(pes.estimate(THETA, g).grad) for _ in range(3)]

    resumed = PES(step, init_state, sigma=0.1, population=3, truncation=2, total_steps=5)
    resumed.load_state_dict(saved)
    g.set_state(g_state)
    second = [flat(resumed.estimate(THETA, g).grad) for _ in range(3)]
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    with pytest.raises(UsageError, match="population"):
        PES(step, init_state, population=4).load_state_dict(saved)


def cma_problem():
    target = {"w": torch.tensor([1.0, -2.0, 0.5], dtype=F64), "v": torch.tensor([[3.0, -1.0]], dtype=F64)}
    start = {"w": torch.zeros(3, dtype=F64), "v": torch.zeros(1, 2, dtype=F64)}
    calls = []

    def objective(p):
        calls.append(1)
        return sum(((p[k] - target[k]) ** 2).sum() for k in target)

    return target, start, objective, calls


def test_cma_es_minimises_a_quadratic_over_a_param_dict_reproducibly():
    pytest.importorskip("cma")
    target, start, objective, calls = cma_problem()
    cmaes = CMAES(start, sigma=1.0, seed=0)
    best = cmaes.optimize(objective, iterations=80)
    assert cmaes.evaluations == len(calls) <= 80 * cmaes.population
    assert {k: (v.shape, v.dtype) for k, v in best.items()} == {k: (v.shape, v.dtype) for k, v in start.items()}
    for k in target:
        torch.testing.assert_close(best[k], target[k], atol=1e-3, rtol=0)
    assert cmaes.best_value < 1e-6

    np.random.seed(123)
    np.random.randn(50)  # NumPy's global generator is not cma's
    again = CMAES(start, sigma=1.0, seed=0).optimize(cma_problem()[2], iterations=80)
    other = CMAES(start, sigma=1.0, seed=1).optimize(cma_problem()[2], iterations=80)
    assert all(torch.equal(again[k], best[k]) for k in best)
    assert not all(torch.equal(other[k], best[k]) for k in best)


def test_cma_es_ask_tell_by_hand():
    pytest.importorskip("cma")
    _, start, objective, _ = cma_problem()
    cmaes = CMAES(start, seed=3, population=6)
    with pytest.raises(UsageError, match="tell"):
        cmaes.best()
    samples = cmaes.ask()
    assert len(samples) == 6 and all(s["v"].shape == (1, 2) for s in samples)
    values = torch.stack([objective(s) for s in samples])
    with pytest.raises(UsageError, match="one value per sample"):
        cmaes.tell(samples, values[:5])
    cmaes.tell(samples, values)
    assert cmaes.evaluations == 6
    assert math.isclose(cmaes.best_value, float(values.min()))


def test_cma_es_without_the_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cma", None)
    with pytest.raises(UsageError, match=r"pip install warpgrad\[cma\]"):
        CMAES({"x": torch.zeros(2)}, seed=0)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: ES(sigma=0.0), "sigma"),
        (lambda: ES(sigma=-1.0), "sigma"),
        (lambda: ES(sigma=float("nan")), "sigma"),
        (lambda: ES(population=0), "population"),
        (lambda: ES(fitness_shaping="ranks"), "fitness_shaping"),
        (lambda: PES(step, init_state, sigma=0), "sigma"),
        (lambda: PES(step, init_state, population=0), "population"),
        (lambda: PES(step, init_state, truncation=0), "truncation"),
        (lambda: PES(step, init_state, total_steps=0), "total_steps"),
        (lambda: ES().estimate(lambda p: p["x"].sum(), {"x": torch.zeros(2)}, None), "generator"),
        (lambda: ES().estimate(lambda p: p["x"].sum(), {}, gen(0)), "params"),
        (lambda: ES().estimate(lambda p: p["x"], {"x": torch.zeros(2)}, gen(0)), "scalar"),
    ],
)
def test_bad_arguments_raise_usage_errors_naming_them(make, name):
    with pytest.raises(UsageError, match=name):
        make()


def test_bad_cma_arguments_raise_usage_errors_naming_them():
    pytest.importorskip("cma")
    with pytest.raises(UsageError, match="sigma"):
        CMAES({"x": torch.zeros(2)}, sigma=0, seed=0)
    with pytest.raises(UsageError, match="seed"):
        CMAES({"x": torch.zeros(2)}, seed=-1)
    with pytest.raises(UsageError, match="population"):
        CMAES({"x": torch.zeros(2)}, seed=0, population=1)
