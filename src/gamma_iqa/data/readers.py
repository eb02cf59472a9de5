"""Readers of each dataset's label files as its authors release them.

A reader takes the dataset's folder and returns `Labels`: (image path relative to that folder, raw MOS) pairs and,
where the release defines one, its official train/test assignment. Readers never open images: a missing image is
found and reported at evaluation. Layouts (names matched case-insensitively, a few folder levels deep):

- LIVE (release 2, `databaserelease2/`): `dmos_realigned.mat` (`dmos_new`, `orgs`), else `dmos.mat` (`dmos`, `orgs`);
  982 entries in release order jp2k (227), jpeg (233), wn (174), gblur (174), fastfading (174), images
  `<folder>/img<i>.bmp`; entries with `orgs == 1` are the reference copies and are dropped (779 remain).
- CSIQ: `csiq.DMOS.xlsx`, sheet `all_by_image` (columns `image, dst_type, dst_lev, dmos`); images
  `dst_imgs/<TYPE>/<image>.<TYPE>.<lev>.png` with types AWGN, JPEG, jpeg2000, fnoise, BLUR, contrast.
- TID2013: `mos_with_names.txt` (`<mos> <name>` per line); images `distorted_images/<name>`.
- KADID-10k: `dmos.csv` (`dist_img, ref_img, dmos, var`); images `images/<dist_img>`.
- LIVE Challenge (`ChallengeDB_release/`): `Data/AllImages_release.mat` and `Data/AllMOS_release.mat`; the first 7
  entries are the training images shown to raters and are dropped; images `Images/<name>`.
- KonIQ-10k: `koniq10k_scores_and_distributions.csv` (`image_name, ..., MOS, SD, MOS_zscore`; MOS_zscore is the
  [0, 100] score used); images `512x384/` (else `1024x768/`, with a warning); official split from
  `koniq10k_distributions_sets.csv` (`set`: training, validation -> train; test -> test) when present.
- SPAQ: `Annotations/MOS and Image attribute scores.xlsx` (`Image name, MOS, ...`); images from a pre-resized folder
  whose name contains 384 (the paper's `384_oneside`) if there is one, else `TestImage/`.
- GFIQA-20k and UWIQA: one CSV or XLSX label table in the dataset folder with an image-name column (image, img_name,
  image_name, name, filename) and a MOS column (mos, score); images found by name anywhere in the folder.
- AGIQA-3K: `data.csv` (`name, prompt, ..., mos_quality, std_quality, mos_align, std_align`; mos_quality is used).
- AADB: `imgListTrainRegression_score.txt`, `imgListValidationRegression_score.txt`,
  `imgListTestNewRegression_score.txt` (`<name> <score>` per line; the list names give the official split, validation
  joining train); images `datasetImages_originalSize/`.
- AVA: `AVA.txt` (`index id c1..c10 tag1 tag2 challenge`, MOS = mean vote); images `images/<id>.jpg`; official test
  list `aesthetics_image_lists/generic_test.jpgl` when present.
- PIPAL: `Train_Label/A*.txt` (`<name>,<elo score>` per line); images found by name (`Train_Dist/` or
  `Distortion_*/`).
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import fnmatch
import importlib
import io
import math
import os
import posixpath
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "LabelFileError",
    "Labels",
    "MissingDependencyError",
    "numbered_rows",
    "read_folder_csv",
    "read_groups",
    "recording_files",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class Labels(NamedTuple):
    """What a reader returns: the labelled images of a release and, where it defines one, its official split."""

    items: list[tuple[str, float]]  # (image path relative to the dataset folder, raw MOS)
    official: list[str] | None = None  # per item "train" / "test", where the release defines a split


# The label files read so far inside `recording_files` (None outside it).
_FILES_READ: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar("label_files_read", default=None)


@contextlib.contextmanager
def recording_files() -> Iterator[list[Path]]:
    """Collect, within the block, every label file the readers read (in first-read order).

    A split file records them, and later checks them, as what it was drawn from.
    """
    files: list[Path] = []
    token = _FILES_READ.set(files)
    try:
        yield files
    finally:
        _FILES_READ.reset(token)


def _note(path: Path) -> Path:
    """`path`, recorded as read when inside `recording_files`."""
    files = _FILES_READ.get()
    if files is not None and Path(path) not in files:
        files.append(Path(path))
    return path


class MissingDependencyError(ImportError):
    """An optional package needed to read a label format is not installed."""


class LabelFileError(ValueError):
    """A label or split file that cannot be read as one.

    The one-line message names the file, the line and what was expected there.
    """


def _require(module: str, package: str, what: Path) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"reading {what.name} needs {package}: pip install {package} (or pip install 'gamma-iqa[data]')"
        ) from None


# ---- finding files ---------------------------------------------------------------------------------------------------
def _walk(root: Path, depth: int) -> Iterable[tuple[Path, list[str], list[str]]]:
    """(folder, its subfolder names, its file names), breadth-first, sorted, `depth` levels below `root` at most."""
    queue = deque([(root, 0)])
    while queue:
        here, level = queue.popleft()
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError:
            continue
        dirs = [e.name for e in entries if e.is_dir()]
        yield here, dirs, [e.name for e in entries if not e.is_dir()]
        if level < depth:
            queue.extend((here / d, level + 1) for d in dirs)


def find_file(root: Path, *patterns: str, depth: int = 4, required: bool = True) -> Path | None:
    """The shallowest file under `root` whose name matches one of `patterns` (case-insensitive globs)."""
    for here, _, files in _walk(root, depth):
        for pattern in patterns:
            for name in files:
                if fnmatch.fnmatch(name.lower(), pattern.lower()):
                    return here / name
    if required:
        raise FileNotFoundError(f"no {' or '.join(patterns)} under {root}: is this the dataset's release folder?")
    return None


def find_dir(root: Path, test: Callable[[str], bool], depth: int = 3) -> Path | None:
    """The shallowest folder under `root` (itself excluded) whose lower-cased name passes `test`."""
    for here, dirs, _ in _walk(root, depth):
        for d in dirs:
            if test(d.lower()):
                return here / d
    return None


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _image_index(root: Path, skip: Callable[[str], bool] = lambda _: False) -> dict[str, str]:
    """Lower-cased file name -> path relative to `root`, for datasets whose image names are unique."""
    index: dict[str, str] = {}
    for top, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not skip(d.lower()))
        for name in files:
            if name.lower().endswith(IMAGE_SUFFIXES):
                index.setdefault(name.lower(), _rel(Path(top) / name, root))
    return index


def _locate(root: Path, names: Sequence[str], default_dir: str, **kw: Any) -> list[str]:
    """Where each named image is; an image not found keeps `default_dir/name`, to be reported missing later."""
    index = _image_index(root, **kw)
    return [index.get(n.lower(), f"{default_dir}/{n}") for n in names]


# ---- reading tables -------------------------------------------------------------------------------------------------
def _float(value: Any, where: Path) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {value!r} is not a number") from None


def _read_mat(path: Path, *names: str) -> dict[str, Any]:
    io = _require("scipy.io", "scipy", path)
    mat = io.loadmat(_note(path))
    found = {n: mat[n] for n in names if n in mat}
    if not found:
        raise ValueError(f"{path}: none of the variables {', '.join(names)} found")
    return found


def _read_rows(path: Path, sheet: str | None = None) -> list[list[Any]]:
    """All rows of a CSV or of an XLSX sheet (`sheet` if it exists, else the first)."""
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        openpyxl = _require("openpyxl", "openpyxl", path)
        book = openpyxl.load_workbook(_note(path), read_only=True, data_only=True)
        try:
            ws = book[sheet] if sheet in book.sheetnames else book.worksheets[0]
            return [list(r) for r in ws.iter_rows(values_only=True)]
        finally:
            book.close()
    with open(_note(path), newline="", encoding="utf-8-sig") as f:
        return [row for row in csv.reader(f) if row]


def read_table(path: Path, columns: dict[str, Sequence[str]], sheet: str | None = None) -> list[dict[str, Any]]:
    """The rows of a CSV or XLSX table under its first header row, by column key.

    Args:
        path: a .csv, or an .xlsx/.xlsm file (that needs openpyxl).
        columns: key -> candidate column names; the header is the first row naming one candidate of every key
            (case-insensitively), and the first candidate found wins.
        sheet: the XLSX sheet to read, if it exists (else the first).

    Returns:
        One {key: cell value} per row below the header that is long enough to hold every column.

    Raises:
        ValueError: when no row names every key; the message lists the candidates.
        MissingDependencyError: for an XLSX file without openpyxl installed.
    """
    rows = _read_rows(path, sheet)
    for i, row in enumerate(rows):
        header = [str(c).strip().lower() if c is not None else "" for c in row]
        where = {}
        for key, candidates in columns.items():
            hits = [header.index(c.lower()) for c in candidates if c.lower() in header]
            if hits:
                where[key] = hits[0]
        if len(where) == len(columns):
            body = rows[i + 1 :]
            return [{k: r[j] for k, j in where.items()} for r in body if len(r) > max(where.values())]
    wanted = "; ".join(f"{k}: one of {', '.join(c)}" for k, c in columns.items())
    raise ValueError(f"{path}: no header row with the columns ({wanted})")


def _name(value: Any) -> str:
    """A cell as a file-name part: 1600.0 (a number read from XLSX) -> '1600'."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _name_score_lines(path: Path, sep: str | None = None, name_first: bool = True) -> list[tuple[str, float]]:
    out = []
    for line in _note(path).read_text(encoding="utf-8-sig").splitlines():
        parts = [p.strip() for p in line.strip().split(sep)] if line.strip() else []
        if len(parts) < 2:
            continue
        name, score = (parts[0], parts[1]) if name_first else (parts[1], parts[0])
        out.append((name, _float(score, path)))
    return out


# ---- the readers ----------------------------------------------------------------------------------------------------
_LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def read_live(root: Path) -> Labels:
    mat_path = find_file(root, "dmos_realigned.mat", required=False) or find_file(root, "dmos.mat")
    mat = _read_mat(mat_path, "dmos_new", "dmos", "orgs")
    scores = (mat.get("dmos_new") if "dmos_new" in mat else mat["dmos"]).ravel()
    if "orgs" not in mat:
        raise ValueError(f"{mat_path}: no 'orgs' variable (which entries are reference copies)")
    names = [f"{folder}/img{i}.bmp" for folder, count in _LIVE_FOLDERS for i in range(1, count + 1)]
    if scores.size != len(names):
        raise ValueError(f"{mat_path}: {scores.size} scores, but LIVE release 2 has {len(names)} entries")
    base = _rel(mat_path.parent, root) if mat_path.parent != root else ""
    prefix = f"{base}/" if base else ""
    keep = mat["orgs"].ravel() == 0
    return Labels([(prefix + n, float(s)) for n, s, k in zip(names, scores, keep, strict=True) if k])


# Distortion names as the label sheet or other lists spell them -> as the release's folders and file names do.
_CSIQ_TYPES = {
    "noise": "AWGN",
    "awgn": "AWGN",
    "jpeg": "JPEG",
    "jpeg2000": "jpeg2000",
    "jp2k": "jpeg2000",
    "fnoise": "fnoise",
    "pinknoise": "fnoise",
    "blur": "BLUR",
    "gblur": "BLUR",
    "contrast": "contrast",
    "contrastdist": "contrast",
}


def read_csiq(root: Path) -> Labels:
    path = find_file(root, "*dmos*.xlsx")
    rows = read_table(
        path, {"image": ["image"], "type": ["dst_type"], "level": ["dst_lev"], "dmos": ["dmos"]}, sheet="all_by_image"
    )
    index = _image_index(root)
    items = []
    for r in rows:
        if r["image"] is None:
            continue
        kind = "".join(ch for ch in str(r["type"]).lower() if ch.isalnum())
        token = _CSIQ_TYPES.get(kind)
        if token is None:
            raise ValueError(f"{path}: unknown distortion type {r['type']!r}")
        name = f"{_name(r['image'])}.{token}.{_name(r['level'])}.png"
        items.append((index.get(name.lower(), f"dst_imgs/{token}/{name}"), _float(r["dmos"], path)))
    return Labels(items)


def read_tid2013(root: Path) -> Labels:
    path = find_file(root, "mos_with_names.txt")
    pairs = _name_score_lines(path, name_first=False)
    paths = _locate(root, [n for n, _ in pairs], "distorted_images", skip=lambda d: d.startswith("reference"))
    return Labels([(p, s) for p, (_, s) in zip(paths, pairs, strict=True)])


def read_kadid(root: Path) -> Labels:
    path = find_file(root, "dmos.csv")
    rows = read_table(path, {"image": ["dist_img"], "mos": ["dmos"]})
    prefix = _rel(path.parent, root) + "/" if path.parent != root else ""
    return Labels([(f"{prefix}images/{r['image']}", _float(r["mos"], path)) for r in rows])


def read_livec(root: Path) -> Labels:
    names_path = find_file(root, "AllImages_release.mat")
    mos_path = find_file(root, "AllMOS_release.mat")
    names = [_name(c.ravel()[0]) for c in _read_mat(names_path, "AllImages_release")["AllImages_release"].ravel()]
    mos = _read_mat(mos_path, "AllMOS_release")["AllMOS_release"].ravel()
    if len(names) != mos.size:
        raise ValueError(f"{names_path} lists {len(names)} images but {mos_path} has {mos.size} scores")
    base = names_path.parent.parent  # ChallengeDB_release/, holding Data/ and Images/
    prefix = f"{_rel(base, root)}/Images" if base != root else "Images"
    # The first 7 entries are the training images shown to the raters (Images/trainingImages), not test data.
    return Labels([(f"{prefix}/{n}", float(s)) for n, s in zip(names[7:], mos[7:], strict=True)])


def read_koniq(root: Path) -> Labels:
    path = find_file(root, "koniq10k_scores_and_distributions.csv")
    rows = read_table(path, {"image": ["image_name"], "mos": ["MOS_zscore"]})
    folder = find_dir(root, lambda d: d == "512x384")
    if folder is None:
        folder = find_dir(root, lambda d: d == "1024x768")
        if folder is not None:
            warnings.warn("KonIQ-10k: using 1024x768 images; the paper evaluates the 512x384 ones", stacklevel=2)
    prefix = _rel(folder, root) if folder is not None else "512x384"
    items = [(f"{prefix}/{r['image']}", _float(r["mos"], path)) for r in rows]
    sets_path = find_file(root, "koniq10k_distributions_sets.csv", required=False)
    official = None
    if sets_path is not None:
        sets = {
            r["image"]: str(r["set"]).strip().lower()
            for r in read_table(sets_path, {"image": ["image_name"], "set": ["set"]})
        }
        official = ["test" if sets.get(image.rsplit("/", 1)[1]) == "test" else "train" for image, _ in items]
    return Labels(items, official)


def read_spaq(root: Path) -> Labels:
    path = find_file(root, "MOS and Image attribute scores.xlsx", "*mos*.xlsx")
    rows = read_table(path, {"image": ["Image name", "image_name", "image"], "mos": ["MOS"]})
    folder = find_dir(root, lambda d: "384" in d) or find_dir(root, lambda d: d == "testimage")
    prefix = _rel(folder, root) if folder is not None else "TestImage"
    return Labels([(f"{prefix}/{_name(r['image'])}", _float(r["mos"], path)) for r in rows if r["image"]])


_IMAGE_COLUMNS = ("image", "img_name", "image_name", "name", "filename", "file", "img", "dis_img_path")
_MOS_COLUMNS = ("mos", "score", "mos_quality")


def read_name_mos_table(root: Path) -> Labels:
    """The first CSV/XLSX table in the dataset folder with an image and a MOS column (GFIQA-20k, UWIQA).

    Images are found by name anywhere under `root`. Our own split files (gamma-iqa-*.csv) are not label tables.

    Raises:
        FileNotFoundError: when the folder holds no .csv or .xlsx file.
        ValueError: when no table has an image and a MOS column.
    """
    tables = sorted(
        p for p in root.iterdir() if p.suffix.lower() in (".csv", ".xlsx") and not p.name.startswith("gamma-iqa")
    )
    if not tables:
        raise FileNotFoundError(f"no label table (.csv or .xlsx) in {root}: is this the dataset's release folder?")
    columns = {"image": _IMAGE_COLUMNS, "mos": _MOS_COLUMNS}
    for path in tables:
        try:
            rows = read_table(path, columns)
            break
        except ValueError:
            if path == tables[-1]:
                raise
    names = [_name(r["image"]) for r in rows if r["image"] is not None]
    scores = [_float(r["mos"], path) for r in rows if r["image"] is not None]
    paths = _locate(root, [Path(n).name for n in names], "images")
    return Labels(list(zip(paths, scores, strict=True)))


def read_agiqa3k(root: Path) -> Labels:
    path = find_file(root, "data.csv")
    rows = read_table(path, {"image": ["name"], "mos": ["mos_quality"]})
    paths = _locate(root, [r["image"] for r in rows], "images")
    return Labels([(p, _float(r["mos"], path)) for p, r in zip(paths, rows, strict=True)])


def read_aadb(root: Path) -> Labels:
    lists = {
        "train": find_file(root, "imgListTrainRegression_score.txt"),
        "val": find_file(root, "imgListValidationRegression_score.txt", required=False),
        "test": find_file(root, "imgListTestNewRegression_score.txt", "imgListTestRegression_score.txt"),
    }
    folder = find_dir(root, lambda d: d == "datasetimages_originalsize")
    prefix = _rel(folder, root) if folder is not None else "datasetImages_originalSize"
    items, official = [], []
    for part, path in lists.items():
        # Rows, not names, carry the split: the release lists some images twice.
        for name, score in _name_score_lines(path) if path is not None else []:
            items.append((f"{prefix}/{name}", score))
            official.append("test" if part == "test" else "train")
    return Labels(items, official)


def read_ava(root: Path) -> Labels:
    path = find_file(root, "AVA.txt")
    folder = find_dir(root, lambda d: d == "images", depth=2)
    prefix = _rel(folder, root) if folder is not None else "images"
    items = []
    for line in _note(path).read_text().splitlines():
        parts = line.split()
        if len(parts) < 12:
            continue
        votes = [int(v) for v in parts[2:12]]
        if sum(votes):  # an image nobody rated has no MOS
            items.append((f"{prefix}/{parts[1]}.jpg", sum(k * v for k, v in enumerate(votes, 1)) / sum(votes)))
    test_list = find_file(root, "generic_test.jpgl", required=False)
    official = None
    if test_list is not None:
        test = {f"{prefix}/{t.strip()}.jpg" for t in _note(test_list).read_text().split()}
        official = ["test" if image in test else "train" for image, _ in items]
    return Labels(items, official)


def read_pipal(root: Path) -> Labels:
    labels = find_dir(root, lambda d: d == "train_label")
    if labels is None:
        raise FileNotFoundError(f"no Train_Label folder under {root}: is this PIPAL's release folder?")
    pairs = [p for f in sorted(labels.glob("*.txt")) for p in _name_score_lines(f, sep=",")]
    paths = _locate(root, [n for n, _ in pairs], "Train_Dist", skip=lambda d: "ref" in d)
    return Labels([(p, s) for p, (_, s) in zip(paths, pairs, strict=True)])


def _cell(value: Any) -> str:
    """An XLSX cell as text: None -> '', 1600.0 -> '1600', 4.5 -> '4.5'."""
    return "" if value is None else value if isinstance(value, str) else _name(value)


def _decode(path: Path) -> str:
    """A label file's text: UTF-8 (a BOM is dropped), or UTF-16 with its BOM (Excel's "Unicode text").

    Raises:
        LabelFileError: for bytes that are not UTF-8; the message gives the line of the first one.
    """
    data = _note(path).read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise LabelFileError(f"{path}: not UTF-16 text after its UTF-16 BOM; expected UTF-8 text") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise LabelFileError(
            f"{path}, line {line}: byte 0x{data[e.start]:02x} is not UTF-8; expected UTF-8 text (save it as CSV UTF-8)"
        ) from None


def numbered_rows(path: Path) -> list[tuple[int, list[str]]]:
    """The rows of a label CSV (or XLSX sheet) that have a non-blank cell, each with its 1-based line number.

    Args:
        path: a UTF-8 (or BOM-marked UTF-16) CSV, or an .xlsx/.xlsm file (that needs openpyxl).

    Returns:
        (line number, cells as text) per row; a quoted cell spanning lines counts from the row's first line.

    Raises:
        LabelFileError: for text that is not UTF-8 or a CSV syntax error (such as a NUL byte); names the line.
        MissingDependencyError: for an XLSX file without openpyxl installed.
    """
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        numbered = [(n, [_cell(c) for c in row]) for n, row in enumerate(_read_rows(path), 1)]
        return [(n, row) for n, row in numbered if any(c.strip() for c in row)]
    reader = csv.reader(io.StringIO(_decode(path), newline=""))
    rows, start = [], 1
    try:
        for row in reader:
            if any(c.strip() for c in row):
                rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as e:
        raise LabelFileError(f"{path}, line {reader.line_num}: {e}; expected comma-separated text") from None
    return rows


def _label_table(
    csv_path: str | os.PathLike[str], columns: Sequence[str], optional: Sequence[str] = ()
) -> tuple[Path, list[tuple[int, list[str]]], dict[str, int]]:
    """A user's label CSV: (path, numbered rows with the header first, the index of each column found).

    Every row must reach the last of `columns` and of the `optional` columns in the header, and hold no value beyond
    the header's last column (empty trailing cells are fine).

    Raises:
        FileNotFoundError: when `csv_path` is not a file.
        LabelFileError: an empty file, a header without one of `columns`, or a row with too few cells or with a
            value beyond the header's columns (the message names the file, the line and what was expected).
    """
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"label CSV {path} not found")
    rows = numbered_rows(path)
    wanted = ", ".join(columns)
    if not rows:
        raise LabelFileError(f"{path}, line 1: empty file; expected a header row with the columns {wanted}")
    line, cells = rows[0]
    header = [c.strip() for c in cells]
    for col in columns:
        if col not in header:
            raise LabelFileError(
                f"{path}, line {line}: no column {col!r} in the header ({', '.join(header)}); expected the columns "
                f"{wanted}"
            )
    where = {c: header.index(c) for c in (*columns, *optional) if c in header}
    need = max(where.values()) + 1
    for n, row in rows[1:]:
        if len(row) < need:
            named = ", ".join(h for h in header[:need] if h)
            raise LabelFileError(f"{path}, line {n}: {len(row)} cells; expected at least {need} ({named})")
        if any(c.strip() for c in row[len(header) :]):  # a value beyond the header: a shifted or unquoted row
            raise LabelFileError(
                f"{path}, line {n}: {len(row)} cells; expected at most {len(header)}, as the header "
                f"({', '.join(header)}); quote a cell that holds a comma"
            )
    return path, rows, where


def _mos(cell: str, where: str, column: str, mos_range: tuple[float, float] | None = None) -> float:
    """A MOS cell as a finite number within `mos_range` (None: any); `where` is "file, line N" for the message."""
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise LabelFileError(f"{where}: {column} {cell.strip()!r} is not a number; expected a finite number")
    if mos_range is not None and not mos_range[0] <= value <= mos_range[1]:
        lo, hi = mos_range
        raise LabelFileError(
            f"{where}: {column} {cell.strip()} is outside the MOS range [{lo:g}, {hi:g}]; fix the value or the range"
        )
    return value


def _part(cell: str, where: str) -> str:
    """A split cell as train or test; `where` is "file, line N" for the message."""
    part = cell.strip().lower()
    if part not in ("train", "test"):
        raise LabelFileError(f"{where}: split {cell.strip()!r}; expected train or test")
    return part


def _image(cell: str, path: Path, line: int, column: str, seen: dict[str, int]) -> str:
    """An image cell, once per file: `seen` maps the images read so far (normalised) to their line."""
    image = cell.strip()
    if not image:
        raise LabelFileError(f"{path}, line {line}: empty {column} cell; expected an image path")
    key = posixpath.normpath(image)
    if key in seen:
        raise LabelFileError(
            f"{path}, line {line}: image {image} again (first on line {seen[key]}); expected one row per image"
        )
    seen[key] = line
    return image


def read_folder_csv(
    root: Path,
    csv_path: Path,
    image_column: str = "image",
    mos_column: str = "mos",
    mos_range: tuple[float, float] | None = None,
) -> Labels:
    """A user's own data: a CSV with image paths and MOS.

    Args:
        root: the folder the image paths are relative to.
        csv_path: the label CSV (UTF-8, or XLSX); an optional `split` column of train/test values is taken as the
            official split.
        image_column: the column with image paths.
        mos_column: the column with raw MOS values.
        mos_range: (low, high) of the MOS scale: a value outside it is refused (a wrong scale or a typo would give
            normalised labels outside [0, 1]); None: not checked.

    Returns:
        The labels in CSV order.

    Raises:
        FileNotFoundError: when `csv_path` is not a file.
        LabelFileError: a file that is empty, not UTF-8 or not CSV, a missing column, a short row, an empty image
            cell, an image listed twice, a MOS that is not a finite number or is outside `mos_range`, a split value
            other than train/test, or no rows below the header; the one-line message names the file, the line and
            what was expected.
    """
    path, rows, col = _label_table(csv_path, (image_column, mos_column), optional=("split",))
    i, j, k = col[image_column], col[mos_column], col.get("split")
    items, official, seen = [], [], {}
    for line, row in rows[1:]:
        where = f"{path}, line {line}"
        items.append((_image(row[i], path, line, image_column, seen), _mos(row[j], where, mos_column, mos_range)))
        if k is not None:
            official.append(_part(row[k], where))
    if not items:
        raise LabelFileError(f"{path}, line {rows[0][0] + 1}: no rows below the header; expected one row per image")
    return Labels(items, official if k is not None else None)


def read_groups(csv_path: Path, group_column: str, image_column: str = "image") -> dict[str, str]:
    """Each image's group (such as its source photo) from a label CSV's `group_column`.

    Args:
        csv_path: the label CSV (as `read_folder_csv` reads it).
        group_column: the column with group names; an empty cell makes the image a group of its own.
        image_column: the column with image paths, the keys.

    Returns:
        {image path as in the CSV: group name}, images with an empty group cell left out.

    Raises:
        FileNotFoundError: when `csv_path` is not a file.
        LabelFileError: as `read_folder_csv`, for the file, the header and the length of the rows.
    """
    _, rows, col = _label_table(csv_path, (image_column, group_column))
    i, g = col[image_column], col[group_column]
    return {row[i].strip(): row[g].strip() for _, row in rows[1:] if row[g].strip()}
