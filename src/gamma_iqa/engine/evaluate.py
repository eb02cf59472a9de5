"""Evaluation with the paper's protocol (gamma.md §10).

Per dataset, the test part of a split (own data without a split column of its own: every labelled image, unless a
split is asked for), each image scored as the mean of N random crops (seeded per image, as
`score`), against the normalised MOS: SRCC, raw PLCC, KRCC, plus PLCC after a logistic fit and RMSE. Missing or
unreadable images are counted and listed, not fatal, unless none of a dataset's test images can be found (then the
data root is wrong, and that is an error before any scoring).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .. import metrics
from ..data.datasets import DatasetSpec, Record, SplitFile, get_dataset, load_splits, select
from ..data.inputs import Entry
from ..data.transforms import Crops
from ..models.base import QualityModel
from .progress import Progress
from .scoring import Scorer

__all__ = ["DatasetResult", "evaluate"]


@dataclass
class DatasetResult:
    """The evaluation of one dataset's test part: correlations with the normalised MOS, and what could not be read.

    The correlations are NaN when they are undefined (fewer than two scored images, or a constant input); `rmse` is
    in the units of the normalised MOS, [0, 1].
    """

    dataset: str
    split: int | None  # None: every labelled image (own data without a split column)
    n: int  # test images scored
    missing: int  # test images missing or unreadable
    srcc: float
    plcc: float
    krcc: float
    plcc_logistic: float
    rmse: float
    errors: list[tuple[str, str]] = field(default_factory=list)  # (image, why)
    predictions: list[tuple[str, float, float, float]] = field(default_factory=list)  # (image, mos, mos_norm, score)

    def as_dict(self) -> dict[str, object]:
        """The summary as JSON-ready values: NaN becomes None, and `missing_images` lists the unread images.

        Returns:
            The fields from `dataset` to `rmse`, and `missing_images`; no per-image predictions.
        """
        keys = ("dataset", "split", "n", "missing", "srcc", "plcc", "krcc", "plcc_logistic", "rmse")
        d: dict[str, object] = {k: getattr(self, k) for k in keys}
        d.update({k: None for k in keys if isinstance(d[k], float) and math.isnan(d[k])})  # JSON has no NaN
        d["missing_images"] = [image for image, _ in self.errors]
        return d


@dataclass(frozen=True)
class _Plan:
    spec: DatasetSpec
    split: int | None  # None: every record
    present: list[Record]
    absent: list[Record]
    source: SplitFile


def _plan(spec: DatasetSpec, data_root: str | os.PathLike[str], split: int | None, meta_dir: str | None) -> _Plan:
    source = load_splits(spec, data_root, meta_dir=meta_dir)
    if split is None and not (spec.label_file is not None and source.drawn):
        split = 1  # the paper's protocol; own data without a split column of its own keeps None: every image
    chosen = source.records if split is None else select(source.records, split, "test", name=spec.name)
    if not chosen:
        raise ValueError(f"{spec.name}: split {split} has no test images")
    present = [r for r in chosen if r.path.is_file()]
    if not present:
        which = "labelled" if split is None else "test"
        raise FileNotFoundError(
            f"{spec.name}: none of its {len(chosen)} {which} images is in {source.folder} (e.g. {chosen[0].image}): "
            "check `data_root`"
        )
    return _Plan(spec, split, present, [r for r in chosen if not r.path.is_file()], source)


def _describe(plan: _Plan) -> str:
    """One line: what is scored, from which split file."""
    spec, source = plan.spec, plan.source
    counts = f"{len(plan.present)} images ({len(plan.absent)} missing)"
    if plan.split is None:
        what = (
            f"scoring all {counts} of {spec.label_file.name if spec.label_file else spec.name}: it has no split "
            "column, `split` K scores the test part of random split K instead"
        )
    else:
        what = f"scoring {counts} of the test part of split {plan.split}"
    where = f"split file {source.path} ({source.state})" if source.path else "no split file (could not write one)"
    return f"{spec.name}: {what}; {where}"


def _score(
    model: QualityModel, plan: _Plan, crops: Crops, seed: int, batch_size: int, workers: int, show: bool
) -> list[float | str]:
    """Per present record: its score, or why it could not be read (the scoring engine of `gamma-iqa score`).

    With `show`, the images' progress goes to stderr (`Progress`), and a summary line after a long run.
    """
    entries = [Entry(r.image, r.path, plan.spec.scene, resize=plan.spec.resize) for r in plan.present]
    scorer = Scorer(model, crops=crops, seed=seed, batch_size=batch_size, workers=workers, distributed=False)
    progress = Progress(len(entries), desc=f"eval {plan.spec.name}", unit="image", enabled=show)
    scores: list[float | str] = []
    try:
        for row in scorer.run(entries):
            scores.append(row.error if row.error is not None else row.score)
            progress.update()
        progress.finish()
    finally:
        progress.close()
    return scores


def _result(plan: _Plan, scores: list[float | str]) -> DatasetResult:
    errors = [(r.image, "no such file") for r in plan.absent]
    preds = []
    for r, s in zip(plan.present, scores, strict=True):
        if isinstance(s, str):
            errors.append((r.image, s))
        else:
            preds.append((r.image, r.mos, r.mos_norm, s))
    p = [row[3] for row in preds]
    y = [row[2] for row in preds]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", metrics.ConstantInputWarning)
        values = (metrics.srcc(p, y), metrics.plcc(p, y), metrics.krcc(p, y), metrics.plcc_logistic(p, y))
    for w in caught:  # say which dataset a NaN belongs to
        warnings.warn(f"{plan.spec.name}: {w.message}", w.category, stacklevel=3)
    rmse = metrics.rmse(p, y) if p else float("nan")
    return DatasetResult(plan.spec.name, plan.split, len(preds), len(errors), *values, rmse, errors, preds)


def evaluate(
    model: QualityModel,
    datasets: Sequence[str | DatasetSpec],
    data_root: str | os.PathLike[str],
    *,
    split: int | None = None,
    crops: Crops = 10,
    seed: int = 0,
    batch_size: int = 8,
    workers: int = 2,
    meta_dir: str | None = None,
    progress: Callable[[str], None] | None = None,
    show_progress: bool = False,
) -> list[DatasetResult]:
    """Score the test part of split `split` of each dataset and compare with its normalised MOS.

    Own data (`folder_csv_dataset`) whose label file has no split column is scored on every labelled image unless
    `split` is given (then: the test part of that random 80/20 split, as for a registered dataset).

    Every dataset is located and its labels and splits read before any scoring, so a wrong name, folder or split
    fails at once. Crops are `crops` random `model.image_size` crops per image (or "center" / "none").

    Args:
        model: The model to evaluate, in this process (no torchrun split).
        datasets: Registered dataset names or specs, evaluated in this order.
        data_root: The folder that holds each dataset's own folder.
        split: Which of the dataset's train/test splits (1-based); None: split 1, or every image of own data
            without a split column.
        crops: Random crops per image, "center" or "none"; a score is the mean over the crops.
        seed: Seed of the random crops (with each image's pixels).
        batch_size: Images decoded per loader batch; scores do not depend on it.
        workers: DataLoader worker processes for decoding.
        meta_dir: Folder of the split files (default: the dataset's folder, else $GAMMA_IQA_HOME/meta).
        progress: Called with one line per dataset before it is scored: what is scored, and the split file read,
            written or rebuilt.
        show_progress: Show the images scored so far on stderr: a bar on a terminal, else a line with the count,
            rate and time left at most once a minute (`engine.progress`).

    Returns:
        One result per dataset, in the order of `datasets`.

    Raises:
        ValueError: An unknown dataset name, or a split out of range or without test images.
        LabelFileError: A malformed own label file or split file (a ValueError; the one-line message names the file,
            the line and what was expected).
        FileNotFoundError: None of a dataset's test images is under `data_root`, or an own label file is missing.
    """
    specs = [d if isinstance(d, DatasetSpec) else get_dataset(d) for d in datasets]
    plans = [_plan(spec, data_root, split, meta_dir) for spec in specs]
    results = []
    for plan in plans:
        if progress:
            progress(_describe(plan))
        results.append(_result(plan, _score(model, plan, crops, seed, batch_size, workers, show_progress)))
    return results
