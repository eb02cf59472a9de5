"""Correlation and error metrics between predictions and opinion scores: pure numpy functions.

They agree with scipy (`spearmanr`, `pearsonr`, `kendalltau` tau-b) to ~1e-15 and need nothing but numpy.
Degenerate input (a constant array, fewer than 2 pairs) gives NaN and a `ConstantInputWarning`, not an exception,
so that one bad dataset does not end a long evaluation; a length mismatch or a non-finite value is a `ValueError`.

`plcc_logistic` fits the 4-parameter logistic of VQEG practice with our own Levenberg-Marquardt loop (no scipy),
so its result does not depend on which optional packages are installed. The paper reports raw PLCC (`plcc`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["ConstantInputWarning", "krcc", "logistic_fit", "plcc", "plcc_logistic", "rmse", "srcc"]

ArrayLike = Sequence[float] | np.ndarray


class ConstantInputWarning(RuntimeWarning):
    """A correlation is undefined because an input is constant (or has fewer than 2 values)."""


def _pair(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"predictions and scores differ in length: {x.size} vs {y.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("predictions and scores must be finite numbers (found NaN or inf)")
    return x, y


def _degenerate(x: np.ndarray, y: np.ndarray, what: str) -> bool:
    if x.size < 2 or (x == x[0]).all() or (y == y[0]).all():
        warnings.warn(f"{what} is undefined for a constant input or fewer than 2 pairs; NaN", ConstantInputWarning, 2)
        return True
    return False


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    xm = x - x.mean()
    ym = y - y.mean()
    r = float(np.dot(xm / np.linalg.norm(xm), ym / np.linalg.norm(ym)))
    return max(-1.0, min(1.0, r))


def plcc(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson linear correlation of the raw values (no fitting), as the paper reports it."""
    x, y = _pair(x, y)
    return float("nan") if _degenerate(x, y, "PLCC") else _pearson(x, y)


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


def srcc(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation (Pearson of average ranks, so ties are handled as scipy does)."""
    x, y = _pair(x, y)
    return float("nan") if _degenerate(x, y, "SRCC") else _pearson(_rank(x), _rank(y))


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


def krcc(x: ArrayLike, y: ArrayLike) -> float:
    """Kendall rank correlation, tau-b (ties in either input corrected for), in O(n log^2 n)."""
    x, y = _pair(x, y)
    if _degenerate(x, y, "KRCC"):
        return float("nan")
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


def rmse(x: ArrayLike, y: ArrayLike) -> float:
    """Root mean squared error (meaningful when both are on one scale, e.g. the normalised MOS)."""
    x, y = _pair(x, y)
    if x.size == 0:
        raise ValueError("RMSE of no values")
    return float(np.sqrt(np.mean((x - y) ** 2)))


def _logistic(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    return b[1] + (b[0] - b[1]) / (1.0 + np.exp(np.clip(-(x - b[2]) / abs(b[3]), -50, 50)))


def _logistic_jacobian(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    s = 1.0 / (1.0 + np.exp(np.clip(-(x - b[2]) / abs(b[3]), -50, 50)))
    ds = s * (1 - s) * (b[0] - b[1])  # d f / d((x - b3) / |b4|)
    return np.stack([s, 1 - s, -ds / abs(b[3]), -ds * (x - b[2]) / (b[3] * abs(b[3]))], axis=1)


def logistic_fit(x: ArrayLike, y: ArrayLike, *, iterations: int = 200) -> np.ndarray:
    """Least-squares fit of y ~ b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|)); returns y's fitted values.

    Levenberg-Marquardt on standardised x and y (the logistic family is closed under affine maps of x, and the
    fitted values map back affinely), started from the usual (max y, min y, mean x, std x).
    """
    x, y = _pair(x, y)
    if x.size < 4:
        warnings.warn("a 4-parameter logistic fit needs at least 4 pairs; NaN", ConstantInputWarning, 2)
        return np.full(x.shape, np.nan)
    if _degenerate(x, y, "a logistic fit"):
        return np.full(x.shape, np.nan)
    xs, ys = (x - x.mean()) / x.std(), (y - y.mean()) / y.std()
    b = np.array([ys.max(), ys.min(), 0.0, 1.0])
    damping = 1e-3
    cost = float(np.sum((_logistic(xs, b) - ys) ** 2))
    for _ in range(iterations):
        j = _logistic_jacobian(xs, b)
        r = ys - _logistic(xs, b)
        jtj = j.T @ j
        step = np.linalg.lstsq(jtj + damping * np.diag(np.diag(jtj) + 1e-12), j.T @ r, rcond=None)[0]
        trial = b + step
        trial_cost = float(np.sum((_logistic(xs, trial) - ys) ** 2))
        if trial_cost < cost:
            converged = cost - trial_cost <= 1e-15 * max(cost, 1e-300)
            b, cost, damping = trial, trial_cost, max(damping / 10, 1e-12)
            if converged:
                break
        else:
            damping *= 10
            if damping > 1e12:
                break
    return _logistic(xs, b) * y.std() + y.mean()


def plcc_logistic(x: ArrayLike, y: ArrayLike) -> float:
    """PLCC after mapping the predictions through the fitted 4-parameter logistic (VQEG practice)."""
    x, y = _pair(x, y)
    fitted = logistic_fit(x, y)
    if np.isnan(fitted).any() or _degenerate(fitted, y, "PLCC after the logistic fit"):
        return float("nan")
    return _pearson(fitted, y)
