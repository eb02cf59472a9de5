"""What to score: expansion of paths, folders and globs, scene manifests, and rows already written (for --resume).

Every input becomes an `Entry` in input order; inputs that cannot even be listed (a missing path, an empty folder,
an unreadable folder, a pattern that matches nothing) become entries that carry their error, so that they still get
their row and the run goes on.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["IMAGE_EXTENSIONS", "Entry", "drop_partial_line", "expand_paths", "read_done", "read_manifest", "skip_done"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})


@dataclass(frozen=True)
class Entry:
    """One thing to score: `source` is a path or an in-memory image; `label` is what the output's path column says."""

    label: str
    source: Any = None
    scene: str | None = None
    error: str | None = None
    resize: int | None = None  # short side resized to this before cropping (datasets scored at one scale)


def _walk(folder: Path) -> tuple[list[Path], list[Entry]]:
    files: list[Path] = []
    errors: list[Entry] = []

    def onerror(e: OSError) -> None:
        errors.append(Entry(str(e.filename or folder), error=f"cannot read folder ({e.strerror or e})"))

    for root, dirs, names in os.walk(folder, onerror=onerror):
        dirs.sort()
        files.extend(Path(root) / n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS)
    return sorted(files), errors


def expand_paths(paths: Iterable[str], scene: str | None = None) -> list[Entry]:
    """Files as given; folders recursively (sorted, image extensions in any case); glob patterns sorted."""
    out: list[Entry] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files, errors = _walk(p)
            out.extend(Entry(str(f), f, scene) for f in files)
            out.extend(errors)
            if not files and not errors:
                out.append(Entry(raw, error="folder holds no images"))
        elif p.exists() or p.is_symlink():
            out.append(Entry(raw, p, scene))
        elif glob.has_magic(raw):
            matches = sorted(Path(m) for m in glob.glob(raw, recursive=True) if Path(m).is_file())
            out.extend(Entry(str(m), m, scene) for m in matches)
            if not matches:
                out.append(Entry(raw, error="pattern matches no file"))
        else:
            out.append(Entry(raw, error="no such file or folder"))
    return out


def read_manifest(path: str | Path, default_scene: str | None = None) -> list[Entry]:
    """Entries from a CSV (header with `path` and optionally `scene`) or JSONL file ({"path": ..., "scene": ...}).

    Relative paths are taken from the manifest's folder. An empty scene falls back to `default_scene`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ValueError(f"--manifest {path}: cannot read ({e.strerror or e})") from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"--manifest {path}: line {n} is not JSON ({e.msg})") from None
    else:
        reader = csv.DictReader(text.splitlines())
        records = list(reader)
        if "path" not in (reader.fieldnames or []):
            raise ValueError(f"--manifest {path}: the CSV needs a header with a 'path' column (and optionally 'scene')")
    out = []
    for n, rec in enumerate(records, 1):
        if not isinstance(rec, dict) or not rec.get("path"):
            raise ValueError(f"--manifest {path}: record {n} has no path")
        label = str(rec["path"])
        source = Path(label) if Path(label).is_absolute() else path.parent / label
        scene = rec.get("scene") or default_scene
        if source.is_dir():
            out.extend(expand_paths([str(source)], scene))
        elif source.exists():
            out.append(Entry(label, source, scene))
        else:
            out.append(Entry(label, scene=scene, error="no such file or folder"))
    return out


def read_done(output: str | Path, fmt: str) -> Counter[str]:
    """Paths (with multiplicity) of the complete rows already in `output`, for --resume. A last line cut short by a
    kill does not count (the writer removes it before appending: see `drop_partial_line`)."""
    output = Path(output)
    if not output.exists():
        return Counter()
    data = output.read_bytes()
    lines = data[: data.rfind(b"\n") + 1].decode("utf-8").splitlines()
    if fmt == "jsonl":
        return Counter(json.loads(line)["path"] for line in lines if line.strip())
    return Counter(r["path"] for r in csv.DictReader(lines))


def drop_partial_line(output: str | Path) -> None:
    """Cut a last line that a kill left unfinished; complete rows are never touched."""
    output = Path(output)
    data = output.read_bytes()
    if data and not data.endswith(b"\n"):
        with output.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def skip_done(entries: Sequence[Entry], done: Counter[str]) -> list[Entry]:
    """Entries not yet written: each written row cancels one entry with the same path."""
    left = Counter(done)
    out = []
    for e in entries:
        if left[e.label] > 0:
            left[e.label] -= 1
        else:
            out.append(e)
    return out
