#!/usr/bin/env python3
"""Build gamma-lite's training corpus from the real photographs in Debian's `gcompris-qt-data`, reproducibly.

Run it where gamma-iqa is installed (it uses gamma_iqa.corpus) and dpkg is at hand:

    python scripts/build_corpus.py --out corpus/                  # fetches the .deb with `apt-get download`
    python scripts/build_corpus.py --out tiny/ --deb gcompris-qt-data_3.1-2_all.deb --photos 4 --types 3 --levels 2

Steps: unpack the .deb (`dpkg -x`) into a temporary folder; read the Qt resource bundles (`.rcc`) under
usr/share/gcompris-qt/rcc/ with our own parser; keep the real photographs (`is_photo`); scale each so that its long
side is at most --max-side; distort each with every chosen type at every level (corpus.distortions); label each
distorted image with the pseudo-MOS of its full-reference fidelity to the pristine photo (corpus.fidelity), computed
on the image as stored. Written under --out:

- `reference/<photo>.png`: the pristine photos as used;
- `images/<photo>__<type>__<level>.png` (or .jpg with --format jpg);
- `labels.csv`: image,mos,split,reference,distortion,level,strength and each metric's raw value; `mos` in [0, 1],
  higher is better; `split` is train or test by photo (all of a photo's images on one side), --val-fraction of the
  photos in test. It is a `folder+csv` dataset: root --out, csv labels.csv, mos_range [0, 1], scene natural;
- `rows/<photo>.json`: each finished photo's label rows; a rerun with the same arguments reuses them, so an
  interrupted build goes on where it stopped;
- `licences.csv`: per photo, its path in the package, SHA-256 of the source file, licence and copyright holder, from
  usr/share/doc/gcompris-qt-data/copyright (Debian's machine-readable format; the last matching stanza wins).

Photo rule (`is_photo`): a raster image (WebP, JPEG, PNG) in one of `PHOTO_FOLDERS`, the activity folders whose
images are photographs (checked by eye on gcompris-qt-data 3.1: animals, monuments, fishes, the sea bed, tools,
household objects, renewable energy, music), with a short side of at least --min-side pixels; cartoons (e.g. lang/),
paintings (paintings/, details/), cut-outs (babyshapes/), renders (solar_system/) and mixed folders (louis-braille/)
are out.
Byte-identical files found in two folders are kept once.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fnmatch
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gamma_iqa.corpus.distortions import DISTORTIONS, distort, level_strength
from gamma_iqa.corpus.fidelity import RESCALE, fidelity, pseudo_mos

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
RASTER = (".webp", ".jpg", ".jpeg", ".png")


# ---- Qt resource bundles -----------------------------------------------------------------------------------------
# Header (big-endian): "qres", version, tree offset, data offset, names offset (version >= 3: a flags word follows).
# Tree: nodes of 14 bytes (version 1) or 22 (a last-modified u64 appended): name offset u32, flags u16, then for a
# directory (flag 2) child count u32 and first child index u32, for a file country u16, language u16, data offset u32.
# Names: length u16 (UTF-16 units), hash u32, UTF-16BE text. Data: size u32 then the bytes; flag 1 (zlib) bytes are
# a u32 uncompressed size followed by a zlib stream; flag 4 is zstd, which this parser refuses.
RCC_DIRECTORY, RCC_ZLIB, RCC_ZSTD = 2, 1, 4


def parse_rcc(data: bytes) -> dict[str, bytes]:
    """Every file in a Qt .rcc bundle: {path: uncompressed bytes}, paths joined with '/'."""
    if len(data) < 20 or data[:4] != b"qres":
        raise ValueError("not a Qt resource bundle (no 'qres' magic)")
    version, tree, payload, names = struct.unpack(">IIII", data[4:20])
    if not 1 <= version <= 3:
        raise ValueError(f"unsupported rcc version {version}")
    node_size = 14 if version == 1 else 22

    def name(offset: int) -> str:
        (length,) = struct.unpack_from(">H", data, names + offset)
        start = names + offset + 6  # after the length and the hash
        return data[start : start + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}

    def walk(index: int, prefix: str, depth: int) -> None:
        if depth > 64:
            raise ValueError("rcc tree too deep (a cycle?)")
        offset = tree + index * node_size
        name_offset, flags = struct.unpack_from(">IH", data, offset)
        path = prefix + name(name_offset) if index else ""
        if flags & RCC_DIRECTORY:
            count, first = struct.unpack_from(">II", data, offset + 6)
            for child in range(first, first + count):
                walk(child, path + "/" if path else "", depth + 1)
            return
        (data_offset,) = struct.unpack_from(">I", data, offset + 10)
        (size,) = struct.unpack_from(">I", data, payload + data_offset)
        blob = data[payload + data_offset + 4 : payload + data_offset + 4 + size]
        if flags & RCC_ZSTD:
            raise ValueError(f"{path}: zstd-compressed rcc entries are not supported")
        if flags & RCC_ZLIB:
            (expected,) = struct.unpack_from(">I", blob)
            blob = zlib.decompress(blob[4:])
            if len(blob) != expected:
                raise ValueError(f"{path}: {len(blob)} bytes uncompressed, header says {expected}")
        files[path] = blob

    walk(0, "", 0)
    return files


# ---- photos and licences -----------------------------------------------------------------------------------------
def is_photo(path: str, size: tuple[int, int], min_side: int) -> bool:
    """The photo rule of the module docstring, on a path inside the bundles and the image's (width, height)."""
    if not path.startswith(ROOT) or not path.lower().endswith(RASTER):
        return False
    folder = path[len(ROOT) :].rsplit("/", 1)[0]
    return any(fnmatch.fnmatchcase(folder, f) for f in PHOTO_FOLDERS) and min(size) >= min_side


def parse_copyright(text: str) -> list[tuple[list[str], str, str]]:
    """Debian copyright-format stanzas with a Files field: (patterns, first copyright line, licence)."""
    stanzas = []
    for block in text.split("\n\n"):
        fields: dict[str, list[str]] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key].append(line.strip())
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = [value.strip()] if value.strip() else []
        if "Files" in fields and "License" in fields:
            patterns = [p for line in fields["Files"] for p in line.split()]
            holder = fields.get("Copyright", [""])[0] if fields.get("Copyright") else ""
            stanzas.append((patterns, holder, fields["License"][0]))
    return stanzas


def licence_of(path: str, stanzas: list[tuple[list[str], str, str]]) -> tuple[str, str]:
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
def _load(blob: bytes, max_side: int) -> np.ndarray:
    img = Image.open(io.BytesIO(blob)).convert("RGB")
    img.thumbnail((max_side, max_side), Image.LANCZOS)
    return np.asarray(img, dtype=np.float32) / 255


def _save(x: np.ndarray, path: Path) -> np.ndarray:
    """Write an image; return what a reader gets back, on which the labels are computed."""
    img = Image.fromarray(np.round(x * 255).astype(np.uint8))
    if path.suffix == ".jpg":
        img.save(path, quality=95)
    else:
        img.save(path)
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255


def _one_thread() -> None:
    """Each worker process computes with one torch thread: W workers on W cores, not W x cores threads fighting."""
    torch.set_num_threads(1)


def build_photo(job: tuple) -> list[dict]:
    """Every distorted version of one photo and its label rows (one worker task).

    The rows are kept in rows/<photo>.json once all its images are written, so a rerun after an interruption
    (same arguments) reuses finished photos and redoes only the rest.
    """
    pid, blob, out, types, levels, max_side, fmt, seed, index = job
    done = out / "rows" / f"{pid}.json"
    key = {"types": types, "levels": levels, "max_side": max_side, "format": fmt, "seed": seed, "index": index}
    if done.is_file():
        saved = json.loads(done.read_text())
        if saved["key"] == key:
            return saved["rows"]
    ref = _save(_load(blob, max_side), out / "reference" / f"{pid}.png")
    rows = []
    for t, kind in enumerate(types):
        for level in range(1, levels + 1):
            # One generator per (photo, type), restarted at every level: random choices (a shifted channel, a blur
            # angle, a noise field) stay the same across levels, so only the strength changes with the level.
            rng = np.random.default_rng([seed, index, t])
            name = f"images/{pid}__{kind}__{level}.{fmt}"
            img = _save(distort(ref, kind, level_strength(level, levels), rng), out / name)
            values = fidelity(ref, img)
            rows.append({"image": name, "mos": round(pseudo_mos(values), 6), "reference": f"reference/{pid}.png",
                         "distortion": kind, "level": level, "strength": level_strength(level, levels),
                         **{k: round(v, 6) for k, v in values.items()}})  # fmt: skip
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "rows": rows}))
    os.replace(tmp, done)  # atomic: a photo is either done or redone
    return rows


def fetch_deb(folder: Path) -> Path:
    """`apt-get download` the package into `folder` (needs Debian's package lists: `apt-get update`)."""
    subprocess.run(["apt-get", "download", PACKAGE], cwd=folder, check=True)
    return next(folder.glob(f"{PACKAGE}_*.deb"))


def build(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    (out / "reference").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    (out / "rows").mkdir(exist_ok=True)
    types = _types(args.types)
    with tempfile.TemporaryDirectory() as tmp:
        deb = Path(args.deb) if args.deb else fetch_deb(Path(tmp))
        subprocess.run(["dpkg", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        photos = collect_photos(Path(tmp) / "x", args.min_side)
        stanzas = parse_copyright((Path(tmp) / "x" / COPYRIGHT).read_text(encoding="utf-8"))
    if 0 < args.photos < len(photos):  # evenly spread over the sorted list, so that every activity folder has its share
        photos = [photos[i * len(photos) // args.photos] for i in range(args.photos)]
    if not photos:
        raise SystemExit(f"no photos found in {deb}")
    ids = [photo_id(p) for p, _ in photos]
    n_test = round(args.val_fraction * len(ids))
    test = {ids[i] for i in np.random.default_rng(args.seed).permutation(len(ids))[:n_test]}
    jobs = [(pid, blob, out, types, args.levels, args.max_side, args.format, args.seed, i)
            for i, (pid, (_, blob)) in enumerate(zip(ids, photos, strict=True))]  # fmt: skip
    per_photo = []
    with Pool(args.workers, initializer=_one_thread) if args.workers > 1 else contextlib.nullcontext() as pool:
        results = pool.imap(build_photo, jobs) if pool else map(build_photo, jobs)
        for i, rows in enumerate(results, 1):  # in order, one photo at a time: progress and a small loss if stopped
            per_photo.append(rows)
            print(f"photo {i}/{len(jobs)} done", file=sys.stderr, flush=True)
    header = ["image", "mos", "split", "reference", "distortion", "level", "strength", *RESCALE]
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
            w.writerow([f"reference/{pid}.png", path, hashlib.sha256(blob).hexdigest(), *licence_of(path, stanzas)])
    print(f"{len(ids)} photos x {len(types)} types x {args.levels} levels -> {out / 'labels.csv'}", file=sys.stderr)
    return out


def _types(spec: str) -> list[str]:
    """'all', a count (the first N of the 25, in family order) or a comma-separated list of names."""
    if spec == "all":
        return list(DISTORTIONS)
    if spec.isdigit():
        return list(DISTORTIONS)[: int(spec)]
    names = spec.split(",")
    unknown = [n for n in names if n not in DISTORTIONS]
    if unknown:
        raise SystemExit(f"unknown distortion types {', '.join(unknown)}; known: {', '.join(DISTORTIONS)}")
    return names


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--deb", help=f"a downloaded {PACKAGE} .deb (default: apt-get download it)")
    p.add_argument("--photos", type=int, default=0, help="use N photos evenly spread over them by path (default: all)")
    p.add_argument("--types", default="all", help="'all', a count, or comma-separated distortion names")
    p.add_argument("--levels", type=int, default=5, help="levels per type (strengths 1/L .. 1)")
    p.add_argument("--max-side", type=int, default=384, help="photos are scaled down to this long side")
    p.add_argument("--min-side", type=int, default=224, help="photos with a shorter short side are skipped")
    p.add_argument("--format", choices=("png", "jpg"), default="png", help="distorted image files (jpg: quality 95)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="fraction of photos in the test split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    build(p.parse_args(argv))


if __name__ == "__main__":
    main()
