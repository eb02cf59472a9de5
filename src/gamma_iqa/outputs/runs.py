"""The runs behind `gamma-iqa score` and `gamma-iqa eval`, as library calls.

`run_score` scores into a row writer (with resume) and an HTML report; `run_eval` evaluates into a JSON or Markdown
table, a predictions CSV and scatter plots.

The command line only parses its arguments into these calls; a Python caller gets the same files.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import torch.distributed as dist

from ..data.datasets import DatasetSpec
from ..data.inputs import Entry
from ..engine.evaluate import DatasetResult, evaluate
from ..engine.scoring import Scorer, ScoreRow
from ..models.base import QualityModel
from .report import write_html
from .results import format_markdown, plot_predictions, save_predictions
from .writers import RowWriter

__all__ = ["run_eval", "run_score"]


def _write_rows(
    rows_in: Iterable[ScoreRow], rows: RowWriter, keep: bool, on_error: Callable[[ScoreRow], None] | None
) -> tuple[list[ScoreRow], bool]:
    """Write each row as it comes; returns the rows kept for the report (when `keep`) and whether any failed."""
    kept, failed = [], False  # rows are kept only for the HTML page: a million-image run streams
    with rows:
        for row in rows_in:
            rows.write(row)
            if keep:
                kept.append(row)
            if row.error:
                failed = True
                if on_error is not None:
                    on_error(row)
    return kept, failed


def run_score(
    model: QualityModel,
    entries: Sequence[Entry],
    rows: RowWriter,
    *,
    html: str | os.PathLike[str] | None = None,
    model_name: str | None = None,
    distributed: bool = False,
    on_error: Callable[[ScoreRow], None] | None = None,
    **options: Any,
) -> bool:
    """Score `entries` into `rows` as they finish (on resume only the entries `rows` still lacks), and the report.

    Args:
        model: the model scoring, on its device.
        entries: what to score, in output order.
        rows: an unopened row writer (see `open_rows`); this call opens and closes it.
        html: also write a self-contained HTML page of the rows here.
        model_name: the model as the report names it; default its config's name.
        distributed: inside a torchrun group, split the entries across its ranks; every rank calls this with the
            same arguments and rank 0 writes the rows and the report.
        on_error: called with each failed row, as it is written.
        **options: the Scorer's options (crops, seed, batch_size, workers, dtype, progress).

    Returns:
        Whether any entry failed (on every rank).

    Raises:
        ValueError: a bad Scorer option (names the parameter).
        FileNotFoundError: the folder of `html` does not exist (before any scoring).
    """
    if html and not Path(html).resolve().parent.is_dir():  # found before the work, not after it
        raise FileNotFoundError(f"`html` {html}: folder {Path(html).resolve().parent} does not exist")
    scorer = Scorer(model, thumbnails=bool(html), distributed=distributed, **options)
    rank, world = scorer.shard
    todo = rows.remaining(entries)
    if rank == 0:
        kept, failed = _write_rows(scorer.run(todo), rows, bool(html), on_error)
        if html:
            write_html(kept, html, model=model_name or model.config.name, score_range=model.score_range)
    else:
        for _ in scorer.run(todo):  # the other ranks score their share; the rows all arrive on rank 0
            pass
        failed = False
    if world > 1:
        flag = [failed]
        dist.broadcast_object_list(flag, src=0)
        failed = flag[0]
    return failed


def run_eval(
    model: QualityModel,
    datasets: Sequence[str | DatasetSpec],
    data_root: str | os.PathLike[str],
    *,
    out: TextIO | None = None,
    fmt: str = "json",
    predictions: str | os.PathLike[str] | None = None,
    plot: str | os.PathLike[str] | None = None,
    **options: Any,
) -> list[DatasetResult]:
    """Evaluate `model` on `datasets` (see `evaluate`) and write the results.

    Args:
        model: the model evaluated, on its device.
        datasets: registered names or specs (a user's own: `user_dataset`).
        data_root: the folder holding one folder per dataset.
        out: where the table goes; default stdout.
        fmt: `json` (one object per dataset) or `md` (a Markdown table beside the paper's numbers).
        predictions: also write dataset,image,mos,mos_norm,prediction rows to this CSV.
        plot: also write a predicted-vs-MOS scatter PNG per dataset into this folder (created).
        **options: `evaluate`'s options (split, crops, seed, batch_size, workers, meta_dir, progress).

    Returns:
        One result per dataset, in order; images that could not be read are in each result's `errors`.

    Raises:
        ValueError: an unknown `fmt`, or as `evaluate`.
        FileNotFoundError: as `evaluate`.
    """
    if fmt not in ("json", "md"):
        raise ValueError(f"`fmt` must be json or md, got {fmt!r}")
    results = evaluate(model, datasets, data_root, **options)
    out = sys.stdout if out is None else out
    if fmt == "md":
        out.write(format_markdown(results, model.config.name))
    else:
        json.dump([r.as_dict() for r in results], out, indent=1)
        out.write("\n")
    if predictions:
        save_predictions(results, predictions)
    if plot:
        Path(plot).mkdir(parents=True, exist_ok=True)
        for r in results:
            plot_predictions(r, Path(plot) / f"{r.dataset.replace('+', '-')}.png")
    return results
