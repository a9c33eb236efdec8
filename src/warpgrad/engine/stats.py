"""Student's t quantiles and intervals, without scipy.

The t distribution's tail is a regularized incomplete beta function,
``P(|T| > t) = I_x(df/2, 1/2)`` with ``x = df / (df + t^2)``, evaluated here by its continued
fraction (with relative accuracy in the tails; ``ln B(df/2, 1/2)`` from Stirling's series for
large ``df``); :func:`t_quantile` inverts it by bisection. :func:`t_interval` and
:func:`paired_t_interval` give the two-sided 95% intervals that ``warpgrad report`` prints.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch

from warpgrad.errors import UsageError

_CF_TINY = 1e-300
_CF_EPS = 1e-16
_CF_MAX_TERMS = 10_000


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of ``I_x(a, b)`` (modified Lentz), converging for ``x < (a + 1) / (a + b + 2)``."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
    fraction = d
    for m in range(1, _CF_MAX_TERMS):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),  # even term d_{2m}
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),  # odd term d_{2m+1}
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _CF_TINY else _CF_TINY
            fraction *= c * d
        if abs(c * d - 1.0) < _CF_EPS:
            return fraction
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (x={x}, a={a}, b={b})")


def _log_beta_half(a: float) -> float:
    """``ln B(a, 1/2)``; for large ``a`` from Stirling's series for ``ln Γ(a + 1/2) - ln Γ(a)``, which a
    difference of two large ``lgamma`` values would compute with an absolute error growing with ``a``."""
    if a < 10.0:
        return math.lgamma(a) + math.lgamma(0.5) - math.lgamma(a + 0.5)
    # ln Γ(z) = (z - 1/2) ln z - z + ln(2π)/2 + Σ_k B_2k / (2k (2k - 1) z^(2k - 1)), differenced at a + 1/2 and a
    log_ratio = a * math.log1p(0.5 / a) + 0.5 * math.log(a) - 0.5
    for coefficient, power in _STIRLING_TERMS:
        log_ratio += coefficient * ((a + 0.5) ** -power - a**-power)
    return math.lgamma(0.5) - log_ratio


_STIRLING_TERMS = ((1 / 12, 1), (-1 / 360, 3), (1 / 1260, 5), (-1 / 1680, 7), (1 / 1188, 9), (-691 / 360360, 11))


def _upper_tail(t: float, df: int) -> float:
    """``P(T > t)`` for ``t >= 0``: ``I_x(df/2, 1/2) / 2`` with ``x = df / (df + t^2)``."""
    t_squared = t * t
    if math.isinf(t_squared):
        return 0.0
    if t_squared == 0.0:
        return 0.5
    a, b = df / 2.0, 0.5
    x, x_complement = df / (df + t_squared), t_squared / (df + t_squared)
    log_x = -math.log1p(t_squared / df)  # precise even where x is close to 1
    log_front = a * log_x + b * math.log(x_complement) - _log_beta_half(a)
    if x < (a + 1.0) / (a + b + 2.0):
        return 0.5 * math.exp(log_front) * _beta_continued_fraction(x, a, b) / a
    return 0.5 * (1.0 - math.exp(log_front) * _beta_continued_fraction(x_complement, b, a) / b)


def t_cdf(t: float, df: int) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom."""
    _check_df(df)
    return 1.0 - _upper_tail(t, df) if t >= 0 else _upper_tail(-t, df)


def _check_df(df: int) -> None:
    if isinstance(df, bool) or not isinstance(df, numbers.Integral) or df < 1:
        raise UsageError(f"degrees of freedom must be an integer >= 1, not {df!r}")


def t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom.

    Accurate to about 1e-12 (relative) for ``df`` up to 1e6, as ``scipy.stats.t.ppf``.

    Raises:
        UsageError: if ``probability`` is not in (0, 1) or ``df`` is not an integer >= 1.

    Example:
        >>> round(t_quantile(0.975, 4), 6)
        2.776445
    """
    _check_df(df)
    if isinstance(probability, bool) or not isinstance(probability, numbers.Real) or not 0.0 < probability < 1.0:
        raise UsageError(f"probability must be a number strictly between 0 and 1, not {probability!r}")
    probability = float(probability)
    if probability == 0.5:
        return 0.0
    target = 1.0 - probability if probability > 0.5 else probability  # the upper tail beyond |quantile|
    low, high = 0.0, 1.0
    while _upper_tail(high, df) > target:
        low, high = high, high * 2.0
    for _ in range(2000):  # bisection to full double precision (each halving is one step)
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if _upper_tail(middle, df) > target:
            low = middle
        else:
            high = middle
    quantile = 0.5 * (low + high)
    return quantile if probability > 0.5 else -quantile


def _as_values(values: Sequence[float] | torch.Tensor, name: str = "values") -> torch.Tensor:
    try:
        x = torch.as_tensor(values, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError) as error:
        raise UsageError(f"{name} must be numbers: {error}") from None
    if x.numel() == 0:
        raise UsageError(f"{name}: need at least one value, got none")
    if not bool(torch.isfinite(x).all()):
        bad = x[~torch.isfinite(x)][0].item()
        raise UsageError(f"{name} must be finite numbers, got {bad}")
    return x


def t_interval(values: Sequence[float] | torch.Tensor) -> tuple[float, float | None]:
    """Mean and half-width of the two-sided 95% interval ``t(0.975, n-1) * sd(ddof=1) / sqrt(n)``.

    The half-width is ``None`` for a single value.

    Raises:
        UsageError: for no values or a non-finite value.

    Example:
        >>> mean, half_width = t_interval([1.0, 2.0, 3.0])
        >>> mean, round(half_width, 4)
        (2.0, 2.4841)
    """
    x = _as_values(values)
    n = x.numel()
    mean = float(x.mean())
    if n < 2:
        return mean, None
    return mean, t_quantile(0.975, n - 1) * float(x.std(correction=1)) / math.sqrt(n)


def paired_t_interval(
    a: Sequence[float] | torch.Tensor, b: Sequence[float] | torch.Tensor
) -> tuple[float, float | None]:
    """Mean and 95% half-width (Student's t) of the paired differences ``a - b``.

    Raises:
        UsageError: if ``a`` and ``b`` differ in length, are empty, or hold a non-finite value.
    """
    x, y = _as_values(a, "a"), _as_values(b, "b")
    if x.numel() != y.numel():
        raise UsageError(f"paired values must have the same length, got {x.numel()} and {y.numel()}")
    return t_interval(x - y)
