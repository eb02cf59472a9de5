"""What to score: expansion of paths, folders and globs, and scene manifests.

Every input becomes an `Entry` in input order; inputs that cannot even be listed (a missing path, an empty folder,
an unreadable folder, a pattern that matches nothing) become entries that carry their error, so that they still get
their row and the run goes on. The rows already written by an interrupted run are the row writer's business
(`gamma_iqa.outputs.writers`).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["IMAGE_EXTENSIONS", "Entry", "expand_paths", "read_manifest"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})


@dataclass(frozen=True)
class Entry:
    """One thing to score, in input order.

    Attributes:
        name: what the output's `path` column says (the path as given, or `<input N>` for an in-memory image).
        source: a path, or an in-memory image (PIL image, numpy array, (3, H, W) float tensor in [0, 1]); None when
            the input could not even be listed.
        scene: the scene its prompt is chosen by; None: the model's default scene.
        error: why the input cannot be scored (its row carries it); None for a scorable input.
        resize: short side in pixels the image is resized to before cropping (datasets scored at one scale).
    """

    name: str
    source: Any = None
    scene: str | None = None
    error: str | None = None
    resize: int | None = None


def _walk(folder: Path) -> tuple[list[Path], list[Entry]]:
    """Image files under `folder` (sorted), and an error entry for each subfolder that cannot be read."""
    files: list[Path] = []
    errors: list[Entry] = []

    def onerror(e: OSError) -> None:
        errors.append(Entry(str(e.filename or folder), error=f"cannot read folder ({e.strerror or e})"))

    for root, dirs, names in os.walk(folder, onerror=onerror):
        dirs.sort()
        files.extend(Path(root) / n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS)
    return sorted(files), errors


def expand_paths(paths: Iterable[str], scene: str | None = None) -> list[Entry]:
    """Entries for paths: files as given, folders recursively (sorted, image extensions in any case), globs sorted.

    Args:
        paths: files, folders or glob patterns, in the order their entries come out.
        scene: the scene of every entry; None: the model's default.

    Returns:
        One entry per image found, plus an entry carrying its error for each input that lists nothing (no such file
        or folder, a folder without images, an unreadable folder, a pattern matching no file).
    """
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


def _records(path: Path, text: str) -> list[Any]:
    """The records of manifest `path` (its `text`): JSONL objects, or CSV rows as mappings of the header's columns."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        records = []
        for n, line in enumerate(text.split("\n"), 1):  # only \n ends a line: JSON escapes it inside strings
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"`manifest` {path}: line {n} is not JSON ({e.msg})") from None
        return records
    reader = csv.DictReader(io.StringIO(text, newline=""))  # a quoted field may hold a newline (a file name)
    records = list(reader)
    if "path" not in (reader.fieldnames or []):
        raise ValueError(f"`manifest` {path}: the CSV needs a header with a 'path' column (and optionally 'scene')")
    return records


def read_manifest(path: str | Path, default_scene: str | None = None) -> list[Entry]:
    """Entries from a CSV (header with `path` and optionally `scene`) or JSONL file ({"path": ..., "scene": ...}).

    Relative paths are taken from the manifest's folder; a folder in it is expanded as `expand_paths` does. An empty
    scene falls back to `default_scene`. The file is UTF-8; bytes that are not (a Linux file name in another encoding)
    are kept as surrogate escapes, so a CSV written by `gamma-iqa score` serves as a manifest of the same files.

    Raises:
        ValueError: the manifest cannot be read, a JSONL line is not JSON, the CSV has no `path` column, or a record
            has no path (the message names the `manifest` parameter and the file).
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig", "surrogateescape")  # no newline translation: names stay exact
    except OSError as e:
        raise ValueError(f"`manifest` {path}: cannot read ({e.strerror or e})") from None
    out = []
    for n, rec in enumerate(_records(path, text), 1):
        if not isinstance(rec, dict) or not rec.get("path"):
            raise ValueError(f"`manifest` {path}: record {n} has no path")
        name = str(rec["path"])
        source = Path(name) if Path(name).is_absolute() else path.parent / name
        scene = rec.get("scene") or default_scene
        if source.is_dir():
            out.extend(expand_paths([str(source)], scene))
        elif source.exists():
            out.append(Entry(name, source, scene))
        else:
            out.append(Entry(name, scene=scene, error="no such file or folder"))
    return out
