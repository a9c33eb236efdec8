"""Student's t quantiles and intervals (warpgrad.engine.stats) against scipy."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from warpgrad.engine.stats import paired_t_interval, t_cdf, t_interval, t_quantile
from warpgrad.errors import UsageError

PROBABILITIES = [1e-9, 1e-4, 0.001, 0.025, 0.05, 0.1, 0.3, 0.5, 0.5001, 0.75, 0.9, 0.95, 0.975, 0.995, 0.9999, 1 - 1e-9]
DEGREES = [1, 2, 3, 4, 5, 7, 10, 30, 31, 100, 1000, 100_000]


@pytest.mark.parametrize("df", DEGREES)
def test_t_quantile_matches_scipy(df):
    for probability in PROBABILITIES:
        expected = stats.t.ppf(probability, df)
        assert t_quantile(probability, df) == pytest.approx(expected, rel=1e-10, abs=1e-12), (probability, df)


@pytest.mark.parametrize("df", [1, 2, 3, 5, 30, 1000])
def test_t_cdf_matches_scipy_and_inverts_the_quantile(df):
    for t in [-50.0, -3.0, -1.0, -1e-3, 0.0, 0.5, 2.0, 12.0, 1e4]:
        assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), rel=1e-12, abs=1e-300)
    for probability in [0.01, 0.3, 0.7, 0.99]:
        assert t_cdf(t_quantile(probability, df), df) == pytest.approx(probability, rel=1e-13)


def test_known_quantiles():
    assert t_quantile(0.975, 1) == pytest.approx(12.706204736174707, rel=1e-12)
    assert t_quantile(0.975, 4) == pytest.approx(2.7764451051977987, rel=1e-12)
    assert t_quantile(0.5, 7) == 0.0
    assert t_quantile(0.025, 9) == pytest.approx(-t_quantile(0.975, 9), rel=1e-14)


@pytest.mark.parametrize(
    "probability, df",
    [
        (0.0, 3),
        (1.0, 3),
        (1.5, 3),
        (-0.1, 3),
        (float("nan"), 3),
        ("0.9", 3),
        (0.9, 0),
        (0.9, -2),
        (0.9, 2.5),
        (0.9, True),
    ],
)
def test_t_quantile_rejects_bad_arguments(probability, df):
    with pytest.raises(UsageError) as error:
        t_quantile(probability, df)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("n", [2, 3, 5, 10, 101])
def test_t_interval_matches_scipy(n):
    values = [math.sin(3.0 * i) + 0.1 * i for i in range(n)]
    mean, half_width = t_interval(values)
    low, high = stats.t.interval(0.95, n - 1, loc=sum(values) / n, scale=stats.sem(values))
    assert mean == pytest.approx((low + high) / 2, rel=1e-12)
    assert half_width == pytest.approx((high - low) / 2, rel=1e-10)


def test_t_interval_accepts_tensors_and_lists_alike():
    values = [0.3, 0.1, 0.7, 0.2]
    assert t_interval(torch.tensor(values, dtype=torch.float32)) == pytest.approx(t_interval(values), rel=1e-6)
    assert t_interval(torch.tensor(values, dtype=torch.float64)) == t_interval(values)


def test_one_value_has_no_interval():
    assert t_interval([0.25]) == (0.25, None)


@pytest.mark.parametrize("values", [[], [1.0, float("nan")], [float("inf"), 2.0], torch.tensor([])])
def test_t_interval_rejects_no_or_non_finite_values(values):
    with pytest.raises(UsageError):
        t_interval(values)


def test_five_runs_are_about_1_42_times_wider_than_the_normal_interval():
    values = [0.61, 0.55, 0.72, 0.58, 0.66]
    _, t_half = t_interval(values)
    normal_half = 1.96 * float(torch.tensor(values, dtype=torch.float64).std()) / math.sqrt(len(values))
    assert t_half / normal_half == pytest.approx(2.7764451051977987 / 1.96, rel=1e-12)
    assert t_half / normal_half == pytest.approx(1.42, abs=0.01)


def test_paired_t_interval_matches_scipy_ttest_rel():
    a = [0.51, 0.62, 0.48, 0.70, 0.55, 0.66, 0.59]
    b = [0.49, 0.58, 0.47, 0.65, 0.55, 0.61, 0.52]
    mean, half_width = paired_t_interval(a, b)
    interval = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert mean == pytest.approx((interval.low + interval.high) / 2, rel=1e-12)
    assert half_width == pytest.approx((interval.high - interval.low) / 2, rel=1e-10)
    assert paired_t_interval(torch.tensor(a), torch.tensor(b)) == pytest.approx((mean, half_width), rel=1e-6)


def test_paired_t_interval_rejects_unequal_lengths():
    with pytest.raises(UsageError, match="same length.*3 and 2"):
        paired_t_interval([1.0, 2.0, 3.0], [1.0, 2.0])
