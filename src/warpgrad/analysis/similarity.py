"""Representational similarity: RDMs and RSA, HSIC and CKA, on activation matrices.

Every function takes activations ``x`` of shape ``(n examples, features)`` (a tensor, array or
nested list; converted to float64, detached) and compares representations of the *same* ``n``
examples in the same order.

- :func:`rdm` and :func:`rsa`: representational similarity analysis (Kriegeskorte, Mur &
  Bandettini 2008, "Representational similarity analysis - connecting the branches of systems
  neuroscience"). An RDM holds the dissimilarity of every pair of examples; RSA is the Spearman
  rank correlation of two RDMs' strict upper triangles (ties get average ranks).
- :func:`hsic`: the Hilbert-Schmidt independence criterion of two Gram matrices (Gretton,
  Bousquet, Smola & Schoelkopf 2005). Biased: ``tr(K H L H) / (n-1)^2``. Debiased: the unbiased
  estimator of Song, Smola, Gretton, Bedo & Borgwardt (JMLR 2012), used for debiased CKA by
  Nguyen, Raghu & Kornblith (ICLR 2021).
- :func:`linear_cka`, :func:`rbf_cka`: centred kernel alignment (Kornblith, Norouzi, Lee & Hinton,
  ICML 2019), ``hsic(K, L) / sqrt(hsic(K, K) hsic(L, L))``. Invariant to orthogonal transforms and
  isotropic scaling of either representation, not to general invertible linear maps.

Conventions (no NaN is ever returned):

- correlation (and cosine) with a constant (zero) vector is taken as 0, so its dissimilarity to
  every other example is 1; an example's dissimilarity to itself is always 0.
- CKA is undefined for a representation that is the same for every example (or, debiased, whose
  HSIC with itself is not positive): that is a :class:`~warpgrad.errors.UsageError`.
- RBF bandwidth: ``sigma = sigma_fraction * median`` of the distances between the ``n(n-1)/2``
  pairs of examples. Kornblith et al.'s reference code takes the median over the full ``n x n``
  matrix including its ``n`` zero diagonal entries, a slightly smaller bandwidth for small ``n``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from warpgrad.errors import UsageError

METRICS = ("correlation", "euclidean", "cosine")
_REL_TOL = 1e-12  # below this relative size a centred vector (or self-HSIC) counts as zero: roundoff


def _activations(x: Any, name: str, min_n: int) -> Tensor:
    """``x`` as a float64 ``(n, features)`` tensor, checked: 2-D, finite, ``n >= min_n``, features >= 1."""
    t = x.detach() if isinstance(x, Tensor) else x
    t = torch.as_tensor(t, dtype=torch.float64)
    if t.dim() != 2:
        raise UsageError(f"{name} must be 2-D (examples, features), got shape {tuple(t.shape)}")
    if t.shape[0] < min_n or t.shape[1] < 1:
        raise UsageError(
            f"{name} must have at least {min_n} examples and 1 feature, got shape {tuple(t.shape)} (examples, features)"
        )
    if not bool(torch.isfinite(t).all()):
        raise UsageError(f"{name} holds non-finite values (NaN or inf)")
    return t


def _square(m: Any, name: str, min_n: int) -> Tensor:
    """``m`` as a float64 square ``(n, n)`` tensor, checked: finite, ``n >= min_n``."""
    t = m.detach() if isinstance(m, Tensor) else m
    t = torch.as_tensor(t, dtype=torch.float64)
    if t.dim() != 2 or t.shape[0] != t.shape[1] or t.shape[0] < min_n:
        raise UsageError(f"{name} must be a square (n, n) matrix with n >= {min_n}, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise UsageError(f"{name} holds non-finite values (NaN or inf)")
    return t


def _same_n(x: Tensor, y: Tensor, names: str = "x and y") -> None:
    if x.shape[0] != y.shape[0]:
        raise UsageError(
            f"{names} must describe the same examples: {x.shape[0]} vs {y.shape[0]} rows "
            f"(shapes {tuple(x.shape)} and {tuple(y.shape)})"
        )


def _min_examples(debiased: bool) -> int:
    return 4 if debiased else 2


def _unit_rows(v: Tensor, scale: Tensor) -> Tensor:
    """Rows of ``v`` divided by their norms; rows whose norm is roundoff next to ``scale`` become 0."""
    norms = v.norm(dim=1, keepdim=True)
    zero = norms <= _REL_TOL * scale.unsqueeze(1)
    return torch.where(zero, torch.zeros_like(v), v / torch.where(zero, torch.ones_like(norms), norms))


def _pairwise_distances(x: Tensor) -> Tensor:
    """Euclidean distances between rows, computed directly (not via ``|a|^2 + |b|^2 - 2ab``), diagonal 0."""
    d = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    return d.fill_diagonal_(0.0)


def rdm(x: Any, metric: str = "correlation") -> Tensor:
    """Representational dissimilarity matrix ``(n, n)`` (float64) of the rows (examples) of ``x``.

    ``metric``: ``"correlation"`` = 1 - Pearson correlation of two examples' activation vectors
    (in [0, 2]; invariant to shifting and positively scaling each example's vector);
    ``"euclidean"`` = Euclidean distance; ``"cosine"`` = 1 - cosine similarity (in [0, 2]).
    A constant row (correlation) or zero row (cosine) has similarity 0, so dissimilarity 1, to
    every other row; the diagonal is always 0.
    """
    if metric not in METRICS:
        raise UsageError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    x = _activations(x, "x", 2)
    if metric == "euclidean":
        return _pairwise_distances(x)
    scale = x.norm(dim=1)
    v = x - x.mean(dim=1, keepdim=True) if metric == "correlation" else x
    u = _unit_rows(v, scale)
    d = 1.0 - (u @ u.T).clamp(-1.0, 1.0)
    return d.fill_diagonal_(0.0)


def _average_ranks(v: Tensor) -> Tensor:
    """1-based ranks of ``v``; tied values share the average of their ranks."""
    sorted_v, order = torch.sort(v)
    _, inverse, counts = torch.unique_consecutive(sorted_v, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)
    average = ends - (counts.to(torch.float64) - 1.0) / 2.0
    ranks = torch.empty_like(v)
    ranks[order] = average[inverse]
    return ranks


def rsa(rdm_a: Any, rdm_b: Any) -> float:
    """Spearman rank correlation between the strict upper triangles of two RDMs (average ranks for ties).

    Both must be ``(n, n)`` with ``n >= 3`` over the same examples; an RDM whose upper triangle is
    constant has no ranking, and is a :class:`~warpgrad.errors.UsageError`.
    """
    a = _square(rdm_a, "rdm_a", 3)
    b = _square(rdm_b, "rdm_b", 3)
    if a.shape != b.shape:
        raise UsageError(
            f"rdm_a and rdm_b must be over the same examples, got shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )
    i, j = torch.triu_indices(a.shape[0], a.shape[0], offset=1)
    ranks = []
    for name, m in (("rdm_a", a), ("rdm_b", b)):
        r = _average_ranks(m[i, j])
        r = r - r.mean()
        if bool((r == 0).all()):
            raise UsageError(f"{name}'s upper triangle is constant: its rank correlation is undefined")
        ranks.append(r)
    ra, rb = ranks
    rho = (ra @ rb) / (ra.norm() * rb.norm())
    return float(rho.clamp(-1.0, 1.0))


def hsic(k: Any, l: Any, debiased: bool = False) -> float:  # noqa: E741 - K and L as in the papers
    """HSIC of Gram matrices ``k`` and ``l`` ``(n, n)`` over the same examples.

    Biased (Gretton et al. 2005): ``tr(K H L H) / (n-1)^2`` with ``H = I - 11'/n``; ``n >= 2``.
    Debiased (Song et al. 2012), with ``K~``, ``L~`` the matrices with zeroed diagonals; ``n >= 4``::

        [tr(K~ L~) + (1'K~1)(1'L~1) / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))
    """
    return float(_hsic(_square(k, "k", _min_examples(debiased)), _square(l, "l", _min_examples(debiased)), debiased))


def _hsic(k: Tensor, g: Tensor, debiased: bool) -> Tensor:
    if k.shape != g.shape:
        raise UsageError(f"k and l must be over the same examples, got shapes {tuple(k.shape)} and {tuple(g.shape)}")
    n = k.shape[0]
    if not debiased:
        kc = k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()
        return (kc * g.T).sum() / (n - 1) ** 2
    kt = k.clone().fill_diagonal_(0.0)
    lt = g.clone().fill_diagonal_(0.0)
    trace = (kt * lt.T).sum()
    sums = kt.sum() * lt.sum() / ((n - 1) * (n - 2))
    cross = kt.sum(dim=0) @ lt.sum(dim=1)
    return (trace + sums - 2.0 / (n - 2) * cross) / (n * (n - 3))


def _gram_cka(k: Tensor, g: Tensor, debiased: bool) -> float:
    """``hsic(K, L) / sqrt(hsic(K, K) hsic(L, L))``; a self-HSIC that is roundoff-small or negative is an error."""
    n = k.shape[0]
    self_terms = []
    for name, m in (("x", k), ("y", g)):
        h = _hsic(m, m, debiased)
        if h <= _REL_TOL * (m.norm() / (n - 1)) ** 2:
            what = "its debiased HSIC with itself is not positive" if debiased else "it is the same for every example"
            raise UsageError(f"CKA is undefined for {name}: {what}")
        self_terms.append(h)
    return float(_hsic(k, g, debiased) / torch.sqrt(self_terms[0] * self_terms[1]))


def _centred(x: Tensor, name: str) -> Tensor:
    xc = x - x.mean(dim=0, keepdim=True)
    if xc.norm() <= _REL_TOL * x.norm():
        raise UsageError(f"CKA is undefined for {name}: it is the same for every example")
    return xc


def linear_cka(x: Any, y: Any, debiased: bool = False) -> float:
    """Linear CKA between activations ``x`` ``(n, p)`` and ``y`` ``(n, q)`` of the same ``n`` examples.

    Biased with ``max(p, q) <= n``: the feature-space form ``|Y'X|_F^2 / (|X'X|_F |Y'Y|_F)`` on
    column-centred ``X``, ``Y`` (no ``n x n`` matrices); otherwise :func:`hsic` on the Gram
    matrices ``X X'`` and ``Y Y'`` of the centred features (the same HSIC, less roundoff).
    ``n >= 2`` (biased) or ``n >= 4`` (debiased).
    """
    x = _activations(x, "x", _min_examples(debiased))
    y = _activations(y, "y", _min_examples(debiased))
    _same_n(x, y)
    xc, yc = _centred(x, "x"), _centred(y, "y")  # HSIC, biased or not, is the same for centred features
    if not debiased and max(x.shape[1], y.shape[1]) <= x.shape[0]:
        cross = (yc.T @ xc).norm() ** 2
        return float(cross / ((xc.T @ xc).norm() * (yc.T @ yc).norm()))
    return _gram_cka(xc @ xc.T, yc @ yc.T, debiased)


def _rbf_gram(x: Tensor, sigma_fraction: float, name: str) -> Tensor:
    d = _pairwise_distances(x)
    i, j = torch.triu_indices(x.shape[0], x.shape[0], offset=1)
    pairs = torch.sort(d[i, j]).values
    m = pairs.numel()
    median = pairs[m // 2] if m % 2 else (pairs[m // 2 - 1] + pairs[m // 2]) / 2
    if median <= 0:
        raise UsageError(
            f"rbf_cka: the median distance between {name}'s examples is 0 (at least half the pairs coincide), "
            "so the RBF bandwidth would be 0"
        )
    sigma = sigma_fraction * median
    return torch.exp(-(d**2) / (2.0 * sigma**2))


def rbf_cka(x: Any, y: Any, sigma_fraction: float = 0.5, debiased: bool = False) -> float:
    """CKA with RBF kernels ``exp(-|a-b|^2 / (2 sigma^2))``, ``sigma = sigma_fraction * median`` pairwise
    distance of each representation's examples (Kornblith et al. 2019). ``n >= 2`` (4 debiased)."""
    if not (isinstance(sigma_fraction, (int, float)) and math.isfinite(sigma_fraction) and sigma_fraction > 0):
        raise UsageError(f"sigma_fraction must be a finite number > 0, got {sigma_fraction!r}")
    x = _activations(x, "x", _min_examples(debiased))
    y = _activations(y, "y", _min_examples(debiased))
    _same_n(x, y)
    return _gram_cka(_rbf_gram(x, sigma_fraction, "x"), _rbf_gram(y, sigma_fraction, "y"), debiased)
