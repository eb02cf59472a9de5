"""Metrics against scipy (the reference the paper used), and the numpy fallback against scipy.

Also the docstring examples, ties, degenerate input and bad lengths.
"""

import doctest
import subprocess
import sys
import warnings

import numpy as np
import pytest

from gamma_iqa import metrics

st = pytest.importorskip("scipy.stats", reason="scipy is the reference for these tests (pip install scipy)")


@pytest.fixture(params=["scipy", "numpy"])
def backend(request, monkeypatch):
    """Each test twice: with scipy, and with the numpy fallback that runs when scipy cannot be imported."""
    if request.param == "numpy":
        monkeypatch.setattr(metrics, "_stats", None)
        monkeypatch.setattr(metrics, "_optimize", None)
    return request.param


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
def test_agrees_with_scipy(name, x, y, backend):
    assert metrics.srcc(x, y) == pytest.approx(st.spearmanr(x, y)[0], abs=1e-12)
    assert metrics.plcc(x, y) == pytest.approx(st.pearsonr(x, y)[0], abs=1e-12)
    assert metrics.krcc(x, y) == pytest.approx(st.kendalltau(x, y)[0], abs=1e-12)
    assert metrics.rmse(x, y) == pytest.approx(np.sqrt(np.mean((x - y) ** 2)), abs=1e-12)


def test_kendall_counts_inversions_exactly_on_a_large_input(backend):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 300, 40_000).astype(float)  # many ties at a size where an O(n^2) loop would be slow
    y = x + rng.integers(0, 200, x.size)
    assert metrics.krcc(x, y) == pytest.approx(st.kendalltau(x, y)[0], abs=1e-12)


def test_logistic_fit_matches_scipy_curve_fit(backend):
    optimize = pytest.importorskip("scipy.optimize", reason="scipy is the reference (pip install scipy)")
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
def test_constant_predictions_give_nan_and_a_warning(fn, backend):
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


def test_no_warning_on_ordinary_input(backend):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.srcc([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
        assert metrics.krcc([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)


@pytest.mark.parametrize("name", ["srcc", "plcc", "krcc"])
def test_numpy_fallback_equals_scipy_on_ties(name, monkeypatch):
    rng = np.random.default_rng(4)
    for n in (5, 64, 1000):
        x, y = rng.integers(0, 7, n).astype(float), rng.integers(0, 5, n) + 0.3 * rng.integers(0, 2, n)
        with_scipy = getattr(metrics, name)(x, y)
        with monkeypatch.context() as m:
            m.setattr(metrics, "_stats", None)
            without = getattr(metrics, name)(x, y)
        assert abs(with_scipy - without) <= 1e-12, (n, with_scipy, without)


@pytest.mark.parametrize("params", [4, 5])
def test_both_logistic_fits_agree_with_and_without_scipy(params, monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.uniform(-2, 3, 300)
    y = 1 + 4 / (1 + np.exp(-1.7 * x)) + 0.3 * x + rng.normal(0, 0.2, x.size)
    fitted = metrics.logistic_fit(x, y, params=params)
    with monkeypatch.context() as m:
        m.setattr(metrics, "_optimize", None)
        fallback = metrics.logistic_fit(x, y, params=params)
    assert np.abs(fitted - fallback).max() < 1e-5
    residual = np.sqrt(np.mean((fitted - y) ** 2))
    assert residual < 0.22  # the noise is 0.2: the fit found the curve
    assert metrics.plcc_logistic(x, y, params=params) > metrics.plcc(x, y)


def test_five_parameter_fit_needs_five_pairs_and_params_are_checked():
    with pytest.warns(metrics.ConstantInputWarning, match="5-parameter logistic fit needs at least 5 pairs"):
        assert np.isnan(metrics.logistic_fit([1, 2, 3, 4], [1, 3, 2, 4], params=5)).all()
    with pytest.raises(ValueError, match="`params` must be 4 or 5"):
        metrics.logistic_fit([1, 2, 3, 4], [1, 3, 2, 4], params=3)


def test_a_fit_that_does_not_converge_gives_nan_and_a_warning():
    # Two clusters of predictions, as an early training evaluation gives: the fit tends to a step and needs ~1,250
    # evaluations; the default budget (20,000) is enough, 500 (iterations=5) is not.
    x = [-0.9056, 1.2212, -0.2592, 1.1233, 1.2357, -0.9123, -0.912, -0.9076, -0.9129, 1.2294]
    y = [-0.8373, 1.2026, 0.0431, 0.7135, 1.2887, -0.9919, -0.9082, -0.857, -1.0673, 1.4137]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(metrics.logistic_fit(x, y)).all()
    with pytest.warns(RuntimeWarning, match="did not converge"):
        assert np.isnan(metrics.logistic_fit(x, y, iterations=5)).all()


def test_docstring_examples_run(backend):
    result = doctest.testmod(metrics)
    assert result.attempted >= 7 and result.failed == 0


def test_the_metrics_import_and_work_without_scipy():
    code = (
        "import sys; sys.modules['scipy'] = None\n"  # a None entry makes every `import scipy...` fail
        "import gamma_iqa, gamma_iqa.metrics as m\n"
        "squares = [x * x for x in range(9)]\n"
        "print(round(m.srcc([1, 2, 3, 4], [1, 3, 2, 4]), 6), round(m.plcc_logistic(range(9), squares), 3))\n"
        "assert m._stats is None and m._optimize is None\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0.8", str(round(metrics.plcc_logistic(range(9), [x * x for x in range(9)]), 3))]


def test_scipy_is_imported_only_when_a_metric_needs_it():
    """Importing the package (or scoring) does not pay scipy's import time, over a second; a correlation does."""
    code = (
        "import sys, gamma_iqa, gamma_iqa.cli, gamma_iqa.metrics as m\n"
        "print('scipy' in sys.modules)\n"
        "m.srcc([1, 2, 3], [1, 3, 2])\n"
        "print('scipy.stats' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
