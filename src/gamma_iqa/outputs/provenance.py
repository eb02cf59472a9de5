"""Where a score run's numbers came from, and whether they can still be reproduced.

`collect` records what a score depends on: the package version, the model (its name, the argument it was made from,
the SHA-256 of its checkpoint files and of its parameters), the scoring settings (scene, crops, seed, dtype, details),
the device, the working directory (`cwd`: relative image paths are relative to it), and the versions of Python,
torch, numpy, Pillow and Pillow's JPEG library. `run_score` writes it beside `--output` as `OUTPUT.provenance.json`
(`sidecar`), whatever the format, and into the HTML report. Two runs of the same command on the same setup give the
same record except for its `started` and `finished` times (UTC, ISO 8601).

`check_output` re-scores a seeded sample of an earlier output's rows with the settings its record gives, and says
whether the scores still match within `tolerance` (fp32: 1e-5; bf16 and fp16: 1e-2, as their 8 and 11 bits allow).
Rows whose image cannot be read again (moved, deleted, or read from standard input) are set apart as failures: they
neither match nor mismatch. The extra columns are checked too: `mos` recomputed from the score now with the recorded
MOS scale, `calibrated` through the calibration file the record names (`calibration`: its path and SHA-256), a file
changed since giving a note and, where its values differ, mismatches.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
from PIL import features

from .._version import __version__
from ..data.inputs import Entry, is_stream
from ..engine.calibration import CALIBRATED_COLUMN, MOS_COLUMN, load_calibration, mos_dataset
from ..engine.scoring import Scorer
from ..models.base import QualityModel
from ..models.factory import create_model
from ..models.state import file_sha256, read_json, state_sha256, write_json
from .writers import read_rows

__all__ = [
    "CHECK_ROWS",
    "TIMES",
    "TOLERANCE",
    "CheckResult",
    "check_output",
    "collect",
    "read_provenance",
    "settings_of",
    "sidecar",
    "utc_now",
    "write_provenance",
]

CHECK_ROWS = 20  # rows re-scored by `check_output` by default
TOLERANCE = {"fp32": 1e-5, "bf16": 1e-2, "fp16": 1e-2}  # largest |recorded - now| that still matches, by dtype
TIMES = ("started", "finished")  # the keys that differ between two runs of the same command
# what must not change within one output file
_SETTINGS = ("model", "scenes", "crops", "seed", "dtype", "details", "columns")


def sidecar(output: str | os.PathLike[str]) -> Path:
    """The provenance file of an output file: `OUTPUT.provenance.json` beside it."""
    output = Path(output)
    return output.with_name(output.name + ".provenance.json")


def _versions(device: torch.device) -> dict[str, Any]:
    """The versions of what the scores depend on: Python, torch, numpy, Pillow and its JPEG library (and CUDA)."""
    versions: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "jpeg": features.version("jpg"),  # libjpeg's version, as Pillow was built with it
        "libjpeg_turbo": features.version("libjpeg_turbo"),  # its own version; None: plain libjpeg
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        versions["cuda"] = torch.version.cuda
        versions["cudnn"] = torch.backends.cudnn.version()
        versions["gpu"] = torch.cuda.get_device_name(device)
    return versions


def utc_now() -> str:
    """The time now, UTC, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def collect(
    model: QualityModel,
    *,
    model_argument: str | None = None,
    scenes: Sequence[str] = (),
    crops: str | int = 10,
    seed: int = 0,
    dtype: str = "fp32",
    details: bool = False,
    fmt: str = "csv",
    processes: int = 1,
    command: Sequence[str] | None = None,
    columns: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The provenance record of a score run (see the module text), with `started` now and `finished` None.

    Args:
        model: the model scoring, on its device.
        model_argument: what the model was made from (a registered name or a checkpoint path), which `check_output`
            passes to `create_model`; default its config's name.
        scenes: the scenes the run's images were scored with (each row's `scene` column says which).
        crops: the crop mode.
        seed: the crops' seed.
        dtype: the precision scored in (the Scorer's `dtype`: bf16 asked for on a CPU where it is slower scores, and
            is recorded, as fp32).
        details: whether the rows carry the detail columns.
        fmt: the output's format.
        processes: the torchrun processes that scored (1 without torchrun).
        command: the command line's arguments, when the run came from it.
        columns: the extra columns and what each comes from (`calibration.describe_columns`: a MOS scale, a
            calibration's content hash); None without extra columns.

    Returns:
        A JSON-serialisable dict.
    """
    device = next(model.parameters()).device
    files = [{"file": str(p), "sha256": file_sha256(p)} for p in model.checkpoint_files]
    return {
        "gamma_iqa": __version__,
        "command": None if command is None else list(command),
        "model": {
            "name": model.config.name,
            "argument": model_argument or model.config.name,
            "kind": model.kind,
            "files": files,  # empty: built fresh by its family (seeded, so the same on every run)
            "parameters_sha256": state_sha256(model),
        },
        "scenes": sorted(set(scenes)),
        "crops": str(crops),
        "seed": seed,
        "dtype": dtype,
        "details": details,
        "columns": None if not columns else dict(columns),
        "format": fmt,
        "cwd": os.getcwd(),  # relative image paths in the rows are relative to it (`check_output` resolves them so)
        "device": str(device),
        "processes": processes,
        "versions": _versions(device),
        "started": utc_now(),
        "finished": None,
    }


def settings_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a record that fixes the rows (model, scenes, crops, seed, dtype, details, extra columns' sources).

    One per output file; a record written before `columns` existed reads as None there, as a run without extra columns.
    """
    return {k: record.get(k) for k in _SETTINGS}


def write_provenance(path: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    """Write `record` to `path` as indented JSON, atomically (a kill never leaves half a file); returns the path."""
    return write_json(path, record)


def read_provenance(output: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance record of an output file (its `sidecar`).

    Raises:
        FileNotFoundError: the output has no provenance file (names it).
        ValueError: the provenance file is not a JSON object.
    """
    path = sidecar(output)
    if not path.is_file():
        raise FileNotFoundError(f"{output}: no provenance file {path} (written by gamma-iqa score --output)")
    try:
        record = read_json(path)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if not isinstance(record, dict) or "model" not in record:
        raise ValueError(f"{path}: not a gamma-iqa provenance record")
    return record


@dataclass
class CheckResult:
    """What `check_output` found.

    Attributes:
        checked: (path, recorded score, score now) of each re-scored row, in file order.
        columns: (path, column, recorded value, value now) of each extra column (`mos`, `calibrated`) of the re-scored
            rows that no longer matches: recomputed from the score now with the recorded scale or calibration file.
        tolerance: the largest difference that still matches.
        total: the scored rows of the output (the sample was drawn from them).
        notes: differences between the recorded setup and this one (weights, versions, device), one line each.
        failures: (path, why) of sampled rows that could not be re-read now (a moved or deleted file, standard
            input): they are neither matches nor mismatches.
    """

    checked: list[tuple[str, float, float]] = field(default_factory=list)
    columns: list[tuple[str, str, float, float]] = field(default_factory=list)
    tolerance: float = 0.0
    total: int = 0
    notes: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def mismatched(self) -> list[tuple[str, float, float]]:
        """The checked rows whose score moved by more than `tolerance`."""
        return [c for c in self.checked if abs(c[1] - c[2]) > self.tolerance]

    @property
    def ok(self) -> bool:
        """Whether every row scored again matched within `tolerance`, extra columns too (unreadable rows aside)."""
        return not self.mismatched and not self.columns

    @property
    def max_difference(self) -> float:
        """The largest |recorded - now| over the checked rows (0 when none)."""
        return max((abs(a - b) for _, a, b in self.checked), default=0.0)


def _scored_rows(output: Path, fmt: str) -> list[dict[str, Any]]:
    """The rows of `output` that carry a score (csv, jsonl or json).

    Raises:
        ValueError: `output` is not a file of score rows (one line naming `check`).
    """
    try:
        with open(output, encoding="utf-8", errors="replace") as f:
            header = f.readline()
        if fmt == "csv" and "path" not in header.strip().split(","):  # a CSV of rows starts with its header line
            raise ValueError("no header")
        rows = json.loads(output.read_text(encoding="utf-8")) if fmt == "json" else list(read_rows(output, fmt))
        if not (isinstance(rows, list) and all(isinstance(r, dict) and "path" in r for r in rows)):
            raise ValueError("rows without a path")
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"`check` {output}: not a file of score rows (as gamma-iqa score --output writes)") from None
    return [r for r in rows if r.get("score") not in (None, "")]


def _notes(record: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """One line per difference between the recorded setup and this one that may move the scores."""
    notes = []
    if record["model"].get("parameters_sha256") != now["model"]["parameters_sha256"]:
        notes.append(
            f"the model's parameters changed (SHA-256 {record['model'].get('parameters_sha256', '?')[:12]} "
            f"then, {now['model']['parameters_sha256'][:12]} now)"
        )
    if record.get("device") != now["device"]:
        notes.append(f"device {record.get('device')} then, {now['device']} now")
    for key, value in now["versions"].items():
        if record.get("versions", {}).get(key) != value:
            notes.append(f"{key} {record.get('versions', {}).get(key)} then, {value} now")
    return notes


def check_output(
    output: str | os.PathLike[str],
    *,
    check_rows: int = CHECK_ROWS,
    seed: int = 0,
    tolerance: float | None = None,
    device: str | torch.device | None = None,
    load: Callable[[str], QualityModel] = create_model,
) -> CheckResult:
    """Re-score a seeded sample of `output`'s scored rows with its recorded settings and compare the scores.

    The model is made again from the recorded argument (a registered name or a checkpoint path), so a checkpoint
    replaced under the same name shows as mismatching scores (and a note on its parameters' SHA-256).

    Args:
        output: an output file of `gamma-iqa score --output` (csv, jsonl or json) with its provenance file.
        check_rows: how many scored rows to re-score (all of them when there are fewer), >= 1.
        seed: seeds the choice of rows.
        tolerance: the largest |recorded - now| score that matches, a finite number >= 0; default TOLERANCE of the
            recorded dtype. The extra columns match within what it allows through their map.
        device: where to score; default the recorded device.
        load: makes the model from the recorded argument (`create_model`).

    Returns:
        The CheckResult.

    Raises:
        FileNotFoundError: no output or no provenance file.
        ValueError: `check_rows` below 1, `tolerance` negative or not finite, a bad provenance file, or an output that
            is not score rows (naming `check`).
        CheckpointError: the recorded model cannot be made any more.
    """
    if check_rows < 1:
        raise ValueError(f"`check_rows` must be >= 1, got {check_rows}")
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"`tolerance` must be a finite number >= 0, got {tolerance}")
    output = Path(output)
    if not output.is_file():
        raise FileNotFoundError(f"{output}: no such file")
    record = read_provenance(output)
    model = load(record["model"]["argument"]).to(device if device is not None else record["device"])
    scored = _scored_rows(output, record.get("format", "csv"))
    picked = sorted(random.Random(seed).sample(range(len(scored)), min(check_rows, len(scored))))
    entries = [_entry(scored[i], record.get("cwd")) for i in picked]
    dtype = record.get("dtype", "fp32")
    scorer = Scorer(model, crops=record.get("crops", "10"), seed=int(record.get("seed", 0)), dtype=dtype)
    result = CheckResult(tolerance=TOLERANCE.get(dtype, 1e-2) if tolerance is None else tolerance, total=len(scored))
    for i, row in zip(picked, scorer.run(entries), strict=True):
        if row.error is not None or row.score is None:
            result.failures.append((row.path, row.error or "no score"))
        else:
            result.checked.append((row.path, float(scored[i]["score"]), row.score))
    now = collect(model, dtype=scorer.dtype)
    result.notes = _notes(record, now)
    maps, notes = _column_maps(record)
    result.notes += notes
    by_path = {}
    for i in picked:
        by_path.setdefault(scored[i]["path"], scored[i])
    for path, _, score in result.checked:
        result.columns += _column_mismatches(by_path[path], score, maps, result.tolerance)
    return result


def _column_maps(record: Mapping[str, Any]) -> tuple[dict[str, Callable[[float], float]], list[str]]:
    """The maps that made the record's extra columns, made again ({column: map}), and notes on what changed.

    `mos`: the recorded MOS scale. `calibrated`: the calibration file the record names, with a note when its SHA-256
    differs from the recorded one (recalibrated in place), or when it is gone (the column is then not checked).
    """
    columns = record.get("columns") or {}
    maps: dict[str, Callable[[float], float]] = {}
    notes: list[str] = []
    source = columns.get(MOS_COLUMN, "")
    if source.startswith("mos scale "):
        maps[MOS_COLUMN] = mos_dataset(source[len("mos scale ") :]).denormalise
    if CALIBRATED_COLUMN in columns:
        cal = record.get("calibration") or {}
        path = cal.get("file")
        if not path or not Path(path).is_file():
            gone = f"the calibration file {path} is gone" if path else "the record names no calibration file"
            notes.append(f"{gone}: the calibrated column is not checked")
        else:
            if file_sha256(path) != cal.get("sha256"):
                notes.append(
                    f"the calibration file {path} changed (SHA-256 {str(cal.get('sha256'))[:12]} then, "
                    f"{file_sha256(path)[:12]} now)"
                )
            maps[CALIBRATED_COLUMN] = load_calibration(path)
    return maps, notes


def _column_mismatches(
    row: Mapping[str, Any], score: float, maps: Mapping[str, Callable[[float], float]], tolerance: float
) -> list[tuple[str, str, float, float]]:
    """(path, column, recorded, now) of each extra column of `row` whose recorded value is not its map of `score`.

    A value matches within what `tolerance` on the score allows through the map (its change over score +- tolerance),
    plus a relative 1e-9 for the digits the output kept.
    """
    out = []
    for column, fn in maps.items():
        recorded = row.get(column)
        if recorded in (None, ""):
            continue
        then, now = float(recorded), float(fn(score))
        allowed = max(abs(float(fn(score + d)) - now) for d in (-tolerance, tolerance)) + 1e-9 * max(1.0, abs(now))
        if not abs(then - now) <= allowed:
            out.append((row["path"], column, then, now))
    return out


def _entry(row: Mapping[str, Any], cwd: str | None) -> Entry:
    """The entry re-scoring an output row: its path, or the path relative to the recorded working directory `cwd`.

    A relative path is taken as it is when it exists from here, else relative to `cwd` (the run's working directory,
    recorded since provenance files carry it). A stream (standard input, a pipe) cannot be read again: the entry
    carries that as its error.
    """
    path, scene = row["path"], row.get("scene") or None
    if is_stream(path):
        return Entry(path, scene=scene, error="read from standard input or a pipe, which cannot be read again")
    source = Path(path)
    if cwd and not source.is_absolute() and not source.exists() and (Path(cwd) / source).exists():
        source = Path(cwd) / source
    return Entry(path, source, scene)
