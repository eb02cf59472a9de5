"""Correlation and error metrics between predictions and opinion scores.

The correlations are `scipy.stats` (`spearmanr`, `pearsonr`, `kendalltau` tau-b) and the logistic fit is
`scipy.optimize.curve_fit` with Levenberg-Marquardt (`method="lm"`), the references the field's evaluations use.
scipy is an optional extra (`pip install 'gamma-iqa[data]'`), so when it cannot be imported the same quantities come
from the numpy implementations below: they agree with scipy to ~1e-15 on the correlations (the test suite checks
both paths on data with ties) and to ~1e-7 on the fitted logistic.

Degenerate input (a constant array, fewer than 2 pairs) gives NaN and a `ConstantInputWarning`, not an exception,
so that one bad dataset does not end a long evaluation; a length mismatch or a non-finite value is a `ValueError`.
The paper reports raw PLCC (`plcc`); `plcc_logistic` is PLCC after the 4- (or 5-) parameter logistic of VQEG practice.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# scipy.stats and scipy.optimize, imported on first use: importing them takes over a second, which a `gamma-iqa score`
# that never correlates anything should not pay. None once an import failed: the numpy fallbacks below take over.
_UNSET: Any = object()
_stats: Any = _UNSET
_optimize: Any = _UNSET


def _scipy(name: str) -> Any:
    """scipy.stats ("_stats") or scipy.optimize ("_optimize"), imported once; None without scipy."""
    module = globals()[name]
    if module is _UNSET:
        try:
            module = importlib.import_module(f"scipy.{name[1:]}")
        except ImportError:  # the core runs without scipy
            module = None
        globals()[name] = module
    return module


__all__ = [
    "ConstantInputWarning",
    "krcc",
    "logistic4",
    "logistic4_parameters",
    "logistic_fit",
    "plcc",
    "plcc_logistic",
    "rmse",
    "srcc",
]

ArrayLike = Sequence[float] | np.ndarray


class ConstantInputWarning(RuntimeWarning):
    """A correlation is undefined because an input is constant (or has fewer than 2 values)."""


def _pair(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as flat float64 arrays of one length, all finite; `ValueError` otherwise."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"predictions and scores differ in length: {x.size} vs {y.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("predictions and scores must be finite numbers (found NaN or inf)")
    return x, y


def _degenerate(x: np.ndarray, y: np.ndarray, what: str) -> bool:
    """True (after a `ConstantInputWarning` naming `what`) when a correlation of x and y is undefined."""
    if x.size < 2 or (x == x[0]).all() or (y == y[0]).all():
        warnings.warn(f"{what} is undefined for a constant input or fewer than 2 pairs; NaN", ConstantInputWarning, 3)
        return True
    return False


# ---- numpy fallbacks (used only when scipy cannot be imported) -------------------------------------------------
def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    xm = x - x.mean()
    ym = y - y.mean()
    r = float(np.dot(xm / np.linalg.norm(xm), ym / np.linalg.norm(ym)))
    return max(-1.0, min(1.0, r))


def _rank(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    first = np.r_[True, s[1:] != s[:-1]]
    group = np.cumsum(first) - 1  # group index of each sorted value
    bounds = np.r_[np.flatnonzero(first), a.size]  # start of each group, then the end
    average = 0.5 * (bounds[:-1] + bounds[1:] - 1) + 1
    ranks = np.empty(a.size)
    ranks[order] = average[group]
    return ranks


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson of average ranks, so ties are handled as scipy does."""
    return _pearson(_rank(x), _rank(y))


def _dense(a: np.ndarray) -> np.ndarray:
    """0-based dense ranks: equal values share one rank, no gaps."""
    _, inverse = np.unique(a, return_inverse=True)
    return inverse.astype(np.int64)


def _inversions(a: np.ndarray) -> int:
    """Number of pairs i < j with a[i] > a[j] (a: non-negative ints), by a vectorised bottom-up merge sort.

    At each level the array is sorted within blocks of `width`; each right-half element counts the left-half
    elements of its block above it. Keys `block * base + value` keep every block's values apart, so one global
    `np.sort` merges all pairs of halves at once: O(n log^2 n) in numpy, no Python loop over elements.
    """
    n = a.size
    base = int(a.max()) + 1 if n else 1
    pos = np.arange(n)
    total = 0
    width = 1
    while width < n:
        block = pos // (2 * width)
        left = (pos // width) % 2 == 0
        key = block * base + a
        left_keys = key[left]  # sorted: blocks in order, each left half sorted
        right_block = block[~left]
        block_end = np.searchsorted(left_keys, (right_block + 1) * base, "left")
        not_above = np.searchsorted(left_keys, key[~left], "right")
        total += int((block_end - not_above).sum())
        a = np.sort(key) - block * base
        width *= 2
    return total


def _tied_pairs(sorted_ranks: np.ndarray) -> int:
    counts = np.bincount(sorted_ranks).astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b in O(n log^2 n): concordant minus discordant pairs over the tie-corrected pair counts."""
    xr, yr = _dense(x), _dense(y)
    order = np.lexsort((yr, xr))  # by x, then y: pairs tied in x are never counted as inversions
    xr, yr = xr[order], yr[order]
    discordant = _inversions(yr)
    change = np.r_[True, (xr[1:] != xr[:-1]) | (yr[1:] != yr[:-1]), True]
    joint = np.diff(np.flatnonzero(change)).astype(np.int64)
    joint_ties = int((joint * (joint - 1) // 2).sum())
    x_ties, y_ties = _tied_pairs(xr), _tied_pairs(yr)
    total = x.size * (x.size - 1) // 2
    concordant_minus_discordant = total - x_ties - y_ties + joint_ties - 2 * discordant
    tau = concordant_minus_discordant / np.sqrt(total - x_ties) / np.sqrt(total - y_ties)
    return float(max(-1.0, min(1.0, tau)))


# ---- the public correlations -------------------------------------------------------------------------------------
def _correlation(
    x: ArrayLike, y: ArrayLike, what: str, scipy_name: str, fallback: Callable[[np.ndarray, np.ndarray], float]
) -> float:
    """`scipy.stats.<scipy_name>`'s statistic (the numpy `fallback` without scipy), NaN for degenerate input."""
    x, y = _pair(x, y)
    if _degenerate(x, y, what):
        return float("nan")
    stats = _scipy("_stats")
    if stats is None:
        return fallback(x, y)
    return float(getattr(stats, scipy_name)(x, y)[0])


def plcc(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson linear correlation of the raw values (no fitting), as the paper reports it.

    Args:
        x: Predictions, any shape (flattened).
        y: Opinion scores, as many as `x`.

    Returns:
        The correlation in [-1, 1]; NaN (with a `ConstantInputWarning`) when an input is constant or has fewer than
        2 values.

    Raises:
        ValueError: The inputs differ in length or hold NaN or inf.

    >>> round(plcc([1, 2, 3], [2, 4, 6]), 12)  # exactly linear, up to rounding in the last bit
    1.0
    >>> round(plcc([1, 2, 3, 4], [1, 3, 2, 4]), 6)
    0.8
    """
    return _correlation(x, y, "PLCC", "pearsonr", _pearson)


def srcc(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation, ties sharing their average rank.

    Arguments, range, the NaN for degenerate input and the errors are those of `plcc`.

    >>> round(srcc([1, 2, 3], [1, 2, 4]), 12)  # the same order: not linear, yet a perfect rank correlation
    1.0
    >>> round(srcc([1, 2, 3], [3, 2, 1]), 12)
    -1.0
    >>> round(srcc([1, 2, 3, 4], [1, 3, 2, 4]), 6)
    0.8
    """
    return _correlation(x, y, "SRCC", "spearmanr", _spearman)


def krcc(x: ArrayLike, y: ArrayLike) -> float:
    """Kendall rank correlation, tau-b (ties in either input corrected for).

    Arguments, range, the NaN for degenerate input and the errors are those of `plcc`.

    >>> round(krcc([1, 2, 3], [1, 2, 4]), 12)
    1.0
    >>> round(krcc([1, 2, 3, 4], [1, 3, 2, 4]), 6)  # 5 concordant pairs, 1 discordant, of 6
    0.666667
    """
    return _correlation(x, y, "KRCC", "kendalltau", _kendall)


def rmse(x: ArrayLike, y: ArrayLike) -> float:
    """Root mean squared error (meaningful when both are on one scale, e.g. the normalised MOS).

    Raises:
        ValueError: The inputs are empty, differ in length or hold NaN or inf.
    """
    x, y = _pair(x, y)
    if x.size == 0:
        raise ValueError("RMSE of no values")
    return float(np.sqrt(np.mean((x - y) ** 2)))


# ---- the logistic mapping ----------------------------------------------------------------------------------------
def _logistic4(x: np.ndarray, *b: float) -> np.ndarray:
    """b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|)), the 4-parameter logistic of VQEG practice."""
    return b[1] + (b[0] - b[1]) / (1.0 + np.exp(np.clip(-(x - b[2]) / abs(b[3]), -50, 50)))


def _logistic4_jacobian(x: np.ndarray, *b: float) -> np.ndarray:
    """(N, 4) derivatives of `_logistic4` with respect to b1..b4."""
    s = 1.0 / (1.0 + np.exp(np.clip(-(x - b[2]) / abs(b[3]), -50, 50)))
    ds = s * (1 - s) * (b[0] - b[1])  # d f / d((x - b3) / |b4|)
    return np.stack([s, 1 - s, -ds / abs(b[3]), -ds * (x - b[2]) / (b[3] * abs(b[3]))], axis=1)


def _logistic5(x: np.ndarray, *b: float) -> np.ndarray:
    """b1 (1/2 - 1 / (1 + exp(b2 (x - b3)))) + b4 x + b5, the 5-parameter logistic of Sheikh et al. (2006)."""
    return b[0] * (0.5 - 1.0 / (1.0 + np.exp(np.clip(b[1] * (x - b[2]), -50, 50)))) + b[3] * x + b[4]


def _logistic5_jacobian(x: np.ndarray, *b: float) -> np.ndarray:
    """(N, 5) derivatives of `_logistic5` with respect to b1..b5."""
    s = 1.0 / (1.0 + np.exp(np.clip(b[1] * (x - b[2]), -50, 50)))
    ds = b[0] * s * (1 - s)  # d f / d(b2 (x - b3))
    return np.stack([0.5 - s, ds * (x - b[2]), -ds * b[1], x, np.ones_like(x)], axis=1)


# parameters -> (model, Jacobian, start from standardised x and y)
_LOGISTICS: dict[int, tuple[Callable, Callable, Callable[[np.ndarray, np.ndarray], list[float]]]] = {
    4: (_logistic4, _logistic4_jacobian, lambda xs, ys: [ys.max(), ys.min(), 0.0, 1.0]),
    5: (_logistic5, _logistic5_jacobian, lambda xs, ys: [np.ptp(ys) * np.sign(_pearson(xs, ys)), 1.0, 0.0, 0.0, 0.0]),
}


def _levenberg_marquardt(
    f: Callable, jac: Callable, x: np.ndarray, y: np.ndarray, b: np.ndarray, iterations: int
) -> np.ndarray:
    """Least-squares parameters of y ~ f(x, *b) from the start `b`, by damped Gauss-Newton steps (scipy's fallback)."""
    damping = 1e-3
    cost = float(np.sum((f(x, *b) - y) ** 2))
    for _ in range(iterations):
        j = jac(x, *b)
        jtj = j.T @ j
        step = np.linalg.lstsq(jtj + damping * np.diag(np.diag(jtj) + 1e-12), j.T @ (y - f(x, *b)), rcond=None)[0]
        trial_cost = float(np.sum((f(x, *(b + step)) - y) ** 2))
        if trial_cost < cost:
            converged = cost - trial_cost <= 1e-15 * max(cost, 1e-300)
            b, cost, damping = b + step, trial_cost, max(damping / 10, 1e-12)
            if converged:
                break
        else:
            damping *= 10
            if damping > 1e12:
                break
    return b


def _fit(xs: np.ndarray, ys: np.ndarray, params: int, iterations: int) -> np.ndarray | None:
    """Fitted parameters on standardised data, by curve_fit (or the numpy fallback); None if the fit failed."""
    f, jac, start = _LOGISTICS[params]
    b0 = np.asarray(start(xs, ys), dtype=np.float64)
    optimize = _scipy("_optimize")
    if optimize is None:
        return _levenberg_marquardt(f, jac, xs, ys, b0, iterations)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)  # an unestimable covariance; only b is used
        try:
            return optimize.curve_fit(f, xs, ys, p0=b0, jac=jac, method="lm", maxfev=100 * iterations)[0]
        except RuntimeError:  # no convergence within the evaluation budget
            return None


def logistic_fit(x: ArrayLike, y: ArrayLike, *, params: int = 4, iterations: int = 200) -> np.ndarray:
    """Least-squares fit of a logistic mapping from the predictions `x` to the scores `y`; returns y's fitted values.

    With `params=4`: y ~ b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) (VQEG); with `params=5`:
    y ~ b1 (1/2 - 1 / (1 + exp(b2 (x - b3)))) + b4 x + b5 (Sheikh et al. 2006). Fitted by Levenberg-Marquardt
    (`scipy.optimize.curve_fit`, or a numpy loop without scipy) on standardised x and y: both families are closed
    under affine maps of x and y, so the fitted values map back exactly and the fit is better conditioned.

    Args:
        x: Predictions, any shape (flattened).
        y: Opinion scores, as many as `x`.
        params: 4 or 5, the logistic's number of parameters.
        iterations: Budget of Levenberg-Marquardt iterations; scipy's MINPACK counts function evaluations instead
            (`maxfev`), and gets 100 per iteration: a step-like relation (two clusters of predictions) can take
            over 1,000 evaluations to converge.

    Returns:
        (N,) float64 fitted values; all NaN, with a `ConstantInputWarning`, for fewer than `params` pairs or a
        constant input, and with a `RuntimeWarning` when curve_fit does not converge.

    Raises:
        ValueError: `params` is not 4 or 5, or the inputs differ in length or hold NaN or inf.
    """
    if params not in _LOGISTICS:
        raise ValueError(f"`params` must be 4 or 5, got {params}")
    x, y = _pair(x, y)
    if x.size < params:
        warnings.warn(f"a {params}-parameter logistic fit needs at least {params} pairs; NaN", ConstantInputWarning, 2)
        return np.full(x.shape, np.nan)
    if _degenerate(x, y, "a logistic fit"):
        return np.full(x.shape, np.nan)
    xs, ys = (x - x.mean()) / x.std(), (y - y.mean()) / y.std()
    b = _fit(xs, ys, params, iterations)
    if b is None:
        warnings.warn(f"the {params}-parameter logistic fit did not converge; NaN", RuntimeWarning, 2)
        return np.full(x.shape, np.nan)
    return _LOGISTICS[params][0](xs, *b) * y.std() + y.mean()


def logistic4_parameters(x: ArrayLike, y: ArrayLike, *, iterations: int = 200) -> np.ndarray:
    """The fit of `logistic_fit(x, y, params=4)` as its parameters, in x's and y's own units (to map new x later).

    Args:
        x: Predictions, any shape (flattened).
        y: Opinion scores, as many as `x`.
        iterations: Budget of Levenberg-Marquardt iterations, as `logistic_fit`.

    Returns:
        (4,) float64 (b1, b2, b3, b4) with b4 > 0: `logistic4(x, b)` = b2 + (b1 - b2) / (1 + exp(-(x - b3) / b4))
        gives `logistic_fit`'s fitted values (b1 < b2 for a decreasing relation).

    Raises:
        ValueError: fewer than 4 pairs, a constant input, a fit that does not converge, or as `plcc` for the inputs.
    """
    x, y = _pair(x, y)
    if x.size < 4 or (x == x[0]).all() or (y == y[0]).all():
        raise ValueError(f"a 4-parameter logistic fit needs at least 4 pairs, neither input constant; got {x.size}")
    xs, ys = (x - x.mean()) / x.std(), (y - y.mean()) / y.std()
    b = _fit(xs, ys, 4, iterations)
    if b is None:
        raise ValueError("the 4-parameter logistic fit did not converge")
    # Fitted on standardised x and y: undo both affine maps (the logistic's family is closed under them).
    (mx, sx), (my, sy) = (x.mean(), x.std()), (y.mean(), y.std())
    return np.array([my + sy * b[0], my + sy * b[1], mx + sx * b[2], sx * abs(b[3])])


def logistic4(x: ArrayLike, b: ArrayLike) -> np.ndarray:
    """b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) of x (any shape), for parameters from `logistic4_parameters`."""
    return _logistic4(np.asarray(x, dtype=np.float64), *np.asarray(b, dtype=np.float64))


def plcc_logistic(x: ArrayLike, y: ArrayLike, *, params: int = 4) -> float:
    """PLCC after mapping the predictions through the fitted logistic of `logistic_fit` (VQEG practice).

    Returns:
        The correlation in [-1, 1]; NaN (with a warning) when the fit is undefined or fails.

    Raises:
        ValueError: `params` is not 4 or 5, or the inputs differ in length or hold NaN or inf.
    """
    x, y = _pair(x, y)
    fitted = logistic_fit(x, y, params=params)
    if np.isnan(fitted).any():
        return float("nan")
    return _correlation(fitted, y, "PLCC after the logistic fit", "pearsonr", _pearson)
