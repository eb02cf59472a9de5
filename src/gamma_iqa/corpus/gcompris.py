"""gamma-lite's training corpus from the real photographs in Debian's `gcompris-qt-data`, reproducibly.

`build_corpus` unpacks the .deb (`dpkg -x`) into a temporary folder; reads the Qt resource bundles (`.rcc`) under
usr/share/gcompris-qt/rcc/ (`corpus.rcc`); keeps the real photographs (`is_photo`); scales each so that its long side is
at most `max_side` (1600 by default: most are kept at their own size); enters each untouched, labelled at the top of the
scale (`corpus.pipeline.untouched`); and distorts and labels each with every chosen type at every level
(`corpus.pipeline`). The layout it writes is described in scripts/build_corpus.py, its command line.

Photo rule (`is_photo`): a raster image (WebP, JPEG, PNG) in one of `PHOTO_FOLDERS`, the activity folders whose
images are photographs (checked by eye on gcompris-qt-data 3.1: animals, monuments, fishes, the sea bed, tools,
household objects, renewable energy, music), or one of `PHOTO_FILES`, the photographs of a mixed folder, with a
short side of at least `min_side` pixels; cartoons (e.g. lang/), paintings (paintings/, details/), cut-outs
(babyshapes/, leftright/), renders (solar_system/), textures (digital_electricity/) and the drawings, diagrams and
portrait painting of louis-braille/ are out. Byte-identical files found in two folders are kept once. The default
`min_side` of 160 (224 until gamma-lite 2) keeps the categorization activity's photographs, most of them 320 x 213:
198 photos in 3.1 at 224, 260 at 160 (56 from categorization, 6 from louis-braille); training rescales sources at
random before cropping, so a source need not hold a 224 crop at its own scale.

Licences (`licences.csv`) come from usr/share/doc/gcompris-qt-data/copyright, Debian's machine-readable format; the
last matching stanza wins.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.datasets import SPLIT_FILE_PREFIX
from ..data.distortions import level_strength
from .extra import ExtraPhoto
from .fidelity import RESCALE
from .pipeline import distort_and_label, load_photo, map_in_order, store, untouched
from .rcc import parse_rcc

__all__ = ["build_corpus", "collect_photos", "is_photo", "licence_of", "parse_copyright", "photo_id"]

PACKAGE = "gcompris-qt-data"
RCC_DIR = "usr/share/gcompris-qt/rcc"
COPYRIGHT = f"usr/share/doc/{PACKAGE}/copyright"
ROOT = "gcompris/src/activities/"
PHOTO_FOLDERS = (
    "categorization/resource/images/fishes",
    "categorization/resource/images/monuments",
    "categorization/resource/images/others",
    "categorization/resource/images/renewable",
    "categorization/resource/images/tools",
    "clickgame/resource",
    "erase/resource",
    "explore_farm_animals/resource/animals",
    "explore_monuments/resource/*",
    "explore_world_animals/resource/animals",
    "explore_world_music/resource/music",
)
PHOTO_FILES = tuple(
    f"louis-braille/resource/{name}.webp" for name in ("braille", "fireplace", "rnib", "statue", "teach", "workshop")
)  # photographs of a mixed folder (its others are drawings, diagrams, a render and a portrait painting)
RASTER = (".webp", ".jpg", ".jpeg", ".png")
Stanza = tuple[list[str], str, str]


# ---- photos and licences -----------------------------------------------------------------------------------------
def is_photo(path: str, size: tuple[int, int], min_side: int) -> bool:
    """The photo rule of the module docstring, on a path inside the bundles and the image's (width, height)."""
    if not path.startswith(ROOT) or not path.lower().endswith(RASTER):
        return False
    inside = path[len(ROOT) :]
    folder = inside.rsplit("/", 1)[0]
    listed = inside in PHOTO_FILES or any(fnmatch.fnmatchcase(folder, f) for f in PHOTO_FOLDERS)
    return listed and min(size) >= min_side


def _fields(block: str) -> dict[str, list[str]]:
    """The fields of one copyright-format stanza: {name: lines}, continuation lines appended."""
    fields: dict[str, list[str]] = {}
    key = None
    for line in block.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key].append(line.strip())
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = [value.strip()] if value.strip() else []
    return fields


def parse_copyright(text: str) -> list[Stanza]:
    """Debian copyright-format stanzas with a Files field: (patterns, first copyright line, licence)."""
    stanzas = []
    for block in text.split("\n\n"):
        fields = _fields(block)
        if "Files" in fields and "License" in fields:
            patterns = [p for line in fields["Files"] for p in line.split()]
            holder = fields.get("Copyright", [""])[0] if fields.get("Copyright") else ""
            stanzas.append((patterns, holder, fields["License"][0]))
    return stanzas


def licence_of(path: str, stanzas: list[Stanza]) -> tuple[str, str]:
    """(licence, copyright holder) of a bundle path; the package renames images to .webp, so extensions are ignored."""
    source = path.removeprefix("gcompris/")
    stem = source.rsplit(".", 1)[0]
    found = ("unknown", "")
    for patterns, holder, licence in stanzas:
        for p in patterns:
            if fnmatch.fnmatchcase(source, p) or fnmatch.fnmatchcase(stem, p.rsplit(".", 1)[0]):
                found = (licence, holder)
    return found


def photo_id(path: str) -> str:
    """A photo's id from its bundle path: activity folders and stem joined with '-', e.g. erase-cat1."""
    folder, stem = path[len(ROOT) :].rsplit("/", 1)
    parts = [p for p in folder.split("/") if p not in ("resource", "images")]
    return "-".join([*parts, stem.rsplit(".", 1)[0]])


def collect_photos(root: Path, min_side: int) -> list[tuple[str, bytes]]:
    """(bundle path, file bytes) of the photos in an unpacked package, sorted by path, byte-identical copies once."""
    seen, photos = set(), []
    for bundle in sorted((root / RCC_DIR).glob("*.rcc")):
        for path, blob in parse_rcc(bundle.read_bytes()).items():
            if not path.lower().endswith(RASTER) or not path.startswith(ROOT):
                continue
            digest = hashlib.sha256(blob).digest()
            if digest in seen or not is_photo(path, Image.open(io.BytesIO(blob)).size, min_side):
                continue
            seen.add(digest)
            photos.append((path, blob))
    return sorted(photos)


# ---- the corpus --------------------------------------------------------------------------------------------------
MIN_LABEL_SIDE = 128  # VIF's coarsest window needs 41 x 41 pixels: 128 keeps it for photos up to 3:1 wide


def photo_types(types: Sequence[str], k: int, seed: int, index: int, always: Sequence[str] = ()) -> list[str]:
    """The distortion types of the photo at `index`: `k` of `types` drawn (all for k = 0), then `always`' others.

    Drawn without replacement from a generator of its own, seeded with (`seed`, `index`, 1), so that the choice
    depends on nothing else; the drawn types in `types`' order, then the added ones in `always`' order (last, so that
    adding them leaves the drawn types' positions, and so their random streams, as they were).
    """
    drawn = list(types)
    if 0 < k < len(types):
        chosen = np.random.default_rng([seed, index, 1]).choice(len(types), size=k, replace=False)
        drawn = [types[i] for i in sorted(chosen)]
    return drawn + [t for t in always if t not in drawn]


def _row(out: Path, pid: str, level: int, v) -> dict:
    """The labels.csv row (less its split) of version `v` at `level` of photo `pid`."""
    return {"image": v.path.relative_to(out).as_posix(), "mos": v.mos, "reference": f"reference/{pid}.png",
            "distortion": v.distortion, "level": level, "strength": v.strength, "photo": pid, "fr_mos": v.fr_mos,
            **{k: round(x, 6) for k, x in v.values.items()}}  # fmt: skip


def build_photo(job: tuple) -> list[dict]:
    """Every distorted version of one photo and its label rows (one worker task).

    The rows are kept in rows/<photo>.json once all its images are written, so a rerun after an interruption
    (same arguments) reuses finished photos and redoes only the rest; a rerun that only appends types to a photo's
    (`photo_types`' `always`) keeps its rows and builds the new types alone.
    """
    pid, blob, out, types, levels, max_side, fmt, seed, index, label_side = job
    done = out / "rows" / f"{pid}.json"
    key = {"types": types, "levels": levels, "max_side": max_side, "format": fmt, "seed": seed, "index": index,
           "label_side": label_side}  # fmt: skip
    kept: list[dict] = []
    first = 0  # the position of the first type to build
    if done.is_file():
        saved = json.loads(done.read_text())
        if saved["key"] == key:
            return saved["rows"]
        old = saved["key"]
        if {**old, "types": types} == key and types[: len(old["types"])] == old["types"]:
            kept, first = saved["rows"], len(old["types"])  # the same photo with types appended: its images stand
    reference = out / "reference" / f"{pid}.png"
    if kept:
        ref = np.asarray(Image.open(reference).convert("RGB"), dtype=np.float32) / 255  # as `store` returned it
    else:
        ref = store(load_photo(blob, max_side), reference)
    strengths = [level_strength(level, levels) for level in range(1, levels + 1)]

    def image(kind: str, k: int, strength: float) -> Path:
        return out / "images" / f"{pid}__{kind}__{k + 1}.{fmt}"  # level k + 1

    versions = distort_and_label(
        ref, types[first:], strengths, image, seed=seed, index=index, label_side=label_side, first=first
    )
    rows = kept or [_row(out, pid, 0, untouched(ref, reference))]
    rows += [_row(out, pid, i % levels + 1, v) for i, v in enumerate(versions)]  # type by type, levels in order
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "rows": rows}))
    os.replace(tmp, done)  # atomic: a photo is either done or redone
    return rows


def fetch_deb(folder: Path) -> Path:
    """`apt-get download` the package into `folder` (needs Debian's package lists: `apt-get update`)."""
    subprocess.run(["apt-get", "download", PACKAGE], cwd=folder, check=True)
    return next(folder.glob(f"{PACKAGE}_*.deb"))


def _unpack(deb: Path | None, min_side: int) -> tuple[list[tuple[str, bytes]], list[Stanza]]:
    """The photos and copyright stanzas of the package (`deb`, or fetched with apt-get when None)."""
    with tempfile.TemporaryDirectory() as tmp:
        deb = deb or fetch_deb(Path(tmp))
        subprocess.run(["dpkg", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        photos = collect_photos(Path(tmp) / "x", min_side)
        stanzas = parse_copyright((Path(tmp) / "x" / COPYRIGHT).read_text(encoding="utf-8"))
    if not photos:
        raise ValueError(f"no photos found in {deb}")
    return photos, stanzas


def _write_csvs(
    out: Path, ids: list[str], photos: list, per_photo: list, test: set[str], stanzas: list, known: dict
) -> None:
    """labels.csv (with each row's split) and licences.csv under `out`; `known`: {source: (licence, holder)}.

    Split files that training or evaluation saved beside an earlier labels.csv (`gamma-iqa-<dataset>.csv`, which
    `data.datasets.load_records` prefers to the labels) are removed: they would hide the new images and labels.
    """
    for stale in out.glob(f"{SPLIT_FILE_PREFIX}*.csv"):
        stale.unlink()
    header = ["image", "mos", "split", "reference", "distortion", "level", "strength", "photo", "fr_mos", *RESCALE]
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, header, lineterminator="\n")
        w.writeheader()
        for pid, rows in zip(ids, per_photo, strict=True):
            for row in rows:
                w.writerow({**row, "split": "test" if pid in test else "train"})
    with open(out / "licences.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["reference", "source", "sha256", "license", "copyright"])
        for pid, (path, blob) in zip(ids, photos, strict=True):
            licence = known.get(path) or licence_of(path, stanzas)
            w.writerow([f"reference/{pid}.png", path, hashlib.sha256(blob).hexdigest(), *licence])


def build_corpus(
    out: Path,
    *,
    types: Sequence[str],
    deb: Path | None = None,
    photos: int = 0,
    levels: int = 5,
    max_side: int = 1600,
    min_side: int = 160,
    fmt: str = "png",
    val_fraction: float = 0.2,
    seed: int = 0,
    workers: int = 1,
    types_per_photo: int = 0,
    label_side: int | None = None,
    extra: Sequence[ExtraPhoto] = (),
    always_types: Sequence[str] = (),
) -> Path:
    """Build the corpus under `out` (layout: scripts/build_corpus.py's docstring); returns `out`.

    Args:
        out: The output folder.
        types: Distortion type names.
        deb: A downloaded gcompris-qt-data .deb; None: `apt-get download` it.
        photos: Use this many photos, evenly spread over them sorted by path (0: all).
        levels: Levels per type (strengths 1/levels .. 1).
        max_side: Photos are scaled down to this long side (smaller ones are kept as they are).
        min_side: Photos with a shorter short side are skipped.
        fmt: "png" or "jpg" (quality 95), the distorted images' format.
        val_fraction: Fraction of the photos in the test split.
        seed: Seed of the split and of the distortions.
        workers: Processes distorting and labelling photos.
        types_per_photo: Distort each photo by this many of `types`, drawn at random per photo (seeded by `seed` and
            the photo's position; kept in `types`' order); 0 (default) or len(types) and more: by all of them.
        label_side: Label versions as seen at this long side (`corpus.pipeline.distort_and_label`); None: as stored.
        always_types: Types every photo is distorted by beside its drawn `types_per_photo` (`photo_types`).
        extra: Photos from other sources (`corpus.extra`), after the package's (so that adding some leaves the
            package photos' draws as they were), with the licences they carry; split with the rest.

    Raises:
        ValueError: The package holds no photo, `types_per_photo` is negative, or `label_side` is under
            `MIN_LABEL_SIDE` (checked before anything is fetched or written).
    """
    if types_per_photo < 0:
        raise ValueError(f"types_per_photo must be >= 0 (0: all), got {types_per_photo}")
    if label_side is not None and label_side < MIN_LABEL_SIDE:
        raise ValueError(f"label_side must be at least {MIN_LABEL_SIDE} pixels (the metrics need it), got {label_side}")
    for sub in ("reference", "images", "rows"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    found, stanzas = _unpack(deb, min_side)
    if 0 < photos < len(found):  # evenly spread over the sorted list, so that every activity folder has its share
        found = [found[i * len(found) // photos] for i in range(photos)]
    ids = [photo_id(p) for p, _ in found] + [e.id for e in extra]
    found += [(e.source, e.data) for e in extra]
    test = {ids[i] for i in np.random.default_rng(seed).permutation(len(ids))[: round(val_fraction * len(ids))]}
    kinds = [photo_types(types, types_per_photo, seed, i, always_types) for i in range(len(ids))]
    jobs = [(pid, blob, out, kinds[i], levels, max_side, fmt, seed, i, label_side)
            for i, (pid, (_, blob)) in enumerate(zip(ids, found, strict=True))]  # fmt: skip
    per_photo = []
    for i, rows in enumerate(map_in_order(build_photo, jobs, workers), 1):  # in order: a small loss if stopped
        per_photo.append(rows)
        print(f"photo {i}/{len(jobs)} done", file=sys.stderr, flush=True)
    _write_csvs(out, ids, found, per_photo, test, stanzas, {e.source: (e.licence, e.holder) for e in extra})
    per = f"{min(types_per_photo or len(types), len(types))} of {len(types)} types"
    if always_types:
        per += f" + {', '.join(always_types)} where not drawn"
    print(f"{len(ids)} photos x {per} x {levels} levels -> {out / 'labels.csv'}", file=sys.stderr)
    return out
