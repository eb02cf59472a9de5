"""Dataset registry (gamma.md §7), normalised opinion scores, and the train/test splits in one meta CSV per dataset.

Each `DatasetSpec` names its scene, MOS range and direction, test-time resize, folder names under a data root and a
reader of its native release (`readers.py`); the registrations at the bottom of this module use keyword arguments,
and a new dataset is one more `register_dataset(DatasetSpec(...))` call. Records carry the raw MOS and the normalised
one, `y = (mos - lo) / (hi - lo)`, flipped to `1 - y` when lower is better, so every dataset is higher-is-better on
about [0, 1]; `DatasetSpec.denormalise` maps such a value (a model's score) back onto the dataset's own scale. Values
are not clipped: a few LIVE realigned DMOS lie outside its nominal [1, 100], as in the original.

Splits: the official one where the release defines it (one split column), otherwise 10 random 80/20 splits drawn with
seed 123 over the images sorted by name (train = round(0.8 n); the test sizes then equal those of the paper's logs,
the images in them are ours). They are written once to `gamma-iqa-<name>.csv` in the dataset folder (or, if that is
read-only, under `$GAMMA_IQA_HOME/meta/`, named after the folder too) with columns `image, mos, mos_norm,
split_01..`, values train/test, and read back from there on later runs: edit or replace that file to evaluate on
other splits, delete it to rebuild it.

Own data (`folder_csv_dataset`, `user_dataset`) has one split file per label file, named after it
(`gamma-iqa-<name>-<label stem>-<hash of its path>.csv`); its first line records the label file, its SHA-256 and
the columns read, and the split file is drawn again when they change, so it never serves labels that are gone.
`load_splits` says which split file it used and how (read, written, rebuilt). A malformed label or split file raises
`LabelFileError` (a ValueError) with one line naming the file, the line and what was expected.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..models.scenes import list_scenes
from ..models.state import file_sha256
from ..paths import gamma_home
from . import readers
from .readers import LabelFileError, Labels

__all__ = [
    "FOLDER_CSV",
    "SPLIT_FILE_PREFIX",
    "USER_DATASET_KEYS",
    "DatasetSpec",
    "LabelFileError",
    "Record",
    "SplitFile",
    "dataset_dir",
    "folder_csv_dataset",
    "get_dataset",
    "list_datasets",
    "load_records",
    "load_splits",
    "make_splits",
    "register_dataset",
    "select",
    "user_dataset",
]

FOLDER_CSV = "folder+csv"
SPLIT_SEED = 123
NUM_RANDOM_SPLITS = 10
TRAIN_FRACTION = 0.8


@dataclass(frozen=True)
class DatasetSpec:
    """What gamma-iqa knows about one dataset.

    Raises:
        ValueError: at construction, for a scene that is not registered or a MOS range whose low end is not below its
            high end.
    """

    name: str
    title: str  # the name in the paper's tables
    scene: str
    mos_range: tuple[float, float]
    lower_better: bool
    num_images: int  # images with labels in the release as read here
    folders: tuple[str, ...]  # accepted folder names under the data root (case-insensitive); () = the root itself
    reader: Callable[[Path], Labels] = field(repr=False)
    split: str = "random"  # "official" where the release defines a train/test split, else "random"
    resize: int | None = None  # the short side is resized to this many pixels before test crops; None: full size
    # Own data: the label file its split file is drawn from and must follow, and its (image, MOS) columns.
    label_file: Path | None = None
    label_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Check the scene and the MOS range (see the class's `Raises`)."""
        if self.scene not in list_scenes():
            raise ValueError(f"dataset {self.name!r}: unknown scene {self.scene!r}; valid: {', '.join(list_scenes())}")
        lo, hi = self.mos_range
        if not hi > lo:
            raise ValueError(f"dataset {self.name!r}: MOS range must be (low, high) with low < high, got {lo}, {hi}")

    def normalise(self, mos: float) -> float:
        """A raw MOS on the normalised, higher-is-better scale.

        Args:
            mos: a score as the release gives it, in `mos_range` units.

        Returns:
            `(mos - lo) / (hi - lo)`, or one minus that when lower is better; about [0, 1], not clipped.
        """
        lo, hi = self.mos_range
        y = (mos - lo) / (hi - lo)
        return 1.0 - y if self.lower_better else y

    def denormalise(self, score: float) -> float:
        """A normalised, higher-is-better value (a model's score) on this dataset's own MOS scale: `normalise` undone.

        Args:
            score: a value on the normalised scale, about [0, 1]; not clipped (outside it maps beyond `mos_range`).

        Returns:
            `lo + y (hi - lo)` with `y = score`, or `y = 1 - score` when lower is better (DMOS: a higher score maps to
            a lower DMOS); `denormalise(normalise(mos))` is `mos` up to float rounding (a few ulps).
        """
        lo, hi = self.mos_range
        y = 1.0 - score if self.lower_better else score
        return lo + y * (hi - lo)


@dataclass(frozen=True)
class Record:
    """One labelled image of a dataset, with its part in each split."""

    folder: Path  # the dataset folder
    image: str  # relative to it, as in the meta CSV
    mos: float
    mos_norm: float
    splits: tuple[str, ...]  # "train" or "test", one per split

    @property
    def path(self) -> Path:
        """The image file: `folder / image`."""
        return self.folder / self.image  # built on demand: 255k Path objects up front cost seconds on AVA


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> None:
    """Register a dataset under its (lower-case) name.

    Raises:
        ValueError: when the name is taken (or is `folder+csv`).
    """
    key = spec.name.lower()
    if key in _DATASETS or key == FOLDER_CSV:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    _DATASETS[key] = spec


def list_datasets() -> list[str]:
    """Registered dataset names, then `folder+csv` (a user's own folder and CSV, see `folder_csv_dataset`)."""
    return [*_DATASETS, FOLDER_CSV]


def get_dataset(name: str) -> DatasetSpec:
    """The registered dataset `name` (case and surrounding blanks ignored).

    Raises:
        ValueError: for `folder+csv` (it needs `folder_csv_dataset`) or a name that is not registered; the message
            lists the valid names.
    """
    key = name.strip().lower()
    if key == FOLDER_CSV:
        raise ValueError("folder+csv needs a label CSV, a MOS range and a scene: use folder_csv_dataset(...)")
    try:
        return _DATASETS[key]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(list_datasets())}") from None


def folder_csv_dataset(
    csv_path: str | os.PathLike[str],
    *,
    mos_range: tuple[float, float],
    scene: str,
    lower_better: bool = False,
    resize: int | None = None,
    image_column: str = "image",
    mos_column: str = "mos",
    name: str = FOLDER_CSV,
) -> DatasetSpec:
    """A user's own dataset: images under the data root, labels in a CSV (image paths relative to the root).

    Args:
        csv_path: the label CSV; an optional `split` column of train/test values is taken as the official split.
        mos_range: (low, high) of the MOS scale, used to normalise it to about [0, 1].
        scene: the scene its images are scored in.
        lower_better: True when a lower MOS means better quality (DMOS).
        resize: short side in pixels the images are resized to before test crops; None keeps them as they are.
        image_column: the CSV column with image paths.
        mos_column: the CSV column with MOS values.
        name: the name results are reported under.

    Returns:
        A spec that is not registered; pass it where a registered one goes. Its split file (see `load_splits`)
        follows `csv_path`: named after it, and rebuilt when its content or the columns change.
    """
    reader = functools.partial(
        readers.read_folder_csv,
        csv_path=Path(csv_path),
        image_column=image_column,
        mos_column=mos_column,
        mos_range=tuple(mos_range),
    )
    return DatasetSpec(
        name, name, scene, tuple(mos_range), lower_better, 0, (), reader, "from the CSV", resize,
        label_file=Path(csv_path), label_columns=(image_column, mos_column),
    )  # fmt: skip


# The keys of a user's own dataset, the same for `gamma-iqa eval --dataset folder+csv` and a training config.
USER_DATASET_KEYS = (
    "name", "csv", "root", "mos_range", "scene", "lower_better", "image_column", "mos_column", "resize",
    "group_column",
)  # fmt: skip
_REQUIRED_KEYS = ("csv", "mos_range", "scene")


def _check_user_values(values: Mapping[str, Any], name: str) -> None:
    """Raise ValueError naming the first malformed value of a user dataset mapping (keys already checked)."""
    lo_hi = values["mos_range"]
    checks = [
        (
            isinstance(lo_hi, (list, tuple))
            and len(lo_hi) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in lo_hi),
            f"mos_range must be [low, high], got {lo_hi!r}",
        ),
        (isinstance(values.get("lower_better", False), bool), "lower_better must be true or false"),
        (
            values.get("resize") is None
            or (isinstance(values["resize"], int) and not isinstance(values["resize"], bool) and values["resize"] > 0),
            f"resize must be a positive number of pixels or empty, got {values.get('resize')!r}",
        ),
        (
            all(isinstance(values.get(k, ""), str) for k in ("image_column", "mos_column", "group_column")),
            "image_column, mos_column and group_column must be column names",
        ),
    ]
    for ok, problem in checks:
        if not ok:
            raise ValueError(f"own dataset {name!r}: {problem}")


def user_dataset(
    values: Mapping[str, Any],
    data_root: str | os.PathLike[str] | None = None,
    *,
    default_name: str | None = None,
) -> tuple[DatasetSpec, str | os.PathLike[str] | None]:
    """A user's own dataset (a folder of images and a label CSV) from a mapping, as `eval` and `train` take it.

    The keys (USER_DATASET_KEYS): `csv` (the label CSV: an image column of paths relative to the root, a MOS
    column, optionally a `split` column), `mos_range` ([low, high], the MOS scale), `scene` (see `list_scenes`),
    and optionally `root` (the images' folder; default `data_root`), `lower_better` (true for DMOS; default false),
    `image_column` and `mos_column` (default "image" and "mos"), `resize` (short side in pixels before cropping;
    default none), `name` (what results are reported under) and `group_column` (a column naming each image's group,
    such as its source photo: training's ranking loss and grouped batches use it; evaluation ignores it).

    Args:
        values: the mapping (a YAML entry of `datasets`, or the command line's flags).
        data_root: the images' folder when `values` has no `root`.
        default_name: the name when `values` has none; None: `name` is required.

    Returns:
        (spec, root): the dataset, and the folder its image paths are relative to.

    Raises:
        ValueError: a missing or unknown key, or a malformed value (the message names the dataset and the keys).
    """
    name = values.get("name", default_name)
    required = _REQUIRED_KEYS if default_name is not None else ("name", *_REQUIRED_KEYS)
    missing = set(required) - set(values)
    unknown = set(values) - set(USER_DATASET_KEYS)
    if missing or unknown:
        problem = f"missing {', '.join(sorted(missing))}" if missing else f"unknown {', '.join(sorted(unknown))}"
        raise ValueError(f"own dataset {name or '?'!r}: {problem} (keys: {sorted(USER_DATASET_KEYS)})")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"own dataset {name!r}: name must be a non-empty string")
    _check_user_values(values, name)
    columns = {k: values[k] for k in ("image_column", "mos_column") if k in values}
    spec = folder_csv_dataset(
        values["csv"],
        mos_range=tuple(values["mos_range"]),
        scene=values["scene"],
        lower_better=values.get("lower_better", False),
        resize=values.get("resize"),
        name=name,
        **columns,
    )
    return spec, values.get("root", data_root)


def dataset_dir(spec: DatasetSpec, data_root: str | os.PathLike[str]) -> Path:
    """The dataset's folder: `data_root/<one of spec.folders>` (any case), or the root itself if it is named so.

    Raises:
        FileNotFoundError: when `data_root` is not a folder or holds none of the dataset's folder names.
    """
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} is not a folder")
    if not spec.folders:
        return root
    names = {f.lower() for f in spec.folders}
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower() in names:
            return child
    if root.name.lower() in names:
        return root
    raise FileNotFoundError(f"{spec.name}: no folder {' or '.join(spec.folders)} in {root} (see README, Evaluating)")


def make_splits(images: Sequence[str], official: Sequence[str] | None = None) -> list[tuple[str, ...]]:
    """Per image, its part ("train"/"test") in each split.

    Args:
        images: image names; random splits depend on the sorted names only, not on this order.
        official: the release's part per image, if it defines a split.

    Returns:
        One tuple per image: its one official part, or its part in each of NUM_RANDOM_SPLITS random splits with
        round(0.8 n) training images, seeded by SPLIT_SEED.

    Raises:
        ValueError: when `official` does not give one part per image.
    """
    if official is not None:
        if len(official) != len(images):
            raise ValueError(f"official split covers {len(official)} of {len(images)} images")
        return [(part,) for part in official]
    n = len(images)
    order = np.array(sorted(range(n), key=images.__getitem__), dtype=np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    n_train = round(TRAIN_FRACTION * n)
    test = np.zeros((n, NUM_RANDOM_SPLITS), dtype=bool)
    for k in range(NUM_RANDOM_SPLITS):
        test[order[rng.permutation(n)[n_train:]], k] = True
    return [tuple(row) for row in np.where(test, "test", "train").tolist()]


SPLIT_FILE_PREFIX = "gamma-iqa-"  # a dataset's split file is SPLIT_FILE_PREFIX + its name (+ its label file) + ".csv"
_SOURCE_TAG = "# gamma-iqa split file "  # the first line, then the label file(s) it follows as JSON


class SplitFile(NamedTuple):
    """A dataset's records with their splits, and the split file they were read from or written to."""

    folder: Path  # the dataset folder
    records: list[Record]  # in label-file order
    path: Path | None  # the split file; None when none could be written
    state: str  # "read", "written", or "rebuilt: <why>"
    drawn: bool  # True: random splits drawn here; False: the release's or the label file's own split


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text.lower())


def _meta_name(spec: DatasetSpec) -> str:
    """The split file's name; own data's also names its label file (stem and a hash of its resolved path)."""
    name = SPLIT_FILE_PREFIX + _slug(spec.name)
    if spec.label_file is not None:
        key = hashlib.sha256(str(spec.label_file.resolve()).encode()).hexdigest()[:8]
        name += f"-{_slug(spec.label_file.stem)}-{key}"
    return name + ".csv"


def _source(spec: DatasetSpec) -> dict[str, Any] | None:
    """Own data: what its split file must have been drawn from (the label file, its SHA-256, the columns read).

    Raises:
        FileNotFoundError: when the label file is missing.
    """
    if spec.label_file is None:
        return None
    path = spec.label_file
    if not path.is_file():
        raise FileNotFoundError(f"label CSV {path} not found")
    digest = file_sha256(path)
    return {
        "labels": str(path.resolve()),
        "sha256": digest,
        "columns": list(spec.label_columns),
        "mos_range": list(spec.mos_range),  # the labels were checked against it
    }


def _read_source(path: Path) -> dict[str, Any]:
    """The source recorded on a split file's first line ({} when it has none or it is not readable)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline()
    try:
        source = json.loads(first[len(_SOURCE_TAG) :]) if first.startswith(_SOURCE_TAG) else {}
    except ValueError:
        return {}
    return source if isinstance(source, dict) else {}


def _release_source(folder: Path, files: Sequence[Path]) -> dict[str, Any]:
    """A registered release: the label files its reader read (relative to `folder`) with their SHA-256."""
    return {"files": {_relative(f, folder): file_sha256(f) for f in files}}


def _relative(path: Path, folder: Path) -> str:
    """`path` relative to `folder` (POSIX separators) when inside it, else resolved."""
    try:
        return Path(path).resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def _stale_release(recorded: dict[str, Any], folder: Path) -> str | None:
    """Why a registered release's split file does not follow the label files it records (None: it does)."""
    files = recorded.get("files")
    if not isinstance(files, dict):
        return None  # no record (a split file written by hand, or by an older version): read as it is
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            return f"its label file {name} is gone"
        if file_sha256(path) != digest:
            return f"{name} changed since it was written"
    return None


def _stale(recorded: dict[str, Any], source: dict[str, Any] | None, folder: Path) -> str | None:
    """Why a split file recorded as drawn from `recorded` does not follow `source` (None: it does).

    Own data is checked against its label file (`source`); a registered release (`source` None) against the label
    files its split file records.
    """
    if source is None:
        return _stale_release(recorded, folder)
    name = Path(source["labels"]).name
    if not recorded:
        return f"it does not say which label file it was drawn from; {name} is used"
    if recorded.get("sha256") != source["sha256"]:
        return f"{name} changed since it was written"
    if recorded.get("columns") != source["columns"]:
        return f"the columns read from {name} changed ({', '.join(source['columns'])})"
    if recorded.get("mos_range", source["mos_range"]) != source["mos_range"]:
        return "the MOS range changed ({:g}, {:g})".format(*source["mos_range"])
    return None


def _write_meta(path: Path, records: Sequence[Record], source: dict[str, Any] | None = None) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per process: torchrun ranks may write at once
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        if source is not None:
            f.write(_SOURCE_TAG + json.dumps(source, ensure_ascii=False) + "\n")
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image", "mos", "mos_norm", *[f"split_{k + 1:02d}" for k in range(len(records[0].splits))]])
        for r in records:
            w.writerow([r.image, repr(r.mos), repr(r.mos_norm), *r.splits])
    tmp.replace(path)  # a run killed mid-write never leaves half a split file to be read back


def _meta_record(
    spec: DatasetSpec, folder: Path, path: Path, line: int, row: list[str], split_cols: list[int]
) -> Record:
    """One row of the split file `path` of the dataset in `folder`."""
    where = f"split file {path}, line {line}"
    if len(row) <= max(split_cols):
        raise LabelFileError(
            f"{where}: {len(row)} cells; expected {max(split_cols) + 1} (image, mos, mos_norm, split_01..)"
        )
    splits = tuple(row[i].strip().lower() for i in split_cols)
    if any(s not in ("train", "test") for s in splits):
        raise LabelFileError(f"{where}: split values must be train or test")
    try:
        mos = float(row[1])  # mos_norm is recomputed: the spec, not the file, defines the normalisation
    except ValueError:
        raise LabelFileError(f"{where}: mos {row[1]!r} is not a number") from None
    return Record(folder, row[0], mos, spec.normalise(mos), splits)


def _read_meta(path: Path, spec: DatasetSpec, folder: Path) -> list[Record]:
    rows = readers.numbered_rows(path)
    if rows and rows[0][1][0].startswith(_SOURCE_TAG.strip()):
        rows = rows[1:]  # the source line (its JSON is split at commas, which does not matter here)
    header = [c.strip() for c in rows[0][1]] if rows else []
    split_cols = [i for i, h in enumerate(header) if h.startswith("split_")]
    if header[:2] != ["image", "mos"] or not split_cols or len(rows) < 2:
        raise LabelFileError(
            f"split file {path} needs columns image, mos, split_01.. and rows: delete it to rebuild it"
        )
    return [_meta_record(spec, folder, path, line, row, split_cols) for line, row in rows[1:]]


def _meta_places(spec: DatasetSpec, folder: Path, meta_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Where the split file is looked for and written, in order."""
    name = _meta_name(spec)
    if meta_dir is not None:
        return [Path(meta_dir) / name]
    # The cache copy is named after the folder too, so that two copies of a dataset never share a split file.
    tag = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:10]
    return [folder / name, gamma_home() / "meta" / f"{name[:-4]}-{tag}.csv"]


def _draw(spec: DatasetSpec, folder: Path) -> tuple[list[Record], bool]:
    """The records from the release's labels, with their official or random splits; True when drawn at random.

    Raises:
        ValueError: when the label files list no images.
    """
    labels = spec.reader(folder)
    if not labels.items:
        raise ValueError(f"{spec.name}: the label files in {folder} list no images")
    images = [image for image, _ in labels.items]
    splits = make_splits(images, labels.official)
    records = [
        Record(folder, image, mos, spec.normalise(mos), s) for (image, mos), s in zip(labels.items, splits, strict=True)
    ]
    return records, labels.official is None


def _save(
    spec: DatasetSpec, places: Sequence[Path], records: list[Record], source: dict[str, Any] | None
) -> Path | None:
    """Write the split file to the first writable place; None (and a warning) when none is."""
    for path in places:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_meta(path, records, source)
            return path
        except OSError:
            continue  # a read-only dataset folder: fall back to the cache
    warnings.warn(f"{spec.name}: could not save its split file in {' or '.join(map(str, places))}", stacklevel=3)
    return None


def load_splits(
    spec: DatasetSpec, data_root: str | os.PathLike[str], *, meta_dir: str | os.PathLike[str] | None = None
) -> SplitFile:
    """The dataset's folder, all its labelled images with their splits, and the split file that holds them.

    They come from the split file if there is one (in `meta_dir`, else the dataset folder, else
    $GAMMA_IQA_HOME/meta), else from the release's labels (then saved to the first of those places that is writable;
    a warning says when none is). Own data (`folder_csv_dataset`) has a split file per label file, named after it,
    whose first line records the label file's SHA-256 and the columns read: when either changed, the split file is
    drawn again from the labels and rewritten (`state` says so). A registered release's split file records the
    SHA-256 of each label file its reader read, and is rebuilt the same way when one changed or is gone; one without
    that first line (written by hand, or by an older version) is read as it is.

    Args:
        spec: the dataset.
        data_root: the folder holding the dataset's folder (see `dataset_dir`).
        meta_dir: where the split file is read and written instead of the default places.

    Returns:
        The folder, the records in label-file order, the split file, and how it was used.

    Raises:
        FileNotFoundError: when the dataset folder or its label files are missing.
        LabelFileError: a malformed own label file or split file (one line: the file, the line, what was expected).
        ValueError: when the label files list no images.
        MissingDependencyError: when reading the label format needs scipy or openpyxl and it is not installed.
    """
    folder = dataset_dir(spec, data_root)
    source = _source(spec)
    places = _meta_places(spec, folder, meta_dir)
    state = "written"
    for path in places:
        if not path.is_file():
            continue
        recorded = _read_source(path)
        why = _stale(recorded, source, folder)
        if why is None:
            drawn = recorded.get("splits", spec.split) == "random"
            return SplitFile(folder, _read_meta(path, spec, folder), path, "read", drawn)
        state = f"rebuilt: {why}"
        break
    with readers.recording_files() as files:
        records, drawn = _draw(spec, folder)
    if source is None:
        source = _release_source(folder, files)
    source["splits"] = "random" if drawn else "from the label file"
    return SplitFile(folder, records, _save(spec, places, records, source), state, drawn)


def load_records(
    spec: DatasetSpec, data_root: str | os.PathLike[str], *, meta_dir: str | os.PathLike[str] | None = None
) -> tuple[Path, list[Record]]:
    """The dataset's folder and all its labelled images with their splits: `load_splits` without the split file.

    Returns:
        (dataset folder, records in label-file order).

    Raises:
        FileNotFoundError, LabelFileError, ValueError, MissingDependencyError: as `load_splits`.
    """
    loaded = load_splits(spec, data_root, meta_dir=meta_dir)
    return loaded.folder, loaded.records


def select(records: Sequence[Record], split: int = 1, part: str = "test", *, name: str = "dataset") -> list[Record]:
    """The records in `part` ("train"/"test") of split `split` (1-based).

    Raises:
        ValueError: when the records have no split number `split`; `name` is the dataset named in the message.
    """
    count = len(records[0].splits) if records else 0
    if not 1 <= split <= count:
        kind = "the official split" if count == 1 else f"{count} random splits"
        raise ValueError(f"{name} has {kind}; `split` {split} is out of range (1..{count})")
    return [r for r in records if r.splits[split - 1] == part]


# Ranges, directions, scenes and test-time resizes as the original training configs have them (gamma.md §7).
register_dataset(
    DatasetSpec(
        name="live", title="LIVE", scene="natural", mos_range=(1, 100), lower_better=True, num_images=779,
        folders=("databaserelease2", "LIVE"), reader=readers.read_live,
    )
)  # fmt: skip
register_dataset(
    DatasetSpec(
        name="csiq", title="CSIQ", scene="natural", mos_range=(0, 1), lower_better=True, num_images=866,
        folders=("CSIQ",), reader=readers.read_csiq,
    )
)  # fmt: skip
register_dataset(
    DatasetSpec(
        name="tid2013", title="TID2013", scene="natural", mos_range=(0, 9), lower_better=False, num_images=3000,
        folders=("tid2013",), reader=readers.read_tid2013,
    )
)  # fmt: skip
register_dataset(
    DatasetSpec(
        name="kadid10k", title="KADID", scene="natural", mos_range=(1, 5), lower_better=False, num_images=10125,
        folders=("kadid10k", "KADID-10k"), reader=readers.read_kadid,
    )
)  # fmt: skip
register_dataset(
    DatasetSpec(
        name="livec", title="LIVEC", scene="natural", mos_range=(0, 100), lower_better=False, num_images=1162,
        folders=("ChallengeDB_release", "LIVEC"), reader=readers.read_livec,
    )
)  # fmt: skip
register_dataset(
    DatasetSpec(
        name="koniq10k", title="KonIQ", scene="natural", mos_range=(0, 100), lower_better=False, num_images=10073,
        folders=("koniq10k", "KonIQ-10k"), reader=readers.read_koniq, split="official",
    )
)  # fmt: skip
# SPAQ's 384 is the short side of the paper's offline-resized copy: a no-op on that copy, the same on the originals.
register_dataset(
    DatasetSpec(
        name="spaq", title="SPAQ", scene="natural", mos_range=(0, 100), lower_better=False, num_images=11125,
        folders=("SPAQ",), reader=readers.read_spaq, resize=384,
    )
)  # fmt: skip
register_dataset(
    DatasetSpec(
        name="gfiqa20k", title="GFIQA-20k", scene="face", mos_range=(0, 1), lower_better=False, num_images=19998,
        folders=("GFIQA-20k", "GFIQA"), reader=readers.read_name_mos_table,
    )
)  # fmt: skip
register_dataset(
    DatasetSpec(
        name="agiqa3k", title="AGIQA-3k", scene="aigc", mos_range=(0, 5), lower_better=False, num_images=2982,
        folders=("AGIQA-3K", "AGIQA3K"), reader=readers.read_agiqa3k,
    )
)  # fmt: skip
register_dataset(
    DatasetSpec(
        name="uwiqa", title="UWIQA", scene="underwater", mos_range=(0, 1), lower_better=False, num_images=890,
        folders=("UWIQA",), reader=readers.read_name_mos_table, resize=224,
    )
)  # fmt: skip
register_dataset(
    DatasetSpec(
        name="aadb", title="AADB", scene="aesthetic", mos_range=(0, 1), lower_better=False, num_images=9958,
        folders=("AADB",), reader=readers.read_aadb, split="official",
    )
)  # fmt: skip
register_dataset(
    DatasetSpec(
        name="ava", title="AVA", scene="aesthetic", mos_range=(0, 10), lower_better=False, num_images=255530,
        folders=("AVA_dataset", "AVA"), reader=readers.read_ava, split="official", resize=224,
    )
)  # fmt: skip
# PIPAL is not in the paper; its Elo scores span about 917..1836 in the public training labels.
register_dataset(
    DatasetSpec(
        name="pipal", title="PIPAL", scene="natural", mos_range=(900, 1900), lower_better=False, num_images=23200,
        folders=("PIPAL",), reader=readers.read_pipal,
    )
)  # fmt: skip
