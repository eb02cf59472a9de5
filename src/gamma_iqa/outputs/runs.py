"""The runs behind `gamma-iqa score`, `eval` and `calibrate`, as library calls.

`run_score` scores into a row writer (with resume) and an HTML report of bounded size; `run_eval` evaluates into a
JSON or Markdown table, a predictions CSV and scatter plots; `run_calibrate` scores a user's labelled images and fits
a calibration file (engine/calibration.py).

The command line only parses its arguments into these calls; a Python caller gets the same files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import torch.distributed as dist

from ..data.datasets import DatasetSpec
from ..data.inputs import Entry
from ..data.readers import read_folder_csv
from ..engine.calibration import (
    Calibration,
    calibration_file,
    check_options,
    check_rows,
    describe_columns,
    fit_calibration,
)
from ..engine.evaluate import DatasetResult, evaluate
from ..engine.maps import DEFAULT_STRIDE, check_pixels
from ..engine.scoring import Scorer, ScoreRow
from ..models.base import QualityModel, require_model
from ..models.state import file_sha256, state_sha256
from .maps import map_paths, require_matplotlib, write_maps
from .provenance import collect, read_provenance, settings_of, sidecar, utc_now, write_provenance
from .report import DEFAULT_TOP, Report
from .results import format_markdown, plot_predictions, save_predictions
from .writers import RowWriter

__all__ = ["run_calibrate", "run_eval", "run_score"]


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


def _provenance(
    model: QualityModel,
    entries: Sequence[Entry],
    rows: RowWriter,
    model_name: str | None,
    command: Sequence[str] | None,
    processes: int,
    options: dict[str, Any],
) -> dict[str, Any]:
    """The run's provenance record; on resume it must have the settings of the record beside the output.

    Raises:
        ValueError: on resume, the output's record has other settings (names `resume` and what differs).
    """
    scenes = [e.scene or model.config.default_scene for e in entries]
    record = collect(
        model,
        model_argument=model_name,
        scenes=scenes,
        crops=options.get("crops", 10),
        seed=options.get("seed", 0),
        dtype=options.get("dtype", "fp32"),
        details=options.get("details", False),
        fmt=rows.fmt,
        processes=processes,
        command=command,
        columns=describe_columns(options.get("columns") or {}),
    )
    if rows.resume and rows.output is not None and sidecar(rows.output).is_file():
        before = read_provenance(rows.output)
        then, now = settings_of(before), settings_of(record)
        changed = [k for k in now if then[k] != now[k]]
        if changed:
            raise ValueError(
                f"`resume`: the rows in {rows.output} were scored with other {', '.join(changed)} (see "
                f"{sidecar(rows.output)}); resume with the first run's settings, or write a new `output`"
            )
        record["started"] = before.get("started", record["started"])
    return record


def _score_and_record(
    scorer: Scorer,
    todo: Sequence[Entry],
    rows: RowWriter,
    report: Report | None,
    on_error: Callable[[ScoreRow], None] | None,
    record: dict[str, Any],
    kept: int,
) -> bool:
    """Rank 0's part of `run_score`: the rows, the report's counts and the provenance; whether any row failed.

    `kept` entries have their rows already (resume): the progress counts them as done.

    The provenance goes beside a file output before the rows and again after them; an interrupted run leaves it with
    `finished` null.
    """
    if rows.output is not None:
        write_provenance(sidecar(rows.output), record)
    if report is not None:
        for done in rows.existing():  # the page covers the whole output file, not only this call's part
            report.add(done)
    failed = _write_rows(scorer.run(todo, done=kept), rows, report, on_error)
    record["finished"] = utc_now()
    if rows.output is not None:
        write_provenance(sidecar(rows.output), record)
    return failed


def _check_targets(entries: Sequence[Entry], output: Path | None, html: str | os.PathLike[str] | None) -> None:
    """Refuse, before anything is written, an output or report file that is an input image or the other file.

    Raises:
        ValueError: `output` or `html` resolves to one of the image files of `entries` (writing would destroy it), or
            both name one file (the page would replace the rows).
    """
    targets = {name: Path(path).resolve() for name, path in (("output", output), ("html", html)) if path}
    if len(targets) == 2 and targets["output"] == targets["html"]:
        raise ValueError(f"`output` and `html` are one file, {output}: give each its own file")
    inputs = {Path(e.source).resolve() for e in entries if isinstance(e.source, (str, os.PathLike))}
    for name, target in targets.items():
        if target in inputs:
            raise ValueError(f"`{name}` {target} is one of the images to score: writing it would destroy the image")


def _check_maps(map_dir: str | os.PathLike[str] | None, map_stride: int) -> None:
    """Refuse, before any scoring, maps that cannot be drawn.

    Raises:
        ValueError: `map_stride` not an int >= 1, `map_dir` an existing file, or matplotlib missing (naming the extra).
    """
    if map_dir is None:
        return
    check_pixels(map_stride, "map_stride")
    if Path(map_dir).exists() and not Path(map_dir).is_dir():
        raise ValueError(f"`map_dir` {map_dir} is a file, not a folder")
    try:
        require_matplotlib()
    except ImportError as e:
        raise ValueError(f"`map_dir`: {e}") from None


def _noting(bad: set[int], on_error: Callable[[ScoreRow], None] | None) -> Callable[[ScoreRow], None]:
    """`on_error`, also adding each failed row's index to `bad`."""

    def note(row: ScoreRow) -> None:
        bad.add(row.index)
        if on_error is not None:
            on_error(row)

    return note


def _draw_maps(
    model: QualityModel,
    entries: Sequence[Entry],
    todo: Sequence[Entry],
    failed: set[int],
    map_dir: str | os.PathLike[str],
    on_error: Callable[[ScoreRow], None] | None,
    shard: tuple[int, int],
    **options: Any,
) -> tuple[dict[str, Path], bool]:
    """The maps of this call's scored entries (`todo` less the positions in `failed`), named over all `entries`.

    Every rank of a torchrun group calls this and draws its share (`shard` is (rank, world size); rank 0 knows
    `failed` and tells the others), so no rank waits alone for a long while in a collective.

    Returns:
        ({path: PNG} for the report: the maps drawn now, and on resume those an earlier call drew; whether any map
        failed (each failure went to `on_error` on rank 0).
    """
    rank, world = shard
    if world > 1:
        box = [failed]
        dist.broadcast_object_list(box, src=0)
        failed = box[0]
    at: list[int] = []  # the position in `entries` of each of `todo` (an ordered subsequence of them)
    for i, e in enumerate(entries):
        if len(at) < len(todo) and todo[len(at)] is e:
            at.append(i)
    draw = [i for j, i in enumerate(at) if j not in failed][rank::world]
    missed: list[ScoreRow] = []
    drawn = write_maps(model, entries, map_dir, draw=draw, on_error=missed.append, **options)
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, (drawn, missed))
        drawn = {name: path for part, _ in reversed(gathered) for name, path in part.items()}  # rank 0's last: wins
        missed = sorted((row for _, part in gathered for row in part), key=lambda row: row.index)
    for row in missed if rank == 0 and on_error is not None else []:
        on_error(row)
    now = set(at)
    paths = map_paths(entries, map_dir)
    earlier = {e.name: paths[i] for i, e in enumerate(entries) if i not in now and paths[i].is_file()}
    return {**earlier, **drawn}, bool(missed)


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
    command: Sequence[str] | None = None,
    map_dir: str | os.PathLike[str] | None = None,
    map_stride: int = DEFAULT_STRIDE,
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
        model_name: the model as the report and the provenance name it (a registered name or a checkpoint path,
            which `gamma-iqa score --check` makes the model from again); default its config's name.
        distributed: inside a torchrun group, split the entries across its ranks; every rank calls this with the
            same arguments and rank 0 writes the rows and the report.
        on_error: called with each failed row, as it is written.
        command: the command line's arguments, recorded in the provenance.
        map_dir: also draw each scored image's quality map (outputs/maps.py) into this folder (created), once every
            entry has its row, on rank 0; the HTML page shows them. A map that fails goes to `on_error` and the
            run goes on (it counts as a failure in the result).
        map_stride: pixels between the maps' windows.
        **options: the Scorer's options (crops, seed, batch_size, workers, dtype, progress, details, columns). With
            `details` the writer must write the detail columns (`open_rows(..., details=True)`), with `columns`
            (`calibration.score_columns`) those columns (`open_rows(..., columns=...)`).

    The run's provenance (see outputs/provenance.py) goes to `OUTPUT.provenance.json` beside a file output (written
    when the run starts, and again with its `finished` time when it ends) and into the HTML page.

    Returns:
        Whether any entry of this call failed (on every rank).

    Raises:
        ValueError: a bad Scorer option, `html_top` or `map_stride`, a `map_dir` that is a file or matplotlib missing
            for it (names the parameter); a resumed output that is not a file of score rows, or whose rows have other
            columns or whose provenance has other settings; `details` or `columns` with a writer without those columns.
        FileNotFoundError: the folder of `html` does not exist (before any scoring).
        KeyboardInterrupt: passed on after the rows written so far are complete on disk (no report is written).
    """
    _check_targets(entries, rows.output, html)
    _check_maps(map_dir, map_stride)
    report = Report(html_top) if html else None
    if html and not Path(html).resolve().parent.is_dir():  # found before the work, not after it
        raise FileNotFoundError(f"`html` {html}: folder {Path(html).resolve().parent} does not exist")
    scorer = Scorer(model, distributed=distributed, **options)
    if scorer.details and "spread" not in rows.fields:
        raise ValueError("`details` needs a writer of the detail columns: open_rows(..., details=True)")
    if not set(scorer.columns) <= set(rows.fields):
        raise ValueError(f"`columns` {', '.join(scorer.columns)} need a writer of them: open_rows(..., columns=...)")
    rank, world = scorer.shard
    todo = rows.remaining(entries)
    failed = False
    bad: set[int] = set()  # positions in `todo` of the rows that failed (known on rank 0): they get no map
    record: dict[str, Any] | None = None
    if rank == 0:
        used = {**options, "dtype": scorer.dtype}  # the precision scored in (bf16 may fall back to fp32 on a CPU)
        record = _provenance(model, entries, rows, model_name, command, world, used)
        record["backend"] = scorer.backend  # torch, or onnxruntime with its version (the scores agree to ~1e-6)
        noted = _noting(bad, on_error) if map_dir is not None else on_error
        failed = _score_and_record(scorer, todo, rows, report, noted, record, len(entries) - len(todo))
    else:
        for _ in scorer.run(todo):  # the other ranks score their share; the rows all arrive on rank 0
            pass
    maps: dict[str, Path] = {}
    if map_dir is not None:
        dtype = scorer.dtype
        maps, missed = _draw_maps(
            model, entries, todo, bad, map_dir, on_error, (rank, world), stride=map_stride, dtype=dtype
        )
        failed = failed or missed
    if rank == 0 and report is not None and html:
        sources = _sources(entries, report.names())
        name = model_name or model.config.name
        report.write(html, model=name, score_range=model.score_range, sources=sources, provenance=record, maps=maps)
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
        **options: `evaluate`'s options (split, crops, seed, batch_size, workers, meta_dir, progress, show_progress).

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


def run_calibrate(
    model: QualityModel,
    csv: str | os.PathLike[str],
    *,
    images: str | os.PathLike[str] | None = None,
    image_column: str = "image",
    mos_column: str = "mos",
    scene: str | None = None,
    method: str = "logistic4",
    holdout: float = 0.2,
    out: str | os.PathLike[str] | None = None,
    model_name: str | None = None,
    on_error: Callable[[ScoreRow], None] | None = None,
    **options: Any,
) -> Calibration:
    """Score the labelled images of a CSV and fit a calibration from score to MOS (`calibration.fit_calibration`).

    The images are scored as `gamma-iqa score` scores them (same crops, seed, scene); images that cannot be read are
    left out of the fit (`on_error` gets their rows) and counted in the file's `labels`.

    Args:
        model: the model the calibration is for, on its device.
        csv: the label CSV (as `eval --dataset folder+csv` reads it): an image column of paths relative to
            `images`, a MOS column on the user's own scale (either direction).
        images: the folder the image paths are relative to; default the CSV's folder.
        image_column: the CSV's column of image paths.
        mos_column: the CSV's column of MOS values.
        scene: the scene the images are scored in (None: the model's default).
        method: "logistic4" or "isotonic".
        holdout: the fraction of scored rows held out of the fit and measured on.
        out: write the calibration file here (a folder: its calibration.json; None: not written).
        model_name: what the model was made from (a registered name or a checkpoint path), recorded in the file.
        on_error: called with each row that could not be scored.
        **options: the Scorer's options (crops, seed, batch_size, workers, dtype, progress); `seed` also draws the
            held-out rows.

    Returns:
        The calibration (its `path` is `out` when written).

    Raises:
        TypeError: `model` is not a model (a name, say).
        FileNotFoundError: `csv` is not a file, `images` is not a folder, or `out`'s folder does not exist.
        LabelFileError: a malformed label CSV (a ValueError).
        ValueError: a bad Scorer option, `method` or `holdout`, an unknown `scene`, too few rows in the CSV for the
            holdout (before scoring), or too few images scored to fit.
    """
    require_model(model)
    check_options(method, holdout)
    if out is not None and not calibration_file(out).parent.is_dir():  # before the scoring, not after it
        raise FileNotFoundError(f"`out` {out}: no folder {calibration_file(out).parent} to write it in")
    root = Path(csv).resolve().parent if images is None else Path(images)
    if not root.is_dir():
        raise FileNotFoundError(f"`images` {root}: no such folder")
    labels = read_folder_csv(root, Path(csv), image_column, mos_column)
    check_rows(len(labels.items), method, holdout, rows="rows in the label CSV")  # known before any scoring
    model.prompt_key(scene)  # an unknown scene fails before any scoring
    entries = [Entry(image, root / image, scene) for image, _ in labels.items]
    scorer = Scorer(model, **options)
    scores, mos = [], []
    for row, (_, label) in zip(scorer.run(entries), labels.items, strict=True):
        if row.error is not None:
            if on_error is not None:
                on_error(row)
            continue
        scores.append(row.score)
        mos.append(label)
    about = {
        "model": {
            "name": model.config.name,
            "argument": model_name or model.config.name,
            "parameters_sha256": state_sha256(model),
        },
        "scene": scene or model.config.default_scene,
        "crops": str(scorer.crops),
        "labels": {
            "file": str(csv),
            "sha256": file_sha256(csv),
            "image_column": image_column,
            "mos_column": mos_column,
            "rows": len(labels.items),
            "scored": len(scores),
            "failed": len(labels.items) - len(scores),
        },
    }
    cal = fit_calibration(scores, mos, method=method, holdout=holdout, seed=scorer.seed, **about)
    if out is not None:
        cal = dataclasses.replace(cal, path=cal.save(out))
    return cal
