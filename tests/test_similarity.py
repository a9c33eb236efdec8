"""Representational similarity (warpgrad.analysis): CKA's invariances, HSIC against hand computations,
RDMs against scipy's pdist, RSA against scipy's spearmanr, and the errors for bad input."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform
from scipy.stats import spearmanr

from warpgrad.analysis import hsic, linear_cka, rbf_cka, rdm, rsa
from warpgrad.errors import UsageError

F64 = torch.float64


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def orthogonal(p, seed=1):
    q, r = torch.linalg.qr(randn(p, p, seed=seed))
    return q * torch.sign(torch.diagonal(r))


CKAS = [
    pytest.param(lambda x, y: linear_cka(x, y), id="linear"),
    pytest.param(lambda x, y: linear_cka(x, y, debiased=True), id="linear-debiased"),
    pytest.param(lambda x, y: rbf_cka(x, y), id="rbf"),
    pytest.param(lambda x, y: rbf_cka(x, y, sigma_fraction=0.8, debiased=True), id="rbf-debiased"),
]


@pytest.mark.parametrize("cka", CKAS)
@pytest.mark.parametrize("p", [5, 30], ids=["features<n", "features>n"])
def test_cka_is_one_for_identical_representations(cka, p):
    x = randn(20, p)
    assert cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert cka(x, randn(20, 4, seed=7)) < 0.9  # and not 1 for unrelated ones


@pytest.mark.parametrize("cka", CKAS)
def test_cka_is_invariant_to_orthogonal_maps_and_isotropic_scaling(cka):
    x, y = randn(25, 6), randn(25, 4, seed=3) + 0.5 * randn(25, 6)[:, :4]
    base = cka(x, y)
    assert 0.05 < base < 0.95
    assert cka(x @ orthogonal(6), y) == pytest.approx(base, abs=1e-10)
    assert cka(x, 3.7 * y @ orthogonal(4, seed=2)) == pytest.approx(base, abs=1e-10)
    assert cka(0.01 * x, y) == pytest.approx(base, abs=1e-10)


@pytest.mark.parametrize("cka", CKAS)
def test_cka_is_not_invariant_to_a_general_invertible_linear_map(cka):
    x = randn(25, 6)
    a = torch.eye(6, dtype=F64) + 0.3 * randn(6, 6, seed=4)
    a[:, 0] *= 8.0  # stretch one direction: invertible, far from orthogonal
    assert abs(torch.linalg.det(a)) > 1e-3
    assert cka(x, x) - cka(x, x @ a) > 0.05


def gram_linear_cka(x, y, debiased=False):
    k, l = x @ x.T, y @ y.T  # noqa: E741
    return hsic(k, l, debiased) / math.sqrt(hsic(k, k, debiased) * hsic(l, l, debiased))


@pytest.mark.parametrize("shape_x, shape_y", [((30, 5), (30, 7)), ((8, 12), (8, 3))])
def test_linear_cka_feature_space_form_equals_gram_matrix_hsic(shape_x, shape_y):
    x, y = randn(*shape_x) + 2.0, randn(*shape_y, seed=5) - 1.0  # uncentred: the Gram route centres via H
    assert linear_cka(x, y) == pytest.approx(gram_linear_cka(x, y), abs=1e-10)
    assert linear_cka(x, y, debiased=True) == pytest.approx(gram_linear_cka(x, y, debiased=True), abs=1e-10)


def test_rbf_cka_uses_the_median_pairwise_distance():
    x, y = randn(9, 4), randn(9, 3, seed=6)  # 36 pairs: an even count, so the median averages two

    def gram(a, fraction):
        sigma = fraction * np.median(pdist(a.numpy()))
        return np.exp(-squareform(pdist(a.numpy(), "sqeuclidean")) / (2 * sigma**2))

    for fraction in (0.5, 1.3):
        k, l = gram(x, fraction), gram(y, fraction)  # noqa: E741
        expected = hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))
        assert rbf_cka(x, y, sigma_fraction=fraction) == pytest.approx(expected, abs=1e-10)


def random_grams(n):
    a, b = randn(n, 3, seed=8), randn(n, 2, seed=9)
    return (a @ a.T).tolist(), torch.exp(-(torch.cdist(b, b) ** 2)).tolist()


def test_biased_hsic_against_explicit_centering_matrix():
    k, l = random_grams(5)  # noqa: E741
    n = 5
    h = [[(1.0 if i == j else 0.0) - 1.0 / n for j in range(n)] for i in range(n)]
    mm = lambda a, b: [[sum(a[i][t] * b[t][j] for t in range(n)) for j in range(n)] for i in range(n)]  # noqa: E731
    khlh = mm(mm(mm(k, h), l), h)
    assert hsic(k, l) == pytest.approx(sum(khlh[i][i] for i in range(n)) / (n - 1) ** 2, abs=1e-12)


def test_debiased_hsic_against_song_et_al_by_hand():
    n = 6
    k, l = random_grams(n)  # noqa: E741
    kt = [[0.0 if i == j else k[i][j] for j in range(n)] for i in range(n)]
    lt = [[0.0 if i == j else l[i][j] for j in range(n)] for i in range(n)]
    trace = sum(kt[i][j] * lt[j][i] for i in range(n) for j in range(n))
    sum_k = sum(kt[i][j] for i in range(n) for j in range(n))
    sum_l = sum(lt[i][j] for i in range(n) for j in range(n))
    one_kl_one = sum(kt[i][t] * lt[t][j] for i in range(n) for t in range(n) for j in range(n))
    song = (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * one_kl_one) / (n * (n - 3))
    assert hsic(k, l, debiased=True) == pytest.approx(song, abs=1e-12)
    # and it is the U-statistic over distinct indices (Song et al. 2012, Theorem 2)
    perms = lambda m: itertools.permutations(range(n), m)  # noqa: E731
    u2 = sum(k[i][j] * l[i][j] for i, j in perms(2)) / math.perm(n, 2)
    u3 = sum(k[i][j] * l[i][q] for i, j, q in perms(3)) / math.perm(n, 3)
    u4 = sum(k[i][j] * l[q][r] for i, j, q, r in perms(4)) / math.perm(n, 4)
    assert hsic(k, l, debiased=True) == pytest.approx(u2 + u4 - 2 * u3, abs=1e-12)
    assert hsic(k, l, debiased=True) != pytest.approx(hsic(k, l), abs=1e-3)


def test_correlation_rdm_is_invariant_to_shifting_and_scaling_each_example():
    x = randn(8, 12)
    shift = 10.0 * randn(8, 1, seed=10)
    scale = torch.exp(2.0 * randn(8, 1, seed=11))  # positive, 0.01x..100x
    d = rdm(x)
    torch.testing.assert_close(rdm(scale * x + shift), d, rtol=0, atol=1e-12)
    assert d.shape == (8, 8) and d.dtype == F64
    assert torch.equal(d, d.T) and bool((torch.diagonal(d) == 0).all())
    assert not torch.allclose(rdm(x * randn(1, 12, seed=12)), d, atol=1e-3)  # per-feature scaling is not allowed


@pytest.mark.parametrize("metric", ["correlation", "euclidean", "cosine"])
def test_rdm_matches_scipy_pdist(metric):
    x = randn(9, 5) + 0.5
    expected = torch.from_numpy(squareform(pdist(x.numpy(), metric)))
    torch.testing.assert_close(rdm(x, metric), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(rdm(x.numpy().tolist(), metric), expected, rtol=0, atol=1e-12)


def test_rdm_constant_and_zero_rows_have_dissimilarity_one_not_nan():
    x = randn(5, 4)
    x[1] = 0.1  # constant (roundoff in its mean must not matter)
    x[3] = 0.0
    for metric, odd in (("correlation", [1, 3]), ("cosine", [3])):
        d = rdm(x, metric)
        assert bool(torch.isfinite(d).all()) and bool((torch.diagonal(d) == 0).all())
        for i in odd:
            others = [j for j in range(5) if j != i]
            assert torch.equal(d[i, others], torch.ones(4, dtype=F64)), (metric, i, d[i])


def upper(m):
    m = np.asarray(m)
    return m[np.triu_indices(m.shape[0], 1)]


def test_rsa_equals_scipy_spearman_with_ties():
    a = torch.round(rdm(randn(10, 6)) * 4) / 4  # coarse values: many ties
    b = torch.round(rdm(randn(10, 6, seed=13) + 0.5 * randn(10, 6), "euclidean"))
    assert len(np.unique(upper(a))) < 15 and len(np.unique(upper(b))) < 15
    expected = spearmanr(upper(a), upper(b)).statistic
    assert 0.1 < abs(expected) < 0.9
    assert rsa(a, b) == pytest.approx(expected, abs=1e-12)
    # the diagonal and lower triangle are ignored; a monotone transform of an RDM changes nothing
    assert rsa(a + torch.tril(randn(10, 10)), b) == pytest.approx(expected, abs=1e-12)
    assert rsa(a, torch.exp(b)) == pytest.approx(expected, abs=1e-12)
    assert rsa(a, a) == pytest.approx(1.0, abs=1e-12)


def one_line_error(call, *fragments):
    with pytest.raises(UsageError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_bad_inputs_raise_usage_errors_naming_the_value():
    x = randn(6, 3)
    one_line_error(lambda: rdm(x, "manhattan"), "'manhattan'", "correlation, euclidean, cosine")
    one_line_error(lambda: linear_cka(x, randn(7, 3)), "6 vs 7")
    one_line_error(lambda: rbf_cka(x, randn(5, 3)), "6 vs 5")
    one_line_error(lambda: linear_cka(x[:1], x[:1]), "at least 2 examples", "(1, 3)")
    one_line_error(lambda: linear_cka(x[:3], x[:3], debiased=True), "at least 4 examples", "(3, 3)")
    one_line_error(lambda: rbf_cka(x[:3], x[:3], debiased=True), "at least 4 examples")
    one_line_error(lambda: rdm(x[:1]), "at least 2 examples")
    one_line_error(lambda: rdm(x[0]), "2-D", "(3,)")
    one_line_error(lambda: hsic(torch.eye(3), torch.eye(3), debiased=True), "n >= 4", "(3, 3)")
    one_line_error(lambda: hsic(torch.eye(4), torch.eye(5)), "(4, 4)", "(5, 5)")
    one_line_error(lambda: hsic(torch.ones(4, 3), torch.ones(4, 3)), "square", "(4, 3)")
    one_line_error(lambda: rsa(rdm(x), rdm(x[:5])), "(6, 6)", "(5, 5)")
    one_line_error(lambda: rsa(torch.ones(4, 4), rdm(x[:4])), "rdm_a", "constant")
    one_line_error(lambda: rbf_cka(x, x, sigma_fraction=0.0), "sigma_fraction", "0.0")
    one_line_error(lambda: linear_cka(torch.ones(6, 3) * 0.1, x), "x", "same for every example")
    one_line_error(lambda: rbf_cka(x, torch.ones(6, 2)), "median distance between y's examples is 0")
    bad = x.clone()
    bad[2, 1] = float("nan")
    one_line_error(lambda: linear_cka(x, bad), "y holds non-finite")
