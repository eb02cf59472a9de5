"""Metrics against scipy (the reference the paper used), with ties, degenerate input and bad lengths."""

import warnings

import numpy as np
import pytest

from gamma_iqa import metrics

st = pytest.importorskip("scipy.stats", reason="scipy is the reference for these tests (pip install scipy)")


def _cases():
    rng = np.random.default_rng(0)
    for n in (2, 3, 17, 500, 3001):
        x = rng.normal(size=n)
        y = 0.6 * x + rng.normal(size=n)
        yield f"n{n}", x, y
        if n < 10:
            continue
        # Heavy ties in both, and ties in one only: tau-b and average ranks must match scipy exactly.
        yield f"n{n}-ties", np.round(x * 2) / 2, np.round(y)
        yield f"n{n}-xties", np.round(x), y
    yield "anti", np.arange(10.0), -(np.arange(10.0) ** 3)


@pytest.mark.parametrize(("name", "x", "y"), list(_cases()), ids=[c[0] for c in _cases()])
def test_agrees_with_scipy(name, x, y):
    assert metrics.srcc(x, y) == pytest.approx(st.spearmanr(x, y)[0], abs=1e-12)
    assert metrics.plcc(x, y) == pytest.approx(st.pearsonr(x, y)[0], abs=1e-12)
    assert metrics.krcc(x, y) == pytest.approx(st.kendalltau(x, y)[0], abs=1e-12)
    assert metrics.rmse(x, y) == pytest.approx(np.sqrt(np.mean((x - y) ** 2)), abs=1e-12)


def test_kendall_counts_inversions_exactly_on_a_large_input():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 300, 40_000).astype(float)  # many ties at a size where an O(n^2) loop would be slow
    y = x + rng.integers(0, 200, x.size)
    assert metrics.krcc(x, y) == pytest.approx(st.kendalltau(x, y)[0], abs=1e-12)


def test_logistic_fit_matches_scipy_curve_fit():
    optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, 400)
    y = 20 + 60 / (1 + np.exp(-(x - 0.55) / 0.08)) + rng.normal(0, 4, x.size)

    def f(x, b1, b2, b3, b4):
        return b2 + (b1 - b2) / (1 + np.exp(-(x - b3) / abs(b4)))

    p, _ = optimize.curve_fit(f, x, y, p0=[y.max(), y.min(), x.mean(), x.std()], maxfev=20000)
    want = st.pearsonr(f(x, *p), y)[0]
    got = metrics.plcc_logistic(x, y)
    assert got == pytest.approx(want, abs=1e-7)
    assert got > metrics.plcc(x, y) + 0.01  # the fit straightens a clearly non-linear relation
    # Invariant to an affine change of the predictions, as a fitted mapping must be.
    assert metrics.plcc_logistic(3 * x - 7, y) == pytest.approx(got, abs=1e-7)


@pytest.mark.parametrize("fn", [metrics.srcc, metrics.plcc, metrics.krcc, metrics.plcc_logistic])
def test_constant_predictions_give_nan_and_a_warning(fn):
    with pytest.warns(metrics.ConstantInputWarning):
        assert np.isnan(fn(np.full(8, 0.5), np.arange(8.0)))
    with pytest.warns(metrics.ConstantInputWarning):
        assert np.isnan(fn([0.3], [1.0]))


@pytest.mark.parametrize("fn", [metrics.srcc, metrics.plcc, metrics.krcc, metrics.plcc_logistic, metrics.rmse])
def test_length_mismatch_and_nan_are_errors(fn):
    with pytest.raises(ValueError, match="differ in length: 3 vs 4"):
        fn([1, 2, 3], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="finite"):
        fn([1, float("nan"), 3], [1, 2, 3])


def test_no_warning_on_ordinary_input():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.srcc([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
        assert metrics.krcc([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
