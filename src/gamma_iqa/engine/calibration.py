"""Scores on a scale people know: a dataset's MOS scale, or a monotone calibration fitted to a user's labels.

A model's score is on the training targets' scale: each dataset's MOS min-max normalised to [0, 1] and flipped where
lower is better (`DatasetSpec.normalise`), so higher is better, about 0 to 1. Two mappings put it back on a scale
people know; each is an extra output column, added only when asked for:

- `mos` (`mos_scale="koniq10k"`, `gamma-iqa score --mos-scale koniq10k`): `DatasetSpec.denormalise`, the exact inverse
  of that normalisation: KonIQ 0..100, KADID 1..5, AVA 0..10; for a lower-is-better dataset (LIVE's and CSIQ's DMOS)
  a higher score gives a lower DMOS. It says what the score means in the units of that dataset's study; it is no fit.
- `calibrated` (`calibration=FILE`, `gamma-iqa score --calibration FILE`): a monotone map from score to a user's own
  MOS, fitted by `gamma-iqa calibrate` (`fit_calibration`) on labelled images: a 4-parameter logistic
  (`metrics.logistic4_parameters`, scipy's curve_fit) or an isotonic (pool-adjacent-violators) fit.

A calibration file is small JSON (`FORMAT`, version `VERSION`): the model it was fitted for (name, the argument it was
made from, the SHA-256 of its parameters, as run provenance records it), the scene, crops and seed the labelled
images were scored with, the method and its parameters (logistic4: b1..b4; isotonic: the knots, scores increasing),
the label file (path, SHA-256, columns, rows), the held-out draw, and the fit report: SRCC, PLCC and RMSE of the score
as it is ("before") and calibrated ("after") against the MOS, on the fit rows and on the held-out rows. It is applied
only to scores of the model it was fitted for: another model's scores are refused (`CalibrationError`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import metrics
from ..data.datasets import FOLDER_CSV, DatasetSpec, get_dataset, list_datasets
from ..data.transforms import parse_crops
from ..models.base import QualityModel, require_model
from ..models.state import read_json, state_sha256, write_json

__all__ = [
    "CALIBRATED_COLUMN",
    "FILE_NAME",
    "FORMAT",
    "METHODS",
    "MIN_ROWS",
    "MOS_COLUMN",
    "VERSION",
    "Calibration",
    "CalibrationError",
    "calibration_file",
    "check_options",
    "check_rows",
    "fit_calibration",
    "load_calibration",
    "mos_dataset",
    "score_columns",
]

FORMAT = "gamma-iqa-calibration"  # the file's `format` value
VERSION = 1  # the file's `version`; a file of another version is refused
METHODS = ("logistic4", "isotonic")
MOS_COLUMN, CALIBRATED_COLUMN = "mos", "calibrated"  # the output columns, in this order after the others
_MIN_FIT_ROWS = {"logistic4": 5, "isotonic": 2}  # a logistic needs more rows than its 4 parameters
MIN_ROWS = 10  # fit rows under which a fit is warned about as rough (it is still made)
FILE_NAME = "calibration.json"  # the file a folder given as a calibration (a model or run folder) holds
# How far beyond the labels (in multiples of their range) a logistic's asymptotes may lie. A fit on labels that cover
# only a stretch of the curve puts them well outside (tests/test_calibration.py's known distortion: 8 ranges); a free
# fit of a few noisy labels can put one 50,000 ranges out.
_REACH = 10


class CalibrationError(ValueError):
    """A calibration file that cannot be used (malformed, or made for another model): one line naming the file."""


def _warn(message: str) -> None:
    """Warn with `message`, pointing at the first frame outside this package (the caller's line, not ours)."""
    package = str(Path(__file__).resolve().parents[1])
    frame, level = sys._getframe(1), 2  # level 2: _warn's caller
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, stacklevel=level)


def mos_dataset(name: str) -> DatasetSpec:
    """The registered dataset whose MOS scale `mos_scale` names (case ignored).

    Raises:
        TypeError: `name` is not a string (one line naming `mos_scale`).
        ValueError: not a registered dataset (one line listing the known names; `folder+csv` has no scale of its own).
    """
    if not isinstance(name, str):
        raise TypeError(f"`mos_scale` must be a registered dataset's name, got {type(name).__name__} {name!r}")
    known = [n for n in list_datasets() if n != FOLDER_CSV]
    if name.strip().lower() not in known:
        raise ValueError(f"`mos_scale` {name!r} is not a registered dataset; known: {', '.join(known)}")
    return get_dataset(name)


@dataclass(frozen=True)
class Calibration:
    """A monotone map from a model's score to a user's MOS, with what it was fitted on (see the module text).

    Attributes:
        method: "logistic4" or "isotonic".
        parameters: logistic4: {"b1", "b2", "b3", "b4"} of b2 + (b1 - b2) / (1 + exp(-(s - b3) / b4)), b4 > 0;
            isotonic: {"scores", "mos"}, the knots (scores strictly increasing, mos monotone), joined linearly and
            held at the end values outside them.
        model: {"name", "argument", "parameters_sha256"} of the model it was fitted for.
        scene: the scene the labelled images were scored in.
        crops: their crop mode, as `gamma-iqa score --crops` takes it.
        seed: the crops' seed, which also drew the held-out rows.
        labels: the label file: {"file", "sha256", "image_column", "mos_column", "rows", "scored", "failed"}.
        report: {"holdout", "fit", "held_out"}: the fraction held out, then per part {"rows", "before", "after"},
            each {"srcc", "plcc", "rmse"} against the MOS (None where undefined); `held_out` is None without holdout.
        path: the file it was read from or saved to; None for one only fitted.
    """

    method: str
    parameters: dict[str, Any]
    model: dict[str, Any]
    scene: str | None = None
    crops: str = "10"
    seed: int = 0
    labels: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    def apply(self, scores: Any) -> np.ndarray:
        """The calibrated values of `scores` (any shape), float64, in the label file's MOS units."""
        s = np.asarray(scores, dtype=np.float64)
        p = self.parameters
        if self.method == "logistic4":
            return metrics.logistic4(s, [p["b1"], p["b2"], p["b3"], p["b4"]])
        return np.interp(s, p["scores"], p["mos"])

    def __call__(self, score: float) -> float:
        """One calibrated score."""
        return float(self.apply(score))

    def check_model(self, model: QualityModel) -> None:
        """Refuse a model other than the one this calibration was fitted for (by the SHA-256 of its parameters).

        Raises:
            CalibrationError: the parameters' SHA-256 differs (one line naming both models).
        """
        want, have = self.model["parameters_sha256"], state_sha256(model)
        if want != have:
            where = f"{self.path}: " if self.path else ""
            raise CalibrationError(
                f"`calibration` {where}made for model {self.model.get('name')} (parameters SHA-256 {want[:12]}), not "
                f"for {model.config.name} ({have[:12]}): calibrate this model with gamma-iqa calibrate"
            )

    def to_dict(self) -> dict[str, Any]:
        """The file's content (JSON-ready: NaN as None)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model,
            "scene": self.scene,
            "crops": self.crops,
            "seed": self.seed,
            "method": self.method,
            "parameters": self.parameters,
            "labels": self.labels,
            "report": self.report,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the calibration to `path` as indented JSON (atomically: a kill leaves no half file); returns it.

        A folder `path` (a model or run folder) gets the file `FILE_NAME` inside it.
        """
        return write_json(calibration_file(path), self.to_dict())


# ---- reading a file ----------------------------------------------------------------------------------------------
def _finite_list(value: Any, n_min: int) -> bool:
    """Whether `value` is a list of at least `n_min` finite numbers (bools are not numbers here)."""
    return (
        isinstance(value, list)
        and len(value) >= n_min
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )


def _parameter_problem(method: Any, p: Any) -> str | None:
    """What is wrong with a file's method and parameters, or None."""
    if method not in METHODS:
        return f'"method" must be one of {", ".join(METHODS)}, got {method!r}'
    if not isinstance(p, dict):
        return '"parameters" must be an object'
    if method == "logistic4":
        b = [p.get(k) for k in ("b1", "b2", "b3", "b4")]
        if not _finite_list(b, 4) or not b[3] > 0:
            return 'logistic4 "parameters" must be finite numbers b1, b2, b3 and b4 > 0'
        return None
    x, y = p.get("scores"), p.get("mos")
    if not (_finite_list(x, 1) and _finite_list(y, 1) and len(x) == len(y)):
        return 'isotonic "parameters" must be lists "scores" and "mos" of finite numbers, as many of each'
    dx, dy = np.diff(x), np.diff(y)
    if not (dx > 0).all() or not ((dy >= 0).all() or (dy <= 0).all()):
        return 'isotonic knots must have strictly increasing "scores" and monotone "mos"'
    return None


def _file_problem(d: Any) -> str | None:
    """What is wrong with a parsed calibration file, or None."""
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        return f'not a gamma-iqa calibration file (no "format": "{FORMAT}")'
    if d.get("version") != VERSION:
        return f"version {d.get('version')!r}; this gamma-iqa reads version {VERSION}"
    model = d.get("model")
    sha = model.get("parameters_sha256") if isinstance(model, dict) else None
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        return '"model" must give the model\'s "parameters_sha256" (64 hex digits)'
    return _parameter_problem(d.get("method"), d.get("parameters"))


def calibration_file(path: str | os.PathLike[str]) -> Path:
    """The calibration file `path` names: itself, or for a folder (a model or run folder) its `FILE_NAME`."""
    path = Path(path)
    return path / FILE_NAME if path.is_dir() else path


def load_calibration(path: str | os.PathLike[str]) -> Calibration:
    """A calibration file written by `Calibration.save` (`gamma-iqa calibrate --out`), or a folder holding one.

    Args:
        path: the file, or a folder (a model or run folder) holding it as `FILE_NAME` (calibration.json).

    Raises:
        FileNotFoundError: `path` is not a file, nor a folder holding `FILE_NAME` (one line saying which).
        CalibrationError: not JSON, not a calibration file, another version, or a malformed model or parameters (one
            line naming the file and what is wrong).
    """
    given, path = Path(path), calibration_file(path)
    if given.is_dir() and not path.is_file():
        raise FileNotFoundError(
            f"`calibration` {given}: is a folder without a {FILE_NAME}; give the calibration file that gamma-iqa "
            f"calibrate --out wrote, or a folder holding it as {FILE_NAME}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"`calibration` {path}: no such file")
    try:
        d = read_json(path)
    except ValueError as e:
        raise CalibrationError(f"`calibration` {path}: {e}") from None
    problem = _file_problem(d)
    if problem is not None:
        raise CalibrationError(f"`calibration` {path}: {problem}")
    return Calibration(
        method=d["method"],
        parameters=d["parameters"],
        model=d["model"],
        scene=d.get("scene"),
        crops=str(d.get("crops", "10")),
        seed=int(d.get("seed", 0)),
        labels=d.get("labels") or {},
        report=d.get("report") or {},
        path=path,
    )


# ---- fitting -----------------------------------------------------------------------------------------------------
def _pool_adjacent_violators(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots of the least-squares non-decreasing fit of y on x: (scores strictly increasing, fitted values).

    Written out (a dozen lines) because scipy is an optional extra whose `isotonic_regression` needs scipy 1.12, and
    scikit-learn is no dependency. Equal x are pooled first (weighted by their count); then each block that is below
    its left neighbour merges with it into their weighted mean until the values are non-decreasing. Of each block of
    equal fitted values only its first and last x stay as knots: joined linearly they give the same function.
    """
    order = np.argsort(x, kind="stable")
    ux, start, counts = np.unique(x[order], return_index=True, return_counts=True)  # start: into the sorted x
    sums = np.add.reduceat(y[order], start)
    blocks: list[list[float]] = []  # [value, weight, first index into ux, last index]
    for i, (s, w) in enumerate(zip(sums, counts, strict=True)):
        blocks.append([s / w, float(w), i, i])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v, w2, _, last = blocks.pop()
            b = blocks[-1]
            b[0], b[1], b[3] = (b[0] * b[1] + v * w2) / (b[1] + w2), b[1] + w2, last
    xs = [ux[i] for b in blocks for i in sorted({b[2], b[3]})]
    ys = [b[0] for b in blocks for _ in sorted({b[2], b[3]})]
    return np.array(xs), np.array(ys)


def _bounded_logistic(s: np.ndarray, y: np.ndarray, low: float, high: float, increasing: bool) -> np.ndarray:
    """(b1, b2, b3, b4) of a logistic with its asymptotes held at `low` and `high`, fitted on scores `s`, MOS `y`.

    With the asymptotes fixed, the logistic is linear in logit space: logit((y - b2) / (b1 - b2)) = (s - b3) / b4,
    so b3 and b4 come from a least-squares line (the labels lie strictly inside (low, high), so every logit is finite).

    Raises:
        ValueError: the line does not rise (the labels do not follow the scores' order at all).
    """
    b1, b2 = (high, low) if increasing else (low, high)
    p = (y - b2) / (b1 - b2)  # in (0, 1)
    slope, intercept = np.polyfit(s, np.log(p / (1 - p)), 1)
    if not slope > 0:
        raise ValueError("the labels do not follow the scores' order: no monotone map fits them (check the columns)")
    return np.array([b1, b2, -intercept / slope, 1 / slope])


def _logistic_parameters(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, str | None]:
    """The least-squares logistic's (b1, b2, b3, b4), held in range when it extrapolates far; and a note if held.

    Few labels can make the free fit put an asymptote far outside the labels' range (b1 = 57000 on a 1..5 scale): a
    near-linear stretch of a huge logistic. Then both asymptotes are held `_REACH` times the labels' range beyond them
    and the fit is made again (`_bounded_logistic`): an almost linear map, bounded there.
    """
    b = metrics.logistic4_parameters(s, y)
    lo, hi = float(y.min()), float(y.max())
    low, high = lo - _REACH * (hi - lo), hi + _REACH * (hi - lo)
    if low <= min(b[0], b[1]) and max(b[0], b[1]) <= high:
        return b, None
    far = b[0] if abs(b[0] - (lo + hi) / 2) >= abs(b[1] - (lo + hi) / 2) else b[1]
    cov = float(np.cov(s, y)[0, 1])
    increasing = cov > 0 if cov != 0 else bool(b[0] > b[1])  # the labels' direction; the free fit's on a tie
    note = (
        f"the logistic fit put an asymptote at {far:.4g}, far outside the labels' range {lo:.4g}..{hi:.4g}: "
        f"refitted with its range held to {low:.4g}..{high:.4g}"
    )
    return _bounded_logistic(s, y, low, high, increasing), note


STEP_WIDTH = 0.02  # a logistic whose width b4 is under this fraction of the fit scores' range is warned about: a step


def _step_note(b: np.ndarray, s: np.ndarray, y: np.ndarray) -> str | None:
    """A note when the fitted logistic is nearly a step, else None.

    Nearly a step: its width b4 under `STEP_WIDTH` of the fit scores' range, or the fit rows mapped to 3 or fewer
    distinct values (to 1e-6 of the labels' range). Such a map ties the images it saturates, so SRCC can change.
    """
    width = float(b[3])
    spread = float(s.max() - s.min())
    levels = len(np.unique(np.round(metrics.logistic4(s, b) / (1e-6 * float(np.ptp(y)) or 1.0))))
    if width >= STEP_WIDTH * spread and levels > 3:
        return None
    return (
        f"the logistic is nearly a step (width b4 {width:.3g}, {width / spread:.2%} of the scores' range "
        f"{spread:.3g}; the {len(s)} fit rows map to {levels} distinct values): it ties images and can change SRCC; "
        "label more images, or use `method` isotonic"
    )


def _fit_parameters(method: str, s: np.ndarray, y: np.ndarray) -> tuple[dict[str, Any], list[str]]:
    """The parameters of `method` fitted on scores `s` and MOS `y` (see `Calibration.parameters`), and notes."""
    notes = []
    if len(s) < MIN_ROWS:
        notes.append(f"fitted on {len(s)} rows, fewer than {MIN_ROWS}: label more images for a fit to rely on")
    if method == "logistic4":
        b, note = _logistic_parameters(s, y)
        notes += [note] if note else []
        notes += [step] if (step := _step_note(b, s, y)) else []
        return {k: float(v) for k, v in zip(("b1", "b2", "b3", "b4"), b, strict=True)}, notes
    increasing = metrics.srcc(s, y) >= 0  # DMOS-like labels: a non-increasing fit
    kx, ky = _pool_adjacent_violators(s, y if increasing else -y)
    # The pooled means to 12 significant digits: 4.435, not 4.4350000000000005 (rounding keeps them monotone).
    mos = [float(f"{v:.12g}") for v in (ky if increasing else -ky).tolist()]
    return {"scores": kx.tolist(), "mos": mos}, notes


def _check_varied(s: np.ndarray, y: np.ndarray, part: str = "") -> None:
    """Refuse labels of one MOS, or images of one score: there is no map between them to fit.

    Raises:
        ValueError: naming how many labels (of the `part`, e.g. " fit") and the one value.
    """
    if (y == y[0]).all():
        raise ValueError(
            f"all {len(y)}{part} labels have the same MOS ({float(y[0])}): a calibration needs labels that vary"
        )
    if (s == s[0]).all():
        raise ValueError(
            f"all {len(s)}{part} labelled images have the same score ({float(s[0]):.6g}): the model does not tell them "
            "apart, so no map from score to MOS can be fitted"
        )


def _measure(pred: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """SRCC, PLCC and RMSE of `pred` against `y` (None where undefined, e.g. a constant input)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.ConstantInputWarning)  # undefined: reported as None
        values = {"srcc": metrics.srcc(pred, y), "plcc": metrics.plcc(pred, y), "rmse": metrics.rmse(pred, y)}
    return {k: None if math.isnan(v) else v for k, v in values.items()}


def check_options(method: str, holdout: float) -> None:
    """Check a fit's `method` and `holdout` (before the images are scored).

    Raises:
        ValueError: an unknown `method`, or `holdout` outside [0, 1) (names the parameter).
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0 <= holdout < 1:
        raise ValueError(f"`holdout` must be a fraction in [0, 1), got {holdout}")


def check_rows(n: int, method: str, holdout: float, rows: str = "scored rows") -> None:
    """Refuse `n` rows too few to fit `method` on and to measure on the part `holdout` keeps out (before scoring).

    A fit needs `_MIN_FIT_ROWS` rows (logistic4 5, isotonic 2) and, with a holdout, 2 held-out rows; round(holdout n)
    rows are held out.

    Raises:
        ValueError: naming the rows (`rows`: "scored rows", "rows in the label CSV"), what the holdout leaves, and
            what is needed.
    """
    held = round(holdout * n)
    need = _MIN_FIT_ROWS[method]
    if n - held < need or (holdout > 0 and held < 2):
        raise ValueError(
            f"{n} {rows} are too few for `method` {method} with `holdout` {holdout}: it would fit on {n - held} and "
            f"hold out {held}; it needs at least {need} to fit{' and 2 held out' if holdout > 0 else ''}"
        )


def _split(n: int, holdout: float, seed: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows), index arrays in order: round(holdout n) rows drawn with `seed` are held out.

    Raises:
        ValueError: too few rows to fit `method` or to measure on the held-out rows (`check_rows`).
    """
    check_rows(n, method, holdout)
    held = np.sort(np.random.default_rng(seed).permutation(n)[: round(holdout * n)])
    return np.setdiff1d(np.arange(n), held), held


def fit_calibration(
    scores: Sequence[float],
    mos: Sequence[float],
    *,
    method: str = "logistic4",
    holdout: float = 0.2,
    seed: int = 0,
    **about: Any,
) -> Calibration:
    """Fit a monotone map from `scores` to `mos` on all but a held-out part, and measure it on both parts.

    Args:
        scores: the model's scores of the labelled images.
        mos: their labels, as many, on the user's own scale (either direction: DMOS gives a decreasing map).
        method: "logistic4" (4-parameter logistic, least squares) or "isotonic" (least-squares monotone steps,
            joined linearly between its knots).
        holdout: the fraction of rows held out of the fit and measured on (0: none; the report's `held_out` is None).
        seed: draws the held-out rows.
        **about: the Calibration's other fields (`model` is needed; `scene`, `crops`, `labels`).

    Returns:
        The calibration; its `report` has SRCC, PLCC and RMSE of the scores as they are ("before") and calibrated
        ("after") against the MOS, on the fit rows and on the held-out rows, and `notes`: the warnings below.

    Raises:
        ValueError: an unknown `method`, a bad `holdout`, scores and MOS of different lengths or not finite, too few
            rows, all MOS or all scores the same, or a logistic fit that fails (no convergence).

    Warns:
        UserWarning: one line, when the fit rows are fewer than `MIN_ROWS` (10), when the logistic is nearly a step
            (`_step_note`), or when the free logistic put an
            asymptote further than half the labels' range beyond them, so that it was refitted with its range held
            there (few labels: b1 = 57000 on a 1..5 scale, say). Also kept in the report's `notes`.
    """
    check_options(method, holdout)
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(mos, dtype=np.float64)
    if s.shape != y.shape or s.ndim != 1 or not (np.isfinite(s).all() and np.isfinite(y).all()):
        raise ValueError(f"scores and MOS must be as many finite numbers: got {s.shape} and {y.shape}")
    if len(s):
        _check_varied(s, y)
    fit, held = _split(len(s), holdout, seed, method)
    _check_varied(s[fit], y[fit], " fit")
    parameters, notes = _fit_parameters(method, s[fit], y[fit])
    if notes:
        _warn(f"`method` {method}: {'; '.join(notes)}")
    cal = Calibration(method, parameters, seed=seed, **about)
    report: dict[str, Any] = {"holdout": holdout, "notes": notes}
    for part, rows in (("fit", fit), ("held_out", held)):
        report[part] = (
            {"rows": len(rows), "before": _measure(s[rows], y[rows]), "after": _measure(cal.apply(s[rows]), y[rows])}
            if len(rows)
            else None
        )
    return dataclasses.replace(cal, report=report)


# ---- applying ----------------------------------------------------------------------------------------------------
def _loaded(calibration: str | os.PathLike[str] | Calibration) -> Calibration:
    """A Calibration as given, or read from its file.

    Raises:
        TypeError: neither a path nor a Calibration (a dict, say: one line naming `calibration`).
    """
    if not isinstance(calibration, (str, os.PathLike, Calibration)):
        raise TypeError(
            f"`calibration` must be a calibration file's path (or a Calibration), got {type(calibration).__name__}: "
            "write it with gamma-iqa calibrate --out, or fit one with fit_calibration"
        )
    return calibration if isinstance(calibration, Calibration) else load_calibration(calibration)


def score_columns(
    model: QualityModel,
    *,
    mos_scale: str | None = None,
    calibration: str | os.PathLike[str] | Calibration | None = None,
    scene: str | Sequence[str | None] | None = None,
    crops: Any = None,
) -> dict[str, Callable[[float], float]]:
    """The extra output columns asked for, as {column: map of a score}: `mos`, then `calibrated`; {} for neither.

    Args:
        model: the model scoring (a calibration must be fitted for it).
        mos_scale: a registered dataset: `mos` is the score on its MOS scale (`DatasetSpec.denormalise`).
        calibration: a calibration file (or one loaded): `calibrated` is the score through it.
        scene: the run's scene, or one per image (None: the model's default); a calibration fitted in another scene
            is warned about, since other prompts give other scores.
        crops: the run's crop mode, if known; another than the calibration's is warned about.

    Raises:
        ValueError: `mos_scale` is not a registered dataset.
        FileNotFoundError, CalibrationError: as `load_calibration`, or the calibration is for another model.
        TypeError: `model` is not a model (a name, say), `mos_scale` not a string, `calibration` not a path.

    Warns:
        UserWarning: `mos_scale` is a dataset of another scene than the images', or a calibration was fitted with
            another scene or crops (pointing at the caller's line).
    """
    require_model(model)
    columns: dict[str, Callable[[float], float]] = {}
    scenes = [scene] if scene is None or isinstance(scene, str) else list(scene)
    used = {s or model.config.default_scene for s in scenes}
    if mos_scale is not None:
        spec = mos_dataset(mos_scale)
        other = sorted(s for s in used if s != spec.scene)
        if other:
            _warn(
                f"`mos_scale` {spec.name} is a dataset of {spec.scene} images; these are scored as {', '.join(other)}: "
                "its MOS scale may not mean much for them"
            )
        columns[MOS_COLUMN] = spec.denormalise
    if calibration is not None:
        cal = _loaded(calibration)
        cal.check_model(model)
        _warn_unlike(cal, "scene", used)
        _warn_unlike(cal, "crops", set() if crops is None else {str(parse_crops(crops))})
        columns[CALIBRATED_COLUMN] = cal
    return columns


def describe_columns(columns: Mapping[str, Callable[[float], float]]) -> dict[str, str] | None:
    """What each extra column of `score_columns` comes from, for a run's provenance: None when there are none.

    `mos`: "mos scale DATASET"; `calibrated`: "calibration sha256:H", H the SHA-256 of the calibration's JSON content
    (sorted keys), so that a resumed output refuses rows made through another scale or calibration.
    """
    if not columns:
        return None
    out = {}
    for name, fn in columns.items():
        if isinstance(fn, Calibration):
            content = json.dumps(fn.to_dict(), sort_keys=True).encode()
            out[name] = f"calibration sha256:{hashlib.sha256(content).hexdigest()}"
        elif isinstance(getattr(fn, "__self__", None), DatasetSpec):
            out[name] = f"mos scale {fn.__self__.name}"
        else:
            out[name] = repr(fn)
    return out


def _warn_unlike(cal: Calibration, key: str, used: set[str]) -> None:
    """Warn when a run's `key` values (scene, crops) differ from those `cal` was fitted with."""
    fitted = getattr(cal, key)
    other = sorted(v for v in used if v != fitted)
    if fitted is not None and other:
        where = f" {cal.path}" if cal.path else ""
        _warn(f"`calibration`{where} was fitted on scores with {key} {fitted}; these have {key} {', '.join(other)}")
