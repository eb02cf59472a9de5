"""The runs behind `gamma-iqa score` and `gamma-iqa eval`, as library calls.

`run_score` scores into a row writer (with resume) and an HTML report of bounded size; `run_eval` evaluates into a
JSON or Markdown table, a predictions CSV and scatter plots.

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
from .report import DEFAULT_TOP, Report
from .results import format_markdown, plot_predictions, save_predictions
from .writers import RowWriter

__all__ = ["run_eval", "run_score"]


def _write_rows(
    rows_in: Iterable[ScoreRow],
    rows: RowWriter,
    report: Report | None,
    on_error: Callable[[ScoreRow], None] | None,
) -> bool:
    """Write each row as it comes (and count it into `report`); returns whether any failed.

    An exception or a Ctrl-C (KeyboardInterrupt) passes through once the rows written so far are closed on disk.
    """
    failed = False
    with rows:
        for row in rows_in:
            rows.write(row)
            if report is not None:
                report.add(row)
            if row.error:
                failed = True
                if on_error is not None:
                    on_error(row)
    return failed


def _sources(entries: Sequence[Entry], names: set[str]) -> dict[str, Any]:
    """What each of `names` is read from (an entry's source), for the report's thumbnails."""
    return {e.name: e.source for e in entries if e.name in names and e.source is not None}


def run_score(
    model: QualityModel,
    entries: Sequence[Entry],
    rows: RowWriter,
    *,
    html: str | os.PathLike[str] | None = None,
    html_top: int = DEFAULT_TOP,
    model_name: str | None = None,
    distributed: bool = False,
    on_error: Callable[[ScoreRow], None] | None = None,
    **options: Any,
) -> bool:
    """Score `entries` into `rows` as they finish (on resume only the entries `rows` still lacks), and the report.

    Args:
        model: the model scoring, on its device.
        entries: what to score, in output order.
        rows: an unopened row writer (see `open_rows`); this call opens and closes it, also when interrupted (its
            `written` and `failed` then count this call's rows).
        html: also write a self-contained HTML page here, once every entry has its row: it counts every row of the
            output (on resume also the rows written before) and shows the images as `Report` does.
        html_top: the page shows every image of a run with at most twice this many scored, else the `html_top` best
            and the `html_top` worst (memory and page size do not grow with the run).
        model_name: the model as the report names it; default its config's name.
        distributed: inside a torchrun group, split the entries across its ranks; every rank calls this with the
            same arguments and rank 0 writes the rows and the report.
        on_error: called with each failed row, as it is written.
        **options: the Scorer's options (crops, seed, batch_size, workers, dtype, progress).

    Returns:
        Whether any entry of this call failed (on every rank).

    Raises:
        ValueError: a bad Scorer option or `html_top` (names the parameter); a resumed output that is not a file of
            score rows.
        FileNotFoundError: the folder of `html` does not exist (before any scoring).
        KeyboardInterrupt: passed on after the rows written so far are complete on disk (no report is written).
    """
    report = Report(html_top) if html else None
    if html and not Path(html).resolve().parent.is_dir():  # found before the work, not after it
        raise FileNotFoundError(f"`html` {html}: folder {Path(html).resolve().parent} does not exist")
    scorer = Scorer(model, distributed=distributed, **options)
    rank, world = scorer.shard
    todo = rows.remaining(entries)
    failed = False
    if rank == 0:
        if report is not None:
            for done in rows.existing():  # the page covers the whole output file, not only this call's part
                report.add(done)
        failed = _write_rows(scorer.run(todo), rows, report, on_error)
        if report is not None and html:
            sources = _sources(entries, report.names())
            report.write(html, model=model_name or model.config.name, score_range=model.score_range, sources=sources)
    else:
        for _ in scorer.run(todo):  # the other ranks score their share; the rows all arrive on rank 0
            pass
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
