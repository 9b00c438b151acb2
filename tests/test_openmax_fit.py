"""OpenMax's Weibull tail fits: the port of libMR's FitHigh (default) and the raw scipy fit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import root
from scipy.stats import weibull_min

from bench.errors import BenchError
from bench.method import MethodSpec
from methods.openmax import OpenMax, fit_weibull_libmr, openmax_logits, weibull_cdf

# Seven distances; the five largest, sorted, are the tail [0.3, 0.5, 0.7, 0.9, 1.2].
DISTANCES = np.array([0.9, 0.1, 0.5, 0.7, 0.3, 1.2, 0.2])
QUERIES = np.array([0.2, 0.5, 1.0, 1.5])


def as64(*values):
    return [torch.tensor(v, dtype=torch.float64) for v in values]


def cdf(queries, shape, scale, shift):
    """Our torch CDF for one fitted column, at each query distance."""
    d, k, lam, s = as64(np.asarray(queries)[:, None], [shape], [scale], [shift])
    return weibull_cdf(d, k, lam, s)[:, 0].numpy()


def weibull_likelihood_root(x, start):
    """Weibull MLE (shape, scale) from the two likelihood equations, solved jointly:
    d/dk:   n/k + sum log(x/lam) - sum (x/lam)^k log(x/lam) = 0
    d/dlam: sum (x/lam)^k - n = 0."""
    def equations(p):
        k, lam = p
        r = x / lam
        return [len(x) / k + np.log(r).sum() - (r**k * np.log(r)).sum(), (r**k).sum() - len(x)]

    solution = root(equations, start, method="hybr", tol=1e-12)
    np.testing.assert_allclose(equations(solution.x), 0, atol=1e-10)
    return solution.x


def test_fit_high_with_translate_one_matches_the_likelihood_equations_and_libmr():
    shape, scale, shift = fit_weibull_libmr(DISTANCES, 5, translate=1.0)
    # FitHigh keeps the 5 largest and moves the smallest of them (0.3) to the translate amount (1).
    assert shift == pytest.approx(0.7, abs=1e-15)
    moved = np.array([0.3, 0.5, 0.7, 0.9, 1.2]) + 0.7
    k, lam = weibull_likelihood_root(moved, start=[2.0, 1.5])
    assert shape == pytest.approx(k, rel=1e-10) and scale == pytest.approx(lam, rel=1e-10)
    expected = 1 - np.exp(-(((QUERIES + 0.7) / lam) ** k))
    np.testing.assert_allclose(cdf(QUERIES, shape, scale, shift), expected, rtol=1e-10)
    # libMR itself (OSDN's libMR/MetaRecognition.cpp + weibull.c compiled, FitHigh with
    # translate_amount 1, then W_score), which stops its root search earlier than we do:
    assert shape == pytest.approx(5.0434274805231709, rel=2e-5)
    assert scale == pytest.approx(1.5468580954594717, rel=2e-5)
    np.testing.assert_allclose(cdf(QUERIES, shape, scale, shift),
                               [0.063049374551608861, 0.24261610286940027, 0.80007297533084287, 0.99728473898752301],
                               atol=1e-5)


def test_fit_high_with_the_reference_translate_of_10000():
    shape, scale, shift = fit_weibull_libmr(DISTANCES, 5)
    assert shift == 10000 - 0.3
    moved = np.array([0.3, 0.5, 0.7, 0.9, 1.2]) + shift
    # Near 10000 the raw equations overflow; solve them in logs relative to the smallest point:
    # l = log(x / x_min), unknowns k and m = k log(lam / x_min), so that (x/lam)^k = exp(k l - m).
    ell = np.log1p((moved - moved[0]) / moved[0])

    def equations(p):
        k, m = p
        w = np.exp(k * ell - m)
        return [1 / k + np.mean(ell - m / k) - np.mean((ell - m / k) * w), np.mean(w) - 1]

    k0 = np.pi / (np.sqrt(6) * ell.std(ddof=1))  # the Gumbel moment guess for 1 / shape
    solution = root(equations, [k0, np.log(np.mean(np.exp(k0 * ell)))], method="hybr", tol=1e-12)
    np.testing.assert_allclose(equations(solution.x), 0, atol=1e-10)
    k, m = solution.x
    lam = moved[0] * np.exp(m / k)
    assert shape == pytest.approx(k, rel=1e-8) and scale == pytest.approx(lam, rel=1e-12)
    expected = 1 - np.exp(-np.exp(k * np.log1p((QUERIES + shift - moved[0]) / moved[0]) - m))
    np.testing.assert_allclose(cdf(QUERIES, shape, scale, shift), expected, rtol=1e-8, atol=1e-12)
    # libMR's own numbers for this tail (translate_amount 10000, as the OpenMax code builds it):
    assert shape == pytest.approx(33753.126163634894, rel=2e-5)
    assert scale == pytest.approx(10000.578680692381, rel=1e-8)
    np.testing.assert_allclose(cdf(QUERIES, shape, scale, shift),
                               [0.096243331365874041, 0.24312837862160852, 0.77820704469292723, 0.99970876666343567],
                               atol=1e-5)


def test_a_tail_size_beyond_the_data_fits_all_of_it():
    assert fit_weibull_libmr(DISTANCES, 50) == fit_weibull_libmr(DISTANCES, 7)
    assert fit_weibull_libmr(DISTANCES, 7)[2] == 10000 - 0.1


@pytest.mark.parametrize("weibull", ["libmr", "scipy"])
def test_cdf_is_monotone_in_the_distance_and_within_0_1(weibull):
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(300, 4)) + 4 * np.eye(4)[rng.integers(0, 4, 300)])
    method = OpenMax(tail_size=20, weibull=weibull)
    method.fit_outputs(logits, None, logits.argmax(1))
    grid = torch.linspace(0, 3, 3001, dtype=torch.float64)[:, None].expand(-1, 4)
    values = weibull_cdf(grid, method.shape_, method.scale_, method.shift_)
    assert (values >= 0).all() and (values <= 1).all()
    assert (values.diff(dim=0) >= 0).all()
    assert values[0].max() < 0.5 and values[-1].min() > 0.99  # rises from near 0 to near 1 over the grid


def test_scipy_fit_reproduces_the_raw_tail_fit():
    rng = np.random.default_rng(1)
    labels = torch.tensor(rng.integers(0, 3, 200))
    logits = torch.tensor(rng.normal(size=(200, 3)), dtype=torch.float64) + 5 * torch.eye(3, dtype=torch.float64)[labels]
    method = OpenMax(tail_size=15, weibull="scipy", distance="euclidean")
    method.fit_outputs(logits, None, labels)
    for c in range(3):
        members = (labels == c) & (logits.argmax(1) == c)
        own = torch.cdist(logits[members], logits[members].mean(0, keepdim=True))[:, 0].numpy()
        shape, _, scale = weibull_min.fit(np.sort(own)[-15:], floc=0)  # the old fit: raw tail, location 0
        assert method.shape_[c].item() == pytest.approx(shape, rel=1e-12)
        assert method.scale_[c].item() == pytest.approx(scale, rel=1e-12)
    assert method.shift_.tolist() == [0.0, 0.0, 0.0]
    queries = logits[:20] * 1.3
    distances = torch.cdist(queries, method.means_)
    old = openmax_logits(queries, distances, method.shape_, method.scale_, method.alpha)  # no shift: the old path
    assert torch.equal(method.score_outputs(queries, None), -old.softmax(dim=1)[:, -1].float())


def test_libmr_is_the_default_and_selectable_by_name():
    assert OpenMax().weibull == "libmr"
    assert MethodSpec("openmax", (("weibull", "scipy"),)).build().weibull == "scipy"


def test_unknown_weibull_fit_is_refused():
    with pytest.raises(BenchError, match=r"^openmax weibull 'matlab' is unknown; choose one of libmr, scipy$"):
        OpenMax(weibull="matlab").fit_outputs(torch.eye(2), None, torch.tensor([0, 1]))


def test_a_tail_of_equal_distances_is_a_step_at_that_distance():
    """libMR cannot fit a tail without spread (its model is left invalid); we use a step."""
    shape, scale, shift = fit_weibull_libmr(np.array([0.1, 0.5, 0.5, 0.5]), 3)
    assert (scale, shift) == (0.0, -0.5)
    assert cdf([0.0, 0.5, 0.5000001, 2.0], shape, scale, shift).tolist() == [0.0, 0.0, 1.0, 1.0]
