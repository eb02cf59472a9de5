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
import tempfile
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import torch.distributed as dist

from ..data.datasets import DatasetSpec
from ..data.inputs import Entry
from ..data.readers import read_folder_csv
from ..engine.calibration import FORMAT as CALIBRATION_FORMAT
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
from .maps import SCALES, draw_map, map_paths, require_matplotlib, write_maps
from .provenance import collect, read_provenance, settings_of, sidecar, utc_now, write_provenance
from .report import DEFAULT_TOP, PAGE_MARK, Report
from .results import format_markdown, plot_predictions, save_predictions
from .writers import RowWriter

__all__ = ["check_file_target", "check_folder_target", "run_calibrate", "run_eval", "run_score"]


def _write_rows(
    rows_in: Iterable[ScoreRow],
    rows: RowWriter,
    report: Report | None,
    on_error: Callable[[ScoreRow], None] | None,
    after: Callable[[ScoreRow], None] | None = None,
) -> bool:
    """Write each row as it comes (and count it into `report`, then call `after`); returns whether any failed.

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
            if after is not None:
                after(row)
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
    backend: dict[str, Any],
) -> dict[str, Any]:
    """The run's provenance record; on resume it must have the settings and forward of the record beside the output.

    Raises:
        ValueError: on resume, the output's record has other settings, or another backend or compile mode (whose
            scores differ in their last bits: a resumed file would mix them); names `resume` and what differs.
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
    calibration = _calibration_files(options)
    if calibration:  # where `score --check` finds it again, and its SHA-256 to tell a file recalibrated in place
        path = Path(calibration[0]).resolve()
        record["calibration"] = {"file": str(path), "sha256": file_sha256(path)}
    if rows.resume and rows.output is not None and sidecar(rows.output).is_file():
        before = read_provenance(rows.output)
        then, now = settings_of(before), settings_of(record)
        changed = [k for k in now if then[k] != now[k]]
        if changed:
            raise ValueError(
                f"`resume`: the rows in {rows.output} were scored with other settings ({', '.join(changed)}; see "
                f"{sidecar(rows.output)}); resume with the first run's settings, or write a new `output`"
            )
        then_forward, now_forward = _forward(before.get("backend")), _forward(backend)
        if then_forward != now_forward:
            raise ValueError(
                f"`resume`: the rows in {rows.output} were scored with {then_forward}, this call scores with "
                f"{now_forward}; resume with the first run's `backend` and `compile`, or write a new `output`"
            )
        record["started"] = before.get("started", record["started"])
    record["backend"] = backend  # torch, or onnxruntime with its version (the scores agree to ~1e-6); compile mode
    return record


def _forward(backend: dict[str, Any] | None) -> str:
    """What computed a record's scores, in words: its backend and compile mode (a record before either: torch)."""
    backend = backend or {"name": "torch"}
    mode = backend.get("compile")
    return f"backend {backend.get('name', 'torch')}" + (f" compiled ({mode})" if mode else "")


def _score_and_record(
    scorer: Scorer,
    todo: Sequence[Entry],
    rows: RowWriter,
    report: Report | None,
    on_error: Callable[[ScoreRow], None] | None,
    record: dict[str, Any],
    kept: int,
    after: Callable[[ScoreRow], None] | None = None,
) -> bool:
    """Rank 0's part of `run_score`: the rows, the report's counts and the provenance; whether any row failed.

    `kept` entries have their rows already (resume): the progress counts them as done. `after` is called with each
    row once it is written (a map is drawn then).

    The provenance goes beside a file output before the rows and again after them; an interrupted run leaves it with
    `finished` null.
    """
    if rows.output is not None:
        write_provenance(sidecar(rows.output), record)
    if report is not None:
        for done in rows.existing():  # the page covers the whole output file, not only this call's part
            report.add(done)
    failed = _write_rows(scorer.run(todo, done=kept), rows, report, on_error, after)
    record["finished"] = utc_now()
    if rows.output is not None:
        write_provenance(sidecar(rows.output), record)
    return failed


def _is_report(path: Path) -> bool:
    """Whether `path` is an HTML page `Report.write` wrote (its title, in its first few kilobytes)."""
    with open(path, "rb") as f:
        return PAGE_MARK.encode() in f.read(4096)


def _is_calibration(path: Path) -> bool:
    """Whether `path` is a calibration file `Calibration.save` wrote (JSON whose `format` is ours)."""
    try:
        d = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and d.get("format") == CALIBRATION_FORMAT


def _probe(name: str, folder: Path) -> None:
    """Refuse a folder that cannot be written in (probed with a temporary file, removed at once).

    Raises:
        ValueError: one line naming the parameter, the folder and the system's reason.
    """
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(f"`{name}`: cannot write in {folder} ({e.strerror or e})") from None


def check_file_target(
    name: str,
    path: str | os.PathLike[str],
    inputs: Collection[Path] = (),
    ours: Callable[[Path], bool] | None = None,
    kind: str = "",
) -> None:
    """Refuse, before any work, an output file that cannot be written or whose writing would destroy something.

    Args:
        name: the parameter, as messages name it.
        path: the file to be written.
        inputs: resolved paths of what the run reads (images, a manifest, a calibration, a label file).
        ours: when given, an existing `path` must pass it (a file this package wrote before): anything else is kept.
        kind: what `ours` accepts, for the message ("an HTML report of gamma-iqa score").

    Raises:
        ValueError: `path` is a folder, one of `inputs`, an existing file `ours` refuses, or its folder is not
            writable (one line naming the parameter).
        FileNotFoundError: its folder does not exist.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"`{name}` {path} is a folder; give a file name")
    resolved = path.resolve()
    if not resolved.parent.is_dir():
        raise FileNotFoundError(f"`{name}` {path}: folder {resolved.parent} does not exist")
    if resolved in inputs:
        raise ValueError(f"`{name}` {path} is one of this run's inputs: writing it would destroy it")
    if ours is not None and path.exists() and not ours(path):
        raise ValueError(
            f"`{name}` {path} exists and is not {kind}: writing would destroy it; give a new file name or remove it"
        )
    _probe(name, resolved.parent)


def check_folder_target(name: str, folder: str | os.PathLike[str]) -> None:
    """Create an output folder (with its parents) before any work, and check it can be written in.

    Raises:
        ValueError: `folder` is a file, or cannot be created or written in (one line naming the parameter).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"`{name}` {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"`{name}` {folder}: cannot create the folder ({e.strerror or e})") from None
    _probe(name, folder)


def _calibration_files(options: dict[str, Any]) -> list[str | os.PathLike[str]]:
    """The files of the calibrations among the Scorer options' `columns` (one loaded from a file has its `path`)."""
    return [c.path for c in (options.get("columns") or {}).values() if isinstance(c, Calibration) and c.path]


def _run_inputs(entries: Sequence[Entry], protect: Iterable[str | os.PathLike[str]], options: dict) -> set[Path]:
    """Resolved paths of what a score run reads: its images, the `protect` files, a calibration's file."""
    files = [e.source for e in entries if isinstance(e.source, (str, os.PathLike))] + list(protect)
    return {Path(f).resolve() for f in files + _calibration_files(options)}


def _check_targets(
    entries: Sequence[Entry],
    output: Path | None,
    html: str | os.PathLike[str] | None,
    protect: Iterable[str | os.PathLike[str]] = (),
    options: dict | None = None,
) -> None:
    """Refuse, before anything is written, an output or report file that is an input or the other file.

    Raises:
        ValueError: `output` or `html` resolves to one of the images of `entries`, a `protect` file or the
            calibration file (writing would destroy it), both name one file (the page would replace the rows), `html`
            is an existing file other than a report of ours, or either's folder is not writable.
        FileNotFoundError: the folder of `output` or `html` does not exist.
    """
    targets = {name: Path(path).resolve() for name, path in (("output", output), ("html", html)) if path}
    if len(targets) == 2 and targets["output"] == targets["html"]:
        raise ValueError(f"`output` and `html` are one file, {output}: give each its own file")
    inputs = _run_inputs(entries, protect, options or {})
    if output is not None:
        check_file_target("output", output, inputs)
    if html:
        check_file_target("html", html, inputs, _is_report, "an HTML report of gamma-iqa score")


def _check_maps(map_dir: str | os.PathLike[str] | None, map_stride: int, map_scale: str = "auto") -> None:
    """Refuse, before any scoring, maps that cannot be drawn; create their folder.

    Raises:
        ValueError: `map_stride` not an int >= 1, an unknown `map_scale`, `map_dir` a file or a folder that cannot
            be created or written in, or matplotlib missing (naming the extra).
    """
    if map_dir is None:
        return
    check_pixels(map_stride, "map_stride")
    if map_scale not in SCALES:
        raise ValueError(f"`map_scale` must be one of {', '.join(SCALES)}, got {map_scale!r}")
    try:
        require_matplotlib()
    except ImportError as e:
        raise ValueError(f"`map_dir`: {e}") from None
    check_folder_target("map_dir", map_dir)


def _noting(bad: set[int], on_error: Callable[[ScoreRow], None] | None) -> Callable[[ScoreRow], None]:
    """`on_error`, also adding each failed row's index to `bad`."""

    def note(row: ScoreRow) -> None:
        bad.add(row.index)
        if on_error is not None:
            on_error(row)

    return note


def _positions(entries: Sequence[Entry], todo: Sequence[Entry]) -> list[int]:
    """The position in `entries` of each of `todo` (an ordered subsequence of them)."""
    at: list[int] = []
    for i, e in enumerate(entries):
        if len(at) < len(todo) and todo[len(at)] is e:
            at.append(i)
    return at


def _missing_maps(entries: Sequence[Entry], at: Sequence[int], paths: Sequence[Path], rows: RowWriter) -> list[int]:
    """Positions of the entries whose rows an earlier call wrote (resume) with a score but no map file (interrupted)."""
    now = set(at)
    kept = [i for i in range(len(entries)) if i not in now and not paths[i].is_file()]
    if not kept:
        return []
    failed = {r.get("path") for r in rows.existing() if r.get("error")}  # a failed row gets no map
    return [i for i in kept if entries[i].name not in failed]


def _earlier_maps(entries: Sequence[Entry], at: Sequence[int], paths: Sequence[Path]) -> dict[str, Path]:
    """{name: PNG} of the maps on disk for the entries not at positions `at` (this call's): an earlier call's."""
    now = set(at)
    return {e.name: paths[i] for i, e in enumerate(entries) if i not in now and paths[i].is_file()}


class _MapDrawer:
    """Draws each scored row's map as soon as the row is written (one process), so an interrupted run keeps them.

    On resume it first draws the maps an earlier, interrupted call left missing for its rows.
    """

    def __init__(
        self,
        model: QualityModel,
        entries: Sequence[Entry],
        todo: Sequence[Entry],
        map_dir: str | os.PathLike[str],
        on_error: Callable[[ScoreRow], None] | None,
        **options: Any,
    ) -> None:
        """Name every entry's map (`map_paths`); `options` are `draw_map`'s (stride, dtype)."""
        self.model, self.entries, self.on_error, self.options = model, entries, on_error, options
        self.at = _positions(entries, todo)
        self.paths = map_paths(entries, map_dir)
        self.drawn: dict[str, Path] = {}
        self.missed = False

    def _draw(self, i: int) -> None:
        """Draw the map of entry `i`; a failure goes to `on_error` (its row's index is `i`)."""
        ok = draw_map(self.model, self.entries[i], self.paths[i], index=i, on_error=self._missed, **self.options)
        if ok:
            self.drawn.setdefault(self.entries[i].name, self.paths[i])

    def _missed(self, row: ScoreRow) -> None:
        self.missed = True
        if self.on_error is not None:
            self.on_error(row)

    def earlier(self, rows: RowWriter) -> None:
        """Draw the maps missing for the rows already in the output (resume)."""
        for i in _missing_maps(self.entries, self.at, self.paths, rows):
            self._draw(i)

    def __call__(self, row: ScoreRow) -> None:
        """The map of a row just written (`row.index` is its position in `todo`); none for a failed row."""
        if not row.error:
            self._draw(self.at[row.index])

    def maps(self) -> dict[str, Path]:
        """{name: PNG} for the report: the maps drawn now, and those an earlier call drew."""
        return {**_earlier_maps(self.entries, self.at, self.paths), **self.drawn}


def _draw_maps(
    model: QualityModel,
    entries: Sequence[Entry],
    todo: Sequence[Entry],
    failed: set[int],
    map_dir: str | os.PathLike[str],
    on_error: Callable[[ScoreRow], None] | None,
    shard: tuple[int, int],
    rows: RowWriter,
    **options: Any,
) -> tuple[dict[str, Path], bool]:
    """Under torchrun, once every row is written: the maps of this call's scored entries, shared out over the ranks.

    They are `todo` less the positions in `failed`, named over all `entries`, and on resume those an earlier call
    left missing for its rows.

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
    at = _positions(entries, todo)
    paths = map_paths(entries, map_dir)
    missing = _missing_maps(entries, at, paths, rows)
    draw = sorted(missing + [i for j, i in enumerate(at) if j not in failed])[rank::world]
    missed: list[ScoreRow] = []
    drawn = write_maps(model, entries, map_dir, draw=draw, on_error=missed.append, **options)
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, (drawn, missed))
        drawn = {name: path for part, _ in reversed(gathered) for name, path in part.items()}  # rank 0's last: wins
        missed = sorted((row for _, part in gathered for row in part), key=lambda row: row.index)
    for row in missed if rank == 0 and on_error is not None else []:
        on_error(row)
    return {**_earlier_maps(entries, at, paths), **drawn}, bool(missed)


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
    map_scale: str | None = None,
    protect: Iterable[str | os.PathLike[str]] = (),
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
        map_dir: also draw each scored image's quality map (outputs/maps.py) into this folder (created before any
            scoring): as each row is written (so an interrupted run keeps the maps of its rows, and a resumed one
            draws those an interrupted call left missing), or under torchrun shared out once every row is written;
            the HTML page shows them. A map that fails goes to `on_error` and the run goes on (it counts as a
            failure in the result).
        map_stride: pixels between the maps' windows.
        map_scale: the maps' colour scale: "auto" (each map its own lowest..highest score) or "fixed" (0..1, the
            same for every map, so they compare); None (default): "fixed" with `html` (the page's maps compare, and
            its one legend names their colours), else "auto".
        protect: more files this run reads (a manifest), which no output may overwrite.
        **options: the Scorer's options (crops, seed, batch_size, workers, dtype, progress, details, columns). With
            `details` the writer must write the detail columns (`open_rows(..., details=True)`), with `columns`
            (`calibration.score_columns`) those columns (`open_rows(..., columns=...)`).

    The run's provenance (see outputs/provenance.py) goes to `OUTPUT.provenance.json` beside a file output (written
    when the run starts, and again with its `finished` time when it ends) and into the HTML page.

    Returns:
        Whether any entry of this call failed (on every rank).

    Raises:
        ValueError: a bad Scorer option, `html_top` or `map_stride`; a `map_dir` that is a file, cannot be created
            or written in, or matplotlib missing for it; an `output` or `html` that is an input (an image, a `protect`
            file, the calibration), `html` an existing file other than a report of ours (names the parameter); a resumed
            output that is not a file of score rows, or whose rows have other
            columns or whose provenance has other settings; `details` or `columns` with a writer without those columns.
        FileNotFoundError: the folder of `output` or `html` does not exist (before any scoring).
        KeyboardInterrupt: passed on after the rows written so far are complete on disk (no report is written).
    """
    _check_targets(entries, rows.output, html, protect, options)
    map_scale = map_scale if map_scale is not None else "fixed" if html else "auto"
    _check_maps(map_dir, map_stride, map_scale)
    report = Report(html_top) if html else None
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
    # One process draws each map as its row is written; a torchrun group draws them all at the end, shared out.
    drawer = None
    if map_dir is not None and world == 1:
        drawer = _MapDrawer(
            model, entries, todo, map_dir, on_error, stride=map_stride, dtype=scorer.dtype, scale=map_scale
        )
        drawer.earlier(rows)
    if rank == 0:
        used = {**options, "dtype": scorer.dtype}  # the precision scored in (bf16 may fall back to fp32 on a CPU)
        record = _provenance(model, entries, rows, model_name, command, world, used, scorer.backend)
        noted = _noting(bad, on_error) if map_dir is not None and drawer is None else on_error
        failed = _score_and_record(scorer, todo, rows, report, noted, record, len(entries) - len(todo), drawer)
    else:
        for _ in scorer.run(todo):  # the other ranks score their share; the rows all arrive on rank 0
            pass
    maps: dict[str, Path] = {}
    if drawer is not None:
        maps, failed = drawer.maps(), failed or drawer.missed
    elif map_dir is not None:
        shard = (rank, world)
        maps, missed = _draw_maps(
            model,
            entries,
            todo,
            bad,
            map_dir,
            on_error,
            shard,
            rows,
            stride=map_stride,
            dtype=scorer.dtype,
            scale=map_scale,
        )
        failed = failed or missed
    if rank == 0 and report is not None and html:
        sources = _sources(entries, report.names())
        name = model_name or model.config.name
        report.write(
            html,
            model=name,
            score_range=model.score_range,
            sources=sources,
            provenance=record,
            maps=maps,
            map_scale=map_scale,
        )
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
        out: write the calibration file here (a folder: its calibration.json; None: not written). An existing file
            is replaced only when it is a calibration file (checked by its content): never the labels or an image.
        model_name: what the model was made from (a registered name or a checkpoint path), recorded in the file.
        on_error: called with each row that could not be scored.
        **options: the Scorer's options (crops, seed, batch_size, workers, dtype, progress); `seed` also draws the
            held-out rows.

    Returns:
        The calibration (its `path` is `out` when written).

    Raises:
        TypeError: `model` is not a model (a name, say).
        FileNotFoundError: `csv` is not a file, `images` is not a folder or holds none of the labelled images, or
            `out`'s folder does not exist.
        LabelFileError: a malformed label CSV (a ValueError).
        ValueError: `out` is the label CSV, a folder's file or an existing file other than a calibration file of
            ours (which it would destroy), or not writable; a bad Scorer option, `method` or `holdout`, an unknown
            `scene`, too few rows in the CSV for the
            holdout (before scoring), or too few images scored to fit.
    """
    require_model(model)
    check_options(method, holdout)
    if out is not None:  # before the scoring, not after it; only a calibration file of ours is replaced
        kind = "a calibration file of gamma-iqa calibrate"
        check_file_target("out", calibration_file(out), {Path(csv).resolve()}, _is_calibration, kind)
    root = Path(csv).resolve().parent if images is None else Path(images)
    if not root.is_dir():
        raise FileNotFoundError(f"`images` {root}: no such folder")
    labels = read_folder_csv(root, Path(csv), image_column, mos_column)
    check_rows(len(labels.items), method, holdout, rows="rows in the label CSV")  # known before any scoring
    if labels.items and not any((root / image).exists() for image, _ in labels.items):
        raise FileNotFoundError(
            f"`images` {root}: no labelled image found there (none of the {len(labels.items)} images of the label CSV, "
            f"e.g. {labels.items[0][0]}); give the folder the CSV's image paths are relative to"
        )
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
