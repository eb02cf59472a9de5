"""Command line: `gamma-iqa score|eval|calibrate|train|convert|list`. Data goes to stdout, messages to stderr.

Each subcommand parses its arguments into one library call (`outputs.runs.run_score`, `outputs.runs.run_eval`,
`outputs.runs.run_calibrate`, `engine.train.train`, `models.convert`) and turns library errors, which name parameters
(`batch_size`), into lines that name flags (--batch-size).

Exit status: 0 all good, 1 some inputs failed (`score --check`: some scores no longer match), 2 usage errors (bad
arguments, unusable model or checkpoint; `score --check`: no sampled row could be re-read), 130 interrupted (Ctrl-C;
`score` says how many rows it wrote and how to go on). A decoding worker that dies (killed for memory, say) is one
error line and status 1; `score` says how many rows it wrote and how to go on.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from ._version import __version__
from .data.datasets import FOLDER_CSV, DatasetSpec, get_dataset, list_datasets, user_dataset
from .data.inputs import Entry, expand_paths, read_manifest
from .data.transforms import ColourWarning, ascii_digits, parse_crops, parse_seed
from .engine.calibration import CALIBRATED_COLUMN, METHODS, MOS_COLUMN, mos_dataset, score_columns
from .engine.maps import DEFAULT_STRIDE
from .engine.runtime import COMPILE_MODES, default_workers, process_group, resolve_device
from .engine.scoring import ScoreRow, WorkerDied
from .engine.train import TrainingError, train
from .engine.trainconfig import load_config
from .models import DEFAULT_MODEL, CheckpointError, convert, create_model, default_model, list_models, model_spec
from .models.base import QualityModel
from .models.checkpoint import WEIGHTS_FILE
from .models.export import FORMATS, check_export_path, export_onnx
from .models.scenes import describe_scene, list_scenes
from .outputs.provenance import CHECK_ROWS, TOLERANCE, CheckResult, check_output
from .outputs.report import DEFAULT_TOP
from .outputs.runs import run_calibrate, run_eval, run_score
from .outputs.writers import RowWriter, open_rows, shown_name

__all__ = ["as_flags", "build_parser", "main"]

# Parameters whose flag has another name; every other `parameter` is --parameter with dashes.
_FLAG_NAMES = {"fmt": "format", "overrides": "set", "map_dir": "map"}


class UsageError(Exception):
    """A command line that cannot run as given: the message names the flags and goes to stderr as one line."""


def as_flags(message: str) -> str:
    """A library message, which names parameters in backticks (`batch_size`), in the command line's terms.

    Example: "`resume` needs `output`" becomes "--resume needs --output".
    """

    def flag(m: re.Match[str]) -> str:
        name = _FLAG_NAMES.get(m.group(1), m.group(1)).replace("_", "-")
        # Only the command line's own options: other backticked words (e.g. in torch's messages) stay as they are.
        return f"--{name}" if name in _options() else m.group(0)

    return re.sub(r"`([a-z][a-z0-9_]*)`", flag, message)


def _cmd_list(args: argparse.Namespace) -> int:
    """`list models|scenes|datasets`: one tab-separated line each."""
    if args.what == "models":
        for name in list_models():
            print(f"{name}\t{model_spec(name).description}")
    elif args.what == "datasets":
        _list_datasets()
    else:
        for name in list_scenes():
            print(f"{name}\t{describe_scene(name)}")
    return 0


def _list_datasets() -> None:
    """The registered datasets, one line each with scene, size, MOS scale and split, then `folder+csv`."""
    for name in list_datasets():
        if name == FOLDER_CSV:
            print(
                f"{name}\tyour own images and CSV: --csv FILE --mos-range LO HI --scene S [--lower-better] "
                "[--image-column C] [--mos-column C] [--resize S]"
            )
            continue
        d = get_dataset(name)
        order = "lower is better" if d.lower_better else "higher is better"
        print(
            f"{name}\t{d.scene}\t{d.num_images} images\tMOS [{d.mos_range[0]:g}, {d.mos_range[1]:g}], {order}"
            f"\t{d.split} split\tfolder {' or '.join(d.folders)}"
        )


def _cmd_convert(args: argparse.Namespace) -> int:
    """`convert SRC DST`: an original release checkpoint to our folder format."""
    out = convert(args.input, args.output, args.variant, args.bpe)
    print(f"converted {args.input} ({args.variant}) -> {out}", file=sys.stderr)
    return 0


def _run_checkpoint(model: str) -> str:
    """--model as given, or for a training run folder (best/ or last/ inside, no weights of its own) its best/.

    A run without best/ (no evaluation yet) stands for its last/. A note on stderr says which was taken.

    Raises:
        UsageError: a training run folder (its config.yaml, or a best/ or last/ folder) without either checkpoint.
    """
    folder = Path(model)
    if not folder.is_dir() or (folder / WEIGHTS_FILE).is_file():
        return model
    for name, which in (("best", "its best checkpoint"), ("last", "its last checkpoint (it has no best/)")):
        if (folder / name / WEIGHTS_FILE).is_file():
            if os.environ.get("RANK", "0") == "0":  # once under torchrun
                print(f"note: {model} is a training run folder: using {folder / name}, {which}", file=sys.stderr)
            return str(folder / name)
    if any(p.exists() for p in (folder / "config.yaml", folder / "best", folder / "last")):
        raise UsageError(
            f"{model} is a training run folder without a checkpoint yet: neither best/ nor last/ holds {WEIGHTS_FILE} "
            "(a run writes last/ at its first save, best/ at its first evaluation)"
        )
    return model


def _trained_line(out: Path) -> str:
    """The line that ends `train`: the run folder, the checkpoints it holds and which one --model RUN takes."""
    best, last = ((out / name / WEIGHTS_FILE).is_file() for name in ("best", "last"))
    head = f"gamma-iqa train: done; run folder {out}"
    if best:
        return f"{head}: checkpoints best/{' and last/' if last else ''} (--model {out} takes best/)"
    if last:
        why = "no evaluation ran, or none gave a finite SRCC"
        return f"{head}: checkpoint last/ only, no best/ ({why}): --model {out} takes last/"
    return f"{head}: no checkpoint saved"


def _model_name(args: argparse.Namespace) -> str:
    """--model (a run folder: its best checkpoint), or the default model when it has trained weights in this install."""
    if args.model is not None:
        return _run_checkpoint(args.model)
    try:
        return default_model()
    except CheckpointError as e:
        raise UsageError(f"{e} (--model NAME_OR_CHECKPOINT)") from None


def _warning_printer() -> Callable[..., None]:
    """A `warnings.showwarning` that prints each warning text as one stderr line (`warning: ...`), once.

    Every subcommand shows warnings through it (`main`), not in Python's two-line format (file:line and a source
    line). Once, since the report's thumbnails decode images again and training reads an image every epoch; a colour
    profile not applied names its image as errors do. DataLoader workers hold their warnings back for the main
    process (engine.runtime.holding_warnings), so theirs come here too.
    """
    shown: set[str] = set()

    def show(message: Warning | str, *args: object, **kwargs: object) -> None:
        if isinstance(message, ColourWarning):
            line = f"warning: {shown_name(message.name)}: colour profile ignored ({message.reason}); scored as sRGB"
        else:
            line = f"warning: {as_flags(str(message))}"
        if line not in shown:
            shown.add(line)
            print(line, file=sys.stderr)

    return show


def _print_error(row: ScoreRow) -> None:
    """One stderr line for a row that failed (a name with a newline or odd bytes stays on it, escaped)."""
    print(f"error: {shown_name(row.path)}: {row.error}", file=sys.stderr)


def _interrupted(rows: RowWriter) -> str:
    """The line for a Ctrl-C during `score`: what was written and how to go on."""
    line = f"gamma-iqa score: interrupted after {rows.written} row{'' if rows.written == 1 else 's'}"
    if rows.output is not None and rows.fmt != "json":
        # a resumed run's file also holds the rows kept from before: say how many rows it holds in all
        held = f", {sum(1 for _ in rows.existing()):,} rows in all" if rows.resume else ""
        line += f" (complete in {shown_name(str(rows.output))}{held}); rerun the same command with --resume to score "
        line += "the rest"
    return line


# torch's messages for a DataLoader worker that died, raised by its SIGCHLD handler wherever the main process then is
# (scoring, writing a row): "(pid N) exited unexpectedly with exit code C. ..." or "(pid N) is killed by signal: X."
# (and "(pid(s) N, M) exited unexpectedly" from its queue check). One that reaches the Scorer is its WorkerDied.
_WORKER_DIED = re.compile(
    r"DataLoader worker \(pid(?:\(s\))? ([\d, ]+)\) (?:exited unexpectedly(?: with exit code (-?\d+))?|is killed by "
    r"signal: ([^.]+))"
)


def _worker_died(error: BaseException) -> str | None:
    """The line for a decoding worker that died (killed for memory, say), or None for any other error."""
    if isinstance(error, WorkerDied):
        return str(error)
    match = _WORKER_DIED.match(str(error)) if isinstance(error, RuntimeError) else None
    if match is None:
        return None
    pids, code, killed = match.groups()
    how = f"killed by signal {killed}: " if killed else f"exit code {code}: " if code else ""
    return f"a decoding worker (pid {pids}) died unexpectedly ({how}out of memory?)"


def _worker_died_during_score(line: str, rows: RowWriter) -> str:
    """The line for a decoding worker that died during `score`: what was written and how to go on."""
    head = f"gamma-iqa score: error: {line}"
    advice = "fewer --workers or --workers 0"
    if rows.output is not None and rows.fmt != "json":
        written = f"{rows.written} row{'' if rows.written == 1 else 's'}"
        return f"{head}: the {written} so far are in {shown_name(str(rows.output))}; rerun with --resume, and {advice}"
    return f"{head} after {rows.written} row{'' if rows.written == 1 else 's'}; rerun with {advice}"


def _check_lines(result: CheckResult, output: str) -> list[str]:
    """What `score --check` prints: notes, each mismatch, the rows that could not be re-read, and the verdict."""
    lines = [f"note: {n}" for n in result.notes]
    lines += [f"mismatch: {shown_name(p)}: recorded {a!r}, now {b!r}" for p, a, b in result.mismatched]
    lines += [f"mismatch: {shown_name(p)}: {c} recorded {a!r}, now {b!r}" for p, c, a, b in result.columns]
    if result.failures:
        (path, why), k = result.failures[0], len(result.failures)
        more = f" (and {k - 1} more)" if k > 1 else ""
        lines.append(
            f"{k} row{'' if k == 1 else 's'} could not be re-read (not compared): {shown_name(path)}: {why}{more}"
        )
    if not result.checked:
        return lines
    head = f"checked {len(result.checked)} of {result.total} scored rows of {shown_name(output)}"
    if result.ok:
        lines.append(f"{head}: all match within {result.tolerance:g} (largest difference {result.max_difference:.3g})")
    else:
        bad = len({p for p, *_ in result.mismatched} | {p for p, *_ in result.columns})
        lines.append(f"{head}: {bad} do not match within {result.tolerance:g}")
    return lines


def _cmd_check(args: argparse.Namespace) -> int:
    """`score --check FILE`: re-score a sample of an earlier output's rows.

    Returns 0 when every re-scored row matches, 1 on a mismatch, 2 when no sampled row could be re-read. Rows that
    could not be re-read (moved images, standard input) are reported apart and count for neither.
    """
    if args.paths or args.manifest or args.output:
        raise UsageError("--check FILE takes no image paths, --manifest or --output (it re-scores FILE's rows)")
    result = check_output(
        args.check,
        check_rows=args.check_rows,
        tolerance=args.tolerance,
        device=None if args.device is None else resolve_device(args.device),
    )
    for line in _check_lines(result, args.check):
        print(line)
    if not result.checked:
        print(
            f"gamma-iqa score: error: --check: none of the {len(result.failures)} sampled rows of "
            f"{shown_name(args.check)} could be re-read, so nothing was compared (run it where the images are)",
            file=sys.stderr,
        )
        return 2
    return 0 if result.ok else 1


# Options of `score` that only mean something with another: (option, the one it needs); and those --check ignores.
_SCORE_NEEDS = (
    ("map_stride", "map"),
    ("map_scale", "map"),
    ("html_top", "html"),
    ("check_rows", "check"),
    ("tolerance", "check"),
)
_CHECK_IGNORES = ("model", "scene", "crops", "seed", "dtype", "format", "resume", "details", "mos_scale")
_CHECK_IGNORES += ("calibration", "map", "html", "compile", "compile_mode")


@functools.cache
def _score_defaults() -> dict[str, object]:
    """`score`'s option defaults, by destination."""
    return vars(build_parser().parse_args(["score"]))


def _given(args: argparse.Namespace, dest: str) -> bool:
    """Whether `score`'s option `dest` was given (differs from its default: a default given again is harmless)."""
    return getattr(args, dest) != _score_defaults()[dest]


def _check_option_pairs(args: argparse.Namespace) -> None:
    """Refuse `score` options that would be ignored: one without the option it needs, or one --check does not use.

    Raises:
        UsageError: one line naming the options.
    """
    for dest, needs in _SCORE_NEEDS:
        if _given(args, dest) and not getattr(args, needs):
            raise UsageError(f"--{dest.replace('_', '-')} only works with --{needs}")
    ignored = [f"--{d.replace('_', '-')}" for d in _CHECK_IGNORES if args.check and _given(args, d)]
    if ignored:
        raise UsageError(f"--check re-scores with the settings it recorded; it takes no {', '.join(ignored)}")


def _add_loader_options(p: argparse.ArgumentParser) -> None:
    """--batch-size and --workers, as `score`, `eval` and `calibrate` share them."""
    p.add_argument(
        "--batch-size", type=int, default=8, help="images decoded per batch (default 8; scores do not depend on it)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="decoding processes, 0: in this process; scores do not depend on it (default: CPUs - 1, at most 4; on a "
        "machine of 1 or 2 CPUs only those the forward's threads leave idle: 0, or 1 with OMP_NUM_THREADS=1 on 2)",
    )


def _add_compile_options(p: argparse.ArgumentParser) -> None:
    """`score`'s --compile and --compile-mode (engine.runtime.COMPILE_MODES)."""
    p.add_argument(
        "--compile",
        action="store_true",
        help="compile the model's image tower with torch.compile (Gamma models, torch backend): the first forward "
        "compiles (about a minute), the scores equal the eager ones to float rounding; worth it for long GPU runs",
    )
    p.add_argument(
        "--compile-mode",
        choices=COMPILE_MODES,
        help="torch.compile mode, implies --compile: default, reduce-overhead (CUDA graphs of the fixed-size "
        "forwards, on a GPU), max-autotune or max-autotune-no-cudagraphs",
    )


def _compile_mode(args: argparse.Namespace) -> str | None:
    """The Scorer's `compile`: --compile-mode, "default" for --compile alone, None for neither."""
    return args.compile_mode or ("default" if args.compile else None)


def _check_backend(args: argparse.Namespace) -> None:
    """Refuse what --backend onnxruntime cannot do before any device or model is touched; its device is the CPU.

    Checked first so that the reason is the backend's on every machine (with a GPU, --device cuda would otherwise
    load the model there before the Scorer refuses). Without --device (or with auto) it scores on the CPU. `serve`
    has no --crops (its requests' crops none get 422) and no --check.

    Raises:
        UsageError: --device other than cpu/auto, --dtype other than fp32, --crops none, --compile (one line each).
    """
    if args.backend != "onnxruntime":
        return
    if hasattr(args, "compile_mode") and _compile_mode(args) is not None:  # serve has no --compile
        raise UsageError("--compile is for the torch backend; drop it with --backend onnxruntime (its graph is built)")
    if args.device not in (None, "auto", "cpu"):
        raise UsageError(f"--backend onnxruntime scores on the CPU only; drop --device {args.device} (or use cpu)")
    if args.dtype != "fp32":
        raise UsageError(f"--backend onnxruntime scores in fp32 only; drop --dtype {args.dtype}")
    if str(getattr(args, "crops", "")).strip().lower() == "none":
        raise UsageError("--backend onnxruntime takes fixed-size crops: --crops N or center, not none")
    if not getattr(args, "check", False):
        args.device = "cpu"  # auto would pick a GPU where there is one, which this backend does not use


def _ready_to_score(model: QualityModel, args: argparse.Namespace) -> None:
    """--bpe, the scene and the vocabulary checked before any work (one line each, no output file started).

    Raises:
        UsageError: --bpe is not a file. ValueError: an unknown scene. FileNotFoundError: no vocabulary for the
            model's text tower.
    """
    if args.bpe:
        if not Path(args.bpe).is_file():
            raise UsageError(f"--bpe {args.bpe}: no such file")
        model.vocab_path = args.bpe
    key = model.prompt_key(args.scene)
    tokens = getattr(model, "tokens", None)
    if tokens is not None:  # a text tower's vocabulary missing: one line now, not an empty output and provenance
        tokens(key)


def _output_format(args: argparse.Namespace) -> str:
    """--format, or when not given: `json` or `jsonl` for an --output of that extension (any case), else `csv`.

    Raises:
        UsageError: --resume with an --output whose extension implies json (a JSON array cannot be appended to).
    """
    if args.format is not None:
        return args.format
    suffix = Path(args.output).suffix.lower() if args.output else ""
    fmt = {".json": "json", ".jsonl": "jsonl"}.get(suffix, "csv")
    if args.resume and fmt == "json":
        raise UsageError(
            f"--resume: --output {shown_name(args.output)} implies --format json, and a JSON array cannot be appended "
            "to; give --format jsonl or csv, or another name"
        )
    return fmt


def _cmd_score(args: argparse.Namespace) -> int:
    """`score PATHS... [--manifest FILE]`: rows as they finish, to stdout or --output (with --resume)."""
    _check_option_pairs(args)
    _check_backend(args)
    if args.check:
        return _cmd_check(args)
    if not args.paths and not args.manifest:
        raise UsageError("give image paths, folders or globs, or --manifest FILE")
    fmt = _output_format(args)
    rows = open_rows(args.output, fmt, resume=args.resume, details=args.details, columns=_column_names(args))
    crops = parse_crops(args.crops)
    name = _model_name(args)
    with process_group(args.device or "auto") as group:
        model = create_model(name).to(group.device)
        _ready_to_score(model, args)
        entries = expand_paths(args.paths, args.scene, hidden=args.hidden)
        if args.manifest:
            entries += read_manifest(args.manifest, args.scene, hidden=args.hidden)
        try:
            failed = run_score(
                model,
                entries,
                rows,
                html=args.html,
                html_top=args.html_top,
                model_name=name,
                distributed=True,
                on_error=_print_error,
                command=args.argv,
                map_dir=args.map,
                map_stride=args.map_stride,
                map_scale=args.map_scale,
                protect=[args.manifest] if args.manifest else [],
                details=args.details,
                columns=score_columns(
                    model, mos_scale=args.mos_scale, calibration=args.calibration, scene=args.scene, crops=crops
                ),
                crops=crops,
                seed=args.seed,
                batch_size=args.batch_size,
                workers=args.workers,
                dtype=args.dtype,
                backend=args.backend,
                compile=_compile_mode(args),
                progress=True,
            )
        except KeyboardInterrupt:  # the rows so far are complete on disk: one line, not a traceback
            print(_interrupted(rows), file=sys.stderr)
            return 130
        except RuntimeError as e:  # so are they when a decoding worker dies (killed for memory, say)
            line = _worker_died(e)
            if line is None:
                raise
            print(_worker_died_during_score(line, rows), file=sys.stderr)
            return 1
    failed_rows = _end_of_score(args, rows, entries, group.rank)  # its lines come whatever `failed` says
    return 1 if failed or failed_rows else 0


def _end_of_score(args: argparse.Namespace, rows: RowWriter, entries: Sequence[Entry], rank: int) -> int:
    """The lines after a finished `score` run (failures; on resume, nothing left, rows of other inputs): failed rows.

    On resume the rows of these inputs count, the kept ones too, so a resumed run ends as an uninterrupted one would.
    """
    failed, total = rows.failed, rows.written  # rank 0 writes, and counts, the rows
    if args.resume and rank == 0:
        failed, total, others = _failed_rows(rows, entries)
        out = shown_name(str(rows.output))
        if rows.written == 0 and entries:  # else a finished file gives no sign at all
            inputs = "the one input" if len(entries) == 1 else f"all {len(entries):,} inputs"
            print(f"gamma-iqa score: nothing left to score: {out} already has a row for {inputs}", file=sys.stderr)
        if others:
            print(
                f"gamma-iqa score: note: {out} also holds {others} row{'' if others == 1 else 's'} of inputs not given "
                "this time; they are kept and not counted",
                file=sys.stderr,
            )
    if failed:  # one summary line after the per-image ones
        print(f"gamma-iqa score: {failed} of {total} images failed", file=sys.stderr)
    return failed


def _failed_rows(rows: RowWriter, entries: Sequence[Entry]) -> tuple[int, int, int]:
    """(failed, all, others): a resumed output's rows of `entries` and its rows of other inputs.

    Read back once the run is done: the rows kept and those written now, matched by path as `--resume` matches them.
    """
    left = Counter(e.name for e in entries)
    failed = total = others = 0
    for row in rows.existing():
        if left[row["path"]] > 0:
            left[row["path"]] -= 1
            total += 1
            failed += bool(row.get("error"))
        else:
            others += 1
    return failed, total, others


# ---- score --mos-scale / --calibration, and calibrate (engine/calibration.py) ----------------------------------------
def _column_names(args: argparse.Namespace) -> list[str]:
    """The columns --mos-scale and --calibration add, in order; an unknown --mos-scale fails here, before any work."""
    if args.mos_scale is not None:
        mos_dataset(args.mos_scale)
    return [name for name, asked in ((MOS_COLUMN, args.mos_scale), (CALIBRATED_COLUMN, args.calibration)) if asked]


def _add_scale_options(s: argparse.ArgumentParser) -> None:
    """`score`'s --mos-scale and --calibration."""
    s.add_argument(
        "--mos-scale",
        metavar="DATASET",
        help="add a column mos: the score on DATASET's MOS scale (see `list datasets`), the inverse of its training "
        "normalisation (koniq10k 0..100, kadid10k 1..5, ava 0..10); for a lower-is-better dataset (live, csiq: "
        "DMOS) a higher score gives a lower mos",
    )
    s.add_argument(
        "--calibration",
        metavar="CAL.json",
        help="add a column calibrated: the score through a calibration file of `gamma-iqa calibrate` (fitted for "
        "this model; one for another model is refused), or a folder holding it as calibration.json",
    )


def _fit_line(part: str, values: dict | None) -> str:
    """One report line: SRCC, PLCC and RMSE before -> after on one part of the rows."""
    if values is None:
        return f"{part}: none (--holdout 0)"

    def show(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    pairs = [f"{k.upper()} {show(values['before'][k])} -> {show(values['after'][k])}" for k in ("srcc", "plcc", "rmse")]
    return f"{part} ({values['rows']} rows): {', '.join(pairs)}"


def _cmd_calibrate(args: argparse.Namespace) -> int:
    """`calibrate --csv LABELS --out CAL.json`: fit a score-to-MOS map; 1 when some images could not be scored."""
    _check_label_csv(args.csv)
    name = _model_name(args)
    model = create_model(name).to(resolve_device(args.device))
    cal = run_calibrate(
        model,
        args.csv,
        images=args.images,
        image_column=args.image_column or "image",
        mos_column=args.mos_column or "mos",
        scene=args.scene,
        method=args.method,
        holdout=args.holdout,
        out=args.out,
        model_name=name,
        on_error=_print_error,
        crops=parse_crops(args.crops),
        seed=args.seed,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=True,
    )
    print(f"{cal.method} calibration of {name} ({cal.scene}, crops {cal.crops}) on {cal.labels['scored']} images")
    print(_fit_line("fit", cal.report["fit"]))
    print(_fit_line("held-out", cal.report["held_out"]))
    print(
        f"gamma-iqa calibrate: wrote {cal.path}; apply it with gamma-iqa score --calibration {cal.path}",
        file=sys.stderr,
    )
    failed = cal.labels["failed"]  # the rows on_error printed
    if failed:
        print(f"gamma-iqa calibrate: {failed} of {cal.labels['rows']} images failed", file=sys.stderr)
    return 1 if failed else 0


def _add_calibrate_parser(sub: argparse._SubParsersAction) -> None:
    """The `calibrate` subcommand's parser."""
    k = sub.add_parser(
        "calibrate",
        help="fit a monotone map from a model's score to your own MOS (labelled images), for score --calibration",
    )
    k.add_argument("--model", help=f"as for score (default: {DEFAULT_MODEL})")
    k.add_argument("--csv", required=True, help="label CSV: image paths (relative to --images) and MOS, any scale")
    k.add_argument("--images", metavar="ROOT", help="folder the CSV's image paths are relative to (default its folder)")
    k.add_argument("--image-column", help="the CSV's column of image paths (default image)")
    k.add_argument("--mos-column", help="the CSV's column of MOS values (default mos)")
    k.add_argument("--scene", help="scene of the images (see `list scenes`); default: the model's")
    k.add_argument("--method", choices=METHODS, default="logistic4", help="4-parameter logistic (default) or isotonic")
    k.add_argument("--holdout", type=float, default=0.2, help="fraction of rows held out and reported on (default 0.2)")
    k.add_argument(
        "--seed", type=_seed, default=0, help="seed of the random crops and of the held-out rows (default 0)"
    )
    k.add_argument("--crops", default="10", help="as for score (apply the calibration to scores made alike)")
    _add_loader_options(k)
    k.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    k.add_argument(
        "--out", required=True, metavar="CAL.json", help="the calibration file written (a folder: its calibration.json)"
    )
    k.set_defaults(func=_cmd_calibrate)


def _cmd_train(args: argparse.Namespace) -> int:
    """`train --config FILE [--set KEY=VALUE]...`: a training run; 1 when it cannot go on."""
    cfg = load_config(args.config, args.set)
    if args.out:
        cfg = dataclasses.replace(cfg, out=args.out)
    cfg = dataclasses.replace(cfg, model=_run_checkpoint(cfg.model))  # fine-tuning a run's best checkpoint
    try:
        out = train(cfg, resume=args.resume)
    except TrainingError as e:
        print(f"gamma-iqa train: error: {as_flags(str(e))}", file=sys.stderr)
        return 1
    print(_trained_line(Path(out)), file=sys.stderr)
    return 0


def _check_label_csv(csv: str) -> None:
    """Refuse a --csv (of `eval --dataset folder+csv` and `calibrate`) that is a folder or no file, in one line.

    Raises:
        UsageError: naming --csv and what it is.
    """
    if Path(csv).is_dir():
        raise UsageError(f"--csv {csv}: is a folder; give the label CSV file")
    if not Path(csv).is_file():
        raise UsageError(f"--csv {csv}: no such file")


def _own_dataset(args: argparse.Namespace) -> DatasetSpec:
    """`--dataset folder+csv`: the user's own dataset from its flags (the keys of a training config's entry)."""
    if args.csv is None or args.mos_range is None or args.scene is None:
        raise UsageError("--dataset folder+csv needs --csv FILE, --mos-range LO HI and --scene S")
    _check_label_csv(args.csv)
    flags = {
        "csv": args.csv,
        "mos_range": args.mos_range,
        "scene": args.scene,
        "lower_better": args.lower_better,
        "resize": args.resize,
        "image_column": args.image_column,
        "mos_column": args.mos_column,
    }
    spec, _ = user_dataset({k: v for k, v in flags.items() if v is not None}, default_name=FOLDER_CSV)
    return spec


def _eval_datasets(args: argparse.Namespace) -> list[DatasetSpec]:
    """The datasets of --dataset: registered names, and `folder+csv` from its flags."""
    names = [n.strip() for n in args.dataset.split(",") if n.strip()]
    specs = [_own_dataset(args) if n.lower() == FOLDER_CSV else get_dataset(n) for n in names]
    if not specs:
        raise UsageError("--dataset names no dataset (see `gamma-iqa list datasets`)")
    return specs


def _cmd_eval(args: argparse.Namespace) -> int:
    """`eval --model M --dataset D --data-root DIR`: the paper's metrics per dataset; 1 when images were missing."""
    crops = parse_crops(args.crops)
    if args.batch_size < 1 or args.workers < 0:
        raise UsageError("--batch-size must be at least 1 and --workers at least 0")
    specs = _eval_datasets(args)
    model = create_model(_model_name(args)).to(resolve_device(args.device))
    try:
        results = run_eval(
            model,
            specs,
            args.data_root,
            fmt=args.format,
            predictions=args.save_predictions,
            plot=args.plot,
            split=args.split,
            crops=crops,
            seed=args.seed,
            batch_size=args.batch_size,
            workers=args.workers,
            progress=lambda m: print(as_flags(m), file=sys.stderr),
            show_progress=True,
        )
    except ImportError as e:  # an optional reader dependency (scipy, openpyxl): the message names it
        raise UsageError(str(e)) from None
    for r in results:
        for image, why in r.errors:
            print(f"error: {r.dataset}: {image}: {why}", file=sys.stderr)
    return 1 if any(r.errors for r in results) else 0


# ---- serve (the serve/ subpackage, the optional extra gamma-iqa[serve]) ----------------------------------------------
SERVE_MODULES = frozenset({"fastapi", "starlette", "uvicorn", "multipart", "python_multipart", "prometheus_client"})


def _cmd_serve(args: argparse.Namespace) -> int:
    """`serve --model M [--host H] [--port P] [--token T]`: the scoring service until SIGTERM or Ctrl-C; 0 after it.

    A second signal (stop at once) ends the process with status 130 (`os._exit`) once the requests in flight have
    their 503: the device thread may still be inside a forward.
    """
    _check_backend(args)
    token = args.token or os.environ.get("GAMMA_IQA_TOKEN") or None
    try:
        from . import serve as service
    except ModuleNotFoundError as e:  # the optional extra is missing
        if (e.name or "").split(".")[0] not in SERVE_MODULES:
            raise
        raise UsageError(f"needs the serve extra ({e.name} is missing): pip install 'gamma-iqa[serve]'") from None
    limits = service.Limits(
        max_body_mb=args.max_body_mb,
        max_queue=args.max_queue,
        timeout=args.timeout,
        batch_size=args.batch_size,
        max_wait_ms=args.max_wait_ms,
        max_crops=args.max_crops,
        max_pixels=args.max_pixels,
    )
    service.check_host(args.host, token)  # before the model loads, as the port is
    sock = service.bind(args.host, args.port)
    try:
        name = _model_name(args)
        model = create_model(name).to(resolve_device(args.device or "auto"))
        app = service.Service(
            model,
            model_argument=name,
            token=token,
            limits=limits,
            dtype=args.dtype,
            backend=args.backend,
        )
        drained = service.serve(app, args.host, args.port, sock)
    finally:
        sock.close()
    if not drained:
        print("gamma-iqa serve: stopped at once (a second signal): the requests in flight got 503", file=sys.stderr)
        # The device thread may be inside a forward: a normal interpreter shutdown would tear torch down under it
        # (abort, "terminate called without an active exception"). The 503s are sent; nothing else is left to do.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    print("gamma-iqa serve: stopped", file=sys.stderr)
    return 0


def _seed(value: str) -> int:
    """A seed flag's value (`data.transforms.parse_seed`: "+5" and "-3" too, not "7_0" or "３")."""
    try:
        return parse_seed(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}") from None


def _port(value: str) -> int:
    """A TCP port number, 0 (any free port) to 65535."""
    if not ascii_digits(value) or int(value) > 65535:  # not "３" or "²"
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {value!r}")
    return int(value)


def _add_serve_parser(sub: argparse._SubParsersAction) -> None:
    """The `serve` subcommand's parser."""
    v = sub.add_parser("serve", help="an HTTP scoring service (POST /v1/score); needs pip install 'gamma-iqa[serve]'")
    v.add_argument("--model", help=f"as for score (default: {DEFAULT_MODEL})")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000; 0: any free one, printed)")
    v.add_argument(
        "--token",
        help="bearer token every request but /healthz must carry (default: $GAMMA_IQA_TOKEN); required for a "
        "--host other than a loopback address",
    )
    v.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    v.add_argument(
        "--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast precision (default fp32)"
    )
    v.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="as for score: torch (default) or onnxruntime (CPU, fp32, built once at start-up; requests with "
        "crops=none get 422; pip install 'gamma-iqa[onnx]')",
    )
    v.add_argument("--max-body-mb", type=float, default=64.0, metavar="MB", help="largest request body (default 64)")
    v.add_argument(
        "--max-queue",
        type=int,
        default=256,
        metavar="N",
        help="images waiting, all requests together, counted at 10 crops: ?crops=20 counts 2, center 0.1, none by the "
        "image's size in 224-px crops (default 256); also the most images in one request (413 above). A request the "
        "queue's measured rate cannot answer within --timeout gets 503 with Retry-After, one that alone would take "
        "longer 413",
    )
    v.add_argument(
        "--max-crops", type=int, default=64, metavar="N", help="most crops per image a request may ask for (default 64)"
    )
    v.add_argument(
        "--max-pixels",
        type=int,
        default=100_000_000,
        metavar="N",
        help="largest uploaded image in pixels, width x height (default 100000000); larger ones are not decoded",
    )
    v.add_argument("--timeout", type=float, default=60.0, metavar="S", help="seconds a request may wait (default 60)")
    v.add_argument(
        "--batch-size",
        type=int,
        default=32,
        metavar="N",
        help="most images merged into one round of forwards (default 32)",
    )
    v.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        metavar="MS",
        help="wait for more images this long when a forward would be padded (default 5)",
    )
    v.set_defaults(func=_cmd_serve)


def _map_options(s: argparse.ArgumentParser) -> None:
    """`score`'s quality-map options."""
    s.add_argument(
        "--map",
        metavar="DIR",
        help="also write a quality map per image, DIR/<image stem>.map.png: the scores of a grid of windows over it "
        "(needs matplotlib: the plot extra); --html shows them",
    )
    s.add_argument(
        "--map-stride",
        type=int,
        default=DEFAULT_STRIDE,
        metavar="N",
        help=f"pixels between the map's windows (default {DEFAULT_STRIDE}; smaller is finer and slower)",
    )
    s.add_argument(
        "--map-scale",
        choices=("auto", "fixed"),
        default=None,
        help="the maps' colour scale: fixed (0..1 for every map, so maps compare; the default with --html, whose "
        "page names the colours once) or auto (the default without --html; each map its own lowest..highest window "
        "score, so small differences look large, and colours differ in meaning between maps)",
    )


def _cmd_export(args: argparse.Namespace) -> int:
    """`export OUT.onnx --model M [--format onnx] [--scene S,...]`: the image path as ONNX and its JSON sidecar."""
    if args.format not in FORMATS:
        raise UsageError(f"--format {args.format}: unknown export format; known: {', '.join(FORMATS)}")
    scenes = None if args.scene is None else [s.strip() for s in args.scene.split(",")]
    if scenes is not None and not all(scenes):
        raise UsageError(f"--scene {args.scene!r}: an empty scene name; give names separated by commas (`list scenes`)")
    if not Path(args.output).is_dir() and Path(args.output).suffix.lower() != ".onnx":
        raise UsageError(f"cannot write {args.output}: OUT must end in .onnx (its sidecar OUT.json goes beside it)")
    check_export_path(args.output)  # before the model loads and the (slow) trace: a bad path fails at once
    name = _model_name(args)
    model = create_model(name).eval()
    side = export_onnx(model, args.output, scene=scenes)
    print(f"gamma-iqa export: wrote {args.output} and {side} (model {name}; docs/onnx.md)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand; each sets `func`, its handler."""
    p = argparse.ArgumentParser(prog="gamma-iqa", description="Gamma image quality and aesthetics assessment")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="score images (files, folders, globs, or a manifest)")
    s.add_argument("paths", nargs="*", help="image files, folders (recursive) or glob patterns; - is standard input")
    s.add_argument(
        "--manifest",
        help="CSV (path,scene columns) or JSONL file of images with their scenes; relative paths are relative to it",
    )
    s.add_argument(
        "--hidden",
        action="store_true",
        help="also score hidden files and folders (names starting with '.', e.g. .thumbnails/, ._x.jpg) in folders",
    )
    s.add_argument(
        "--model",
        help=f"registered model name (see `list models`), checkpoint, or training run folder (its best/, else last/); "
        f"default: {DEFAULT_MODEL}",
    )
    s.add_argument("--scene", default=None, help="scene of the images (see `list scenes`); default: the model's")
    s.add_argument("--crops", default="10", help="N random crops (default 10), 'center' or 'none' (whole image)")
    s.add_argument(
        "--seed", type=_seed, default=0, help="seed of the random crops, mixed with each image's pixels (default 0)"
    )
    _add_loader_options(s)
    s.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps; with --check: the recorded one")
    s.add_argument(
        "--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast precision (default fp32)"
    )
    s.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="what runs the forward: torch (default) or onnxruntime (CPU, fp32; the model's ONNX export, cached; "
        "pip install 'gamma-iqa[onnx]')",
    )
    _add_compile_options(s)
    s.add_argument(
        "--format",
        choices=("csv", "json", "jsonl"),
        default=None,
        help="rows as CSV, a JSON array or JSON lines (default: from --output's extension, .json or .jsonl; else csv)",
    )
    s.add_argument("--output", help="write to FILE instead of stdout")
    s.add_argument("--resume", action="store_true", help="skip the rows already in --output and append the rest")
    s.add_argument("--html", metavar="REPORT.html", help="also write a self-contained HTML page of the results")
    s.add_argument(
        "--html-top",
        type=int,
        default=DEFAULT_TOP,
        metavar="N",
        help=f"the page shows the N best and N worst images when there are more than 2N (default {DEFAULT_TOP})",
    )
    s.add_argument("--bpe", help="CLIP BPE vocabulary file (bpe_simple_vocab_16e6.txt.gz)")
    _map_options(s)
    s.add_argument(
        "--details",
        action="store_true",
        help="add columns spread (std of the crop scores) and p_bad..p_perfect (the head's level probabilities)",
    )
    s.add_argument(
        "--check",
        metavar="FILE",
        help="re-score a sample of FILE's rows (an earlier --output) with its recorded settings; exit 1 on a mismatch",
    )
    s.add_argument(
        "--check-rows", type=int, default=CHECK_ROWS, metavar="N", help=f"rows --check re-scores (default {CHECK_ROWS})"
    )
    s.add_argument(
        "--tolerance",
        type=float,
        metavar="T",
        help=f"--check: largest score difference that matches (default {TOLERANCE['fp32']:g} for fp32, "
        f"{TOLERANCE['bf16']:g} for bf16/fp16)",
    )
    _add_scale_options(s)
    s.set_defaults(func=_cmd_score)

    c = sub.add_parser("convert", help="convert an original release checkpoint {'params': ...} to our format")
    c.add_argument("input", help="original .pth")
    c.add_argument("output", help="output folder")
    c.add_argument("--variant", choices=("plain", "sdp"), default="plain", help="plain (generic prompts) or sdp")
    c.add_argument("--bpe", help="CLIP BPE vocabulary to copy into the folder (default: found in open_clip / clip)")
    c.set_defaults(func=_cmd_convert)

    e = sub.add_parser("eval", help="evaluate a model on datasets as the paper does (SRCC, PLCC, KRCC)")
    e.add_argument(
        "--model",
        help=f"registered model name, checkpoint, or training run folder (its best/, else last/); default: "
        f"{DEFAULT_MODEL}",
    )
    e.add_argument("--dataset", required=True, help="comma-separated dataset names (see `list datasets`)")
    e.add_argument("--data-root", required=True, help="folder holding one folder per dataset (see README)")
    e.add_argument(
        "--split",
        type=int,
        help="which split's test part (default 1, as the paper; folder+csv without a split column: every image)",
    )
    e.add_argument("--crops", default="10", help="N random crops per image (default 10), 'center' or 'none'")
    e.add_argument("--seed", type=_seed, default=0, help="seed of the random crops (mixed with each image's pixels)")
    _add_loader_options(e)
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    e.add_argument("--format", choices=("json", "md"), default="json", help="md: a table beside the paper's numbers")
    e.add_argument("--save-predictions", metavar="FILE.csv", help="write dataset,image,mos,mos_norm,prediction")
    e.add_argument("--plot", metavar="DIR", help="write a predicted-vs-MOS scatter PNG per dataset")
    e.add_argument(
        "--csv",
        help="folder+csv: the label CSV (UTF-8; columns image, mos, optional split of train/test: without it every "
        "image is scored unless --split K picks the test part of random split K)",
    )
    e.add_argument("--mos-range", type=float, nargs=2, metavar=("LO", "HI"), help="folder+csv: the MOS scale")
    e.add_argument("--scene", help="folder+csv: the images' scene (see `list scenes`)")
    e.add_argument("--lower-better", action="store_true", help="folder+csv: lower MOS is better (DMOS)")
    e.add_argument("--resize", type=int, metavar="N", help="folder+csv: resize the short side to N pixels first")
    e.add_argument("--image-column", help="folder+csv: the CSV's column of image paths (default image)")
    e.add_argument("--mos-column", help="folder+csv: the CSV's column of MOS values (default mos)")
    e.set_defaults(func=_cmd_eval)
    _add_calibrate_parser(sub)
    _add_serve_parser(sub)

    t = sub.add_parser("train", help="train or fine-tune (the published recipe in configs/*.yaml)")
    t.add_argument("--config", help="YAML file of training settings (configs/gamma.yaml, ...)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting (repeatable)")
    t.add_argument("--out", help="run folder (default: the config's `out`)")
    t.add_argument("--resume", action="store_true", help="continue the run in the run folder from its last checkpoint")
    t.set_defaults(func=_cmd_train)

    x = sub.add_parser("export", help="export a model's image path (crops -> scores) as ONNX, with a JSON sidecar")
    x.add_argument("output", metavar="OUT.onnx", help="the file to write; its sidecar OUT.json goes beside it")
    x.add_argument("--model", help=f"registered model name or checkpoint (default: {DEFAULT_MODEL})")
    x.add_argument("--format", default="onnx", help="export format: onnx (the only one)")
    x.add_argument("--scene", help="scene(s) of the scene table, comma-separated (default: every scene of the model)")
    x.set_defaults(func=_cmd_export)

    ls = sub.add_parser("list", help="list models, scenes or datasets")
    ls.add_argument("what", choices=("models", "scenes", "datasets"))
    ls.set_defaults(func=_cmd_list)
    return p


@functools.cache
def _options() -> frozenset[str]:
    """Every subcommand's long option names, without "--"."""
    root = build_parser()
    parsers = [root] + [
        sp for a in root._actions if isinstance(a, argparse._SubParsersAction) for sp in a.choices.values()
    ]
    return frozenset(
        o[2:] for parser in parsers for a in parser._actions for o in a.option_strings if o.startswith("--")
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on `argv` (default: sys.argv[1:]); returns the exit status."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in the provenance of a score run
    try:
        with warnings.catch_warnings():  # restores showwarning: a Python caller of main keeps its own
            warnings.showwarning = _warning_printer()
            return args.func(args)
    except (UsageError, CheckpointError, ValueError, FileNotFoundError) as e:
        message = e.command_line if isinstance(e, CheckpointError) else str(e)  # without Python-only advice
        print(f"gamma-iqa {args.command}: error: {as_flags(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before or after the work (`score` reports one during it itself)
        print(f"gamma-iqa {args.command}: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as e:  # a decoding worker died (eval, calibrate, train; `score` reports one itself)
        line = _worker_died(e)
        if line is None:
            raise
        advice = "fewer --workers or --workers 0" if hasattr(args, "workers") else "fewer workers (--set workers=0)"
        print(f"gamma-iqa {args.command}: error: {line}; rerun with {advice}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
