"""Score differences of bf16 against fp32 on the CPU, at the score level (the mean of an image's crops), on photos.

Scores each photo with `model.score` in fp32 and in bf16 (autocast; the CPU must have native bf16, else the package
scores in fp32 and the difference is 0) and prints the largest and mean absolute difference per crop mode, and the
time of each. Photos: every JPEG/PNG under --photos (repeatable), or by default the evaluation photos of
scripts/evaluate_default.py (Debian packages, unpacked under --cache with apt-get download) plus examples/ and the
golden images of shared/data/golden when present. The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import gamma_iqa

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = {".jpg", ".jpeg", ".png"}


def default_photos(cache: Path) -> list[Path]:
    """The evaluation photos of scripts/evaluate_default.py, examples/ and shared/data/golden/ (those present)."""
    spec = importlib.util.spec_from_file_location("evaluate_default", ROOT / "scripts" / "evaluate_default.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    photos = [path for _, path in module.debian_photos(cache)]
    for folder in (ROOT / "examples", ROOT.parent / "shared" / "data" / "golden"):
        photos += sorted(p for p in folder.glob("*") if p.suffix.lower() in SUFFIXES)
    return photos


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gamma-lite")
    p.add_argument("--photos", action="append", default=[], help="a folder of photos (default: see the module text)")
    p.add_argument("--cache", default="/tmp/gamma-debs", help="where the Debian photo packages are unpacked")
    p.add_argument("--crops", default="10,center", help="crop modes, comma-separated")
    p.add_argument("--limit", type=int, default=60, help="at most this many photos")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.photos:
        photos = sorted(f for d in args.photos for f in Path(d).rglob("*") if f.suffix.lower() in SUFFIXES)
    else:
        photos = default_photos(Path(args.cache))
    photos = [str(f) for f in photos[: args.limit]]
    model = gamma_iqa.create_model(args.model)
    result: dict = {"model": args.model, "photos": len(photos), "threads": torch.get_num_threads()}
    for crops in args.crops.split(","):
        crops_value: int | str = int(crops) if crops.isdigit() else crops
        scores, seconds = {}, {}
        for dtype in ("fp32", "bf16"):
            start = time.perf_counter()
            scores[dtype] = np.array(model.score(photos, crops=crops_value, dtype=dtype))
            seconds[dtype] = round(time.perf_counter() - start, 2)
            print(f"{crops} {dtype}: {seconds[dtype]} s", file=sys.stderr)
        diff = np.abs(scores["bf16"] - scores["fp32"])
        result[f"crops_{crops}"] = {
            "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "over_1e-3": int((diff > 1e-3).sum()),
            "score_std_fp32": float(scores["fp32"].std()),
            "seconds": seconds,
        }
    result["torch"] = torch.__version__
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
