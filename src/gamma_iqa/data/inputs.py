"""What to score: expansion of paths, folders and globs, standard input, and scene manifests.

Every input becomes an `Entry` in input order; inputs that cannot even be listed (a missing path, an empty folder,
an unreadable folder, a pattern that matches nothing) become entries that carry their error, so that they still get
their row and the run goes on. The rows already written by an interrupted run are the row writer's business
(`gamma_iqa.outputs.writers`).

Folders are searched recursively for every extension Pillow can decode (`image_extensions`), plus HEIC/HEIF, whose
rows say which optional package reads them when it is missing. Symlinked sub-folders are followed, each real folder
listed once (after the real sub-folders, so a file keeps its real path when it has one), so a link loop ends. Names
starting with "." (hidden files and folders such as `.thumbnails/`, macOS's AppleDouble `._*` files) are skipped unless
`hidden` is set. `-` is standard input, and a pipe or device (`/dev/stdin`, `<(...)`) is read whole when listed, since a
stream can be read only once.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile

from .transforms import HEIF_SUFFIXES

__all__ = ["STREAM_LIMIT", "Entry", "expand_paths", "image_extensions", "is_stream", "read_manifest"]

# Largest stream (standard input, a pipe) read as one image, in bytes: it is held in memory until it is scored.
STREAM_LIMIT = 1 << 30
# Extensions a folder search also lists though no plugin reads them: their rows name the package that would.
OPTIONAL_EXTENSIONS = frozenset(HEIF_SUFFIXES)
# Formats Pillow opens but cannot decode: MPEG is identified only (its pixels would be blank).
_IDENTIFY_ONLY = frozenset({"MPEG"})


@dataclass(frozen=True)
class Entry:
    """One thing to score, in input order.

    Attributes:
        name: what the output's `path` column says (the path as given, or `<input N>` for an in-memory image).
        source: a path, the bytes of an image file (a stream read whole), or an in-memory image (PIL image, numpy
            array, (3, H, W) float tensor in [0, 1]); None when the input could not even be listed.
        scene: the scene its prompt is chosen by; None: the model's default scene.
        error: why the input cannot be scored (its row carries it); None for a scorable input.
        resize: short side in pixels the image is resized to before cropping (datasets scored at one scale).
    """

    name: str
    source: Any = None
    scene: str | None = None
    error: str | None = None
    resize: int | None = None


def _decodes(fmt: str) -> bool:
    """Whether Pillow can decode format `fmt` here (not only identify it, or need a handler or program it lacks)."""
    if fmt == "MPO":  # multi-picture JPEGs open through the JPEG plugin
        return True
    if fmt not in Image.OPEN or fmt in _IDENTIFY_ONLY:  # PDF and PALM are written only
        return False
    factory = Image.OPEN[fmt][0]
    if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
        # BUFR, GRIB, HDF5, WMF: only with an application's handler (a class attribute, a module global before 10)
        module = sys.modules.get(factory.__module__)
        return getattr(factory, "_handler", None) is not None or getattr(module, "_handler", None) is not None
    if fmt == "EPS":
        from PIL import EpsImagePlugin

        return bool(EpsImagePlugin.has_ghostscript())
    return True


def image_extensions() -> frozenset[str]:
    """The extensions (lower case, with the dot) a folder search lists: every one Pillow decodes, and HEIC/HEIF.

    Derived from Pillow's registered plugins at each call, so a plugin registered later (pillow-heif) counts.
    """
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if _decodes(fmt)) | OPTIONAL_EXTENSIONS


def _skipped(name: str, hidden: bool) -> bool:
    """Whether a folder search skips `name`: hidden names (".thumbnails", "._x.jpg") unless `hidden`."""
    return not hidden and name.startswith(".")


def _list_folder(folder: str, hidden: bool, extensions: frozenset[str]) -> tuple[list[str], list[str], list[str]]:
    """(image files, real sub-folders, symlinked sub-folders) of one folder, skipped names left out.

    Raises:
        OSError: the folder cannot be read.
    """
    files, dirs, links = [], [], []
    with os.scandir(folder) as it:
        for e in it:
            if _skipped(e.name, hidden):
                continue
            try:
                is_dir = e.is_dir()  # follows a symlink; a broken one is not a folder
            except OSError:
                is_dir = False
            if is_dir:
                (links if e.is_symlink() else dirs).append(e.path)
            elif os.path.splitext(e.name)[1].lower() in extensions:
                files.append(e.path)  # also a broken link or a special file: its row says why it fails
    return files, dirs, links


def _walk(folder: Path, hidden: bool = False) -> tuple[list[Path], list[Entry], list[str]]:
    """Image files under `folder` (sorted), an error entry for each subfolder that cannot be read, and the folders.

    Real sub-folders are listed before symlinked ones, and every real folder once (by device and inode), so a link
    to a folder already listed, or a loop, adds nothing. The folders come in the order they were listed, `folder`
    first.
    """
    extensions = image_extensions()
    files: list[str] = []
    errors: list[Entry] = []
    folders: list[str] = []
    seen: set[tuple[int, int]] = set()
    todo, links = [str(folder)], []
    while todo or links:
        current = todo.pop() if todo else links.pop(0)
        try:
            info = os.stat(current)
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            found, dirs, linked = _list_folder(current, hidden, extensions)
        except OSError as e:
            errors.append(Entry(str(e.filename or current), error=f"cannot read folder ({e.strerror or e})"))
            continue
        folders.append(current)
        files += found
        todo += sorted(dirs, reverse=True)  # popped from the end: in name order
        links += sorted(linked)
    return sorted(Path(f) for f in files), errors, folders


_STDIN_NAMES = frozenset({"-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"})  # the names of standard input


def is_stream(raw: str) -> bool:
    """Whether `raw` names a stream, read once: `-`, standard input or a file descriptor, a pipe or a device."""
    if raw == "-" or raw == "/dev/stdin" or raw.startswith(("/dev/fd/", "/proc/self/fd/")):
        return True
    try:
        mode = os.stat(raw).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _read_stream(raw: str, scene: str | None) -> Entry:
    """The entry of stream `raw` (see `is_stream`), read whole now: its bytes, or why it cannot be scored."""
    try:
        if raw == "-":
            if sys.stdin is None or sys.stdin.isatty():
                return Entry(raw, scene=scene, error="standard input is a terminal: pipe an image into it")
            data = sys.stdin.buffer.read(STREAM_LIMIT + 1)
        else:
            with open(raw, "rb") as fp:
                data = fp.read(STREAM_LIMIT + 1)
    except OSError as e:
        return Entry(raw, scene=scene, error=f"cannot read ({e.strerror or e})")
    if not data:
        return Entry(raw, scene=scene, error="empty input (0 bytes)")
    if len(data) > STREAM_LIMIT:
        return Entry(raw, scene=scene, error=f"stream over {STREAM_LIMIT:,} bytes (save it as a file and score that)")
    return Entry(raw, data, scene)


def _glob(raw: str, hidden: bool) -> list[Path]:
    """Files matching pattern `raw`, sorted; `**` goes through each real folder once, as folder searches do.

    Python's recursive glob follows symlinked folders without end (a loop gives a file once per level, until the
    path is too long); here the folders under the part before `**` are those `_walk` lists, and the rest of the
    pattern is matched in each of them.
    """
    kwargs = {"include_hidden": True} if hidden and sys.version_info >= (3, 11) else {}
    parts = Path(raw).parts
    if "**" not in parts:
        return sorted(Path(m) for m in glob.glob(raw, **kwargs) if Path(m).is_file())
    cut = parts.index("**")
    head, rest = Path(*parts[:cut]) if cut else Path("."), parts[cut + 1 :] or ("*",)
    tops = [head] if not glob.has_magic(str(head)) else sorted(Path(m) for m in glob.glob(str(head), **kwargs))
    found: set[Path] = set()
    for top in (t for t in tops if t.is_dir()):
        for folder in _walk(top, hidden)[2]:
            found.update(_glob(os.path.join(glob.escape(folder), *rest), hidden))
    return sorted(found)


def expand_paths(paths: Iterable[str], scene: str | None = None, *, hidden: bool = False) -> list[Entry]:
    """Entries for paths: files as given, folders recursively (sorted, image extensions in any case), globs sorted.

    Args:
        paths: files, folders or glob patterns, in the order their entries come out; `-` is standard input, read
            whole as one image (as is a pipe, e.g. `/dev/stdin`).
        scene: the scene of every entry; None: the model's default.
        hidden: also list hidden files and folders (names starting with ".") in folders and patterns.

    Returns:
        One entry per image found, plus an entry carrying its error for each input that lists nothing (no such file
        or folder, a folder without images, an unreadable folder, a pattern matching no file, an empty stream).

    Raises:
        ValueError: standard input is named more than once (`-`, `/dev/stdin`): the second would read nothing.
    """
    paths = list(paths)
    stdin = [raw for raw in paths if raw in _STDIN_NAMES]
    if len(stdin) > 1:
        raise ValueError(
            f"standard input is given {len(stdin)} times ({' '.join(stdin)}): it can be read only once, so give it once"
        )
    out: list[Entry] = []
    for raw in paths:
        p = Path(raw)
        if is_stream(raw):
            out.append(_read_stream(raw, scene))
        elif p.is_dir():
            files, errors, _ = _walk(p, hidden)
            out.extend(Entry(str(f), f, scene) for f in files)
            out.extend(errors)
            if not files and not errors:
                out.append(Entry(raw, error="folder holds no images"))
        elif p.exists() or p.is_symlink():
            out.append(Entry(raw, p, scene))
        elif glob.has_magic(raw):
            matches = _glob(raw, hidden)
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


def read_manifest(path: str | Path, default_scene: str | None = None, *, hidden: bool = False) -> list[Entry]:
    """Entries from a CSV (header with `path` and optionally `scene`) or JSONL file ({"path": ..., "scene": ...}).

    Relative paths are relative to the manifest's folder, not to the working directory; a path that is not there
    gets an error row naming the path tried. A folder in it is expanded as `expand_paths` does (with `hidden`). An
    empty scene falls back to `default_scene`. The file is UTF-8; bytes that are not (a Linux file name in another
    encoding) are kept as surrogate escapes, so a CSV written by `gamma-iqa score` serves as a manifest of the same
    files.

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
            out.extend(expand_paths([str(source)], scene, hidden=hidden))
        elif source.exists():
            out.append(Entry(name, source, scene))
        else:
            out.append(Entry(name, scene=scene, error=f"no such file or folder: {source}"))
    return out
