"""End-to-end `gamma-iqa score` throughput: images per second on a generated folder of JPEGs.

Runs the real command (decoding in DataLoader workers, crops, the model, CSV output) in this process, after one
warm-up run on a few images. Without --model, a gamma-vit-b16 with random weights is saved to a temporary folder and
scored from there, as a user's converted checkpoint would be. The last line of stdout is one JSON object.

With --compare (gamma-lite's CPU inference options), the same folder is scored by several variants, interleaved over
--rounds rounds so that load from other processes hits them alike: `before` (BatchNorm not folded, NCHW), `fold`
(BatchNorm folded into the convolutions), `nhwc` (channels-last), `after` (both, the package's default), and with
--compare-workers `after` with other worker counts. Each variant's images/s is the median over the rounds; the
JSON gives its ratio to `before` and its largest score difference from `before`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import gamma_iqa
from gamma_iqa.cli import main as cli_main
from gamma_iqa.models.effnet import ConvBN
from gamma_iqa.models.lite import GammaLite

VARIANTS = {"before": (False, False), "fold": (True, False), "nhwc": (False, True), "after": (True, True)}


def make_photos(folder: Path, n: int, width: int, height: int) -> None:
    """n JPEGs (quality 90) with smooth structure and noise, like photos as far as the decoder is concerned."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    for i in range(n):
        base = np.stack([np.sin(x / (20 + i) + c) * np.cos(y / (30 + 2 * i) - c) for c in (0.0, 1.0, 2.0)], -1)
        pixels = np.clip(127 + 90 * base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)


def run(argv: list[str]) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(argv)
    if code != 0:
        raise SystemExit(f"gamma-iqa score exited {code}")
    return time.perf_counter() - start


def read_scores(path: Path) -> dict[str, float]:
    with path.open(newline="") as f:
        return {row["path"]: float(row["score"]) for row in csv.DictReader(f)}


def compare(args: argparse.Namespace, photos: Path, common: list[str], tmp: Path) -> dict:
    """Interleaved rounds of the variants (see the module text); their median images/s, ratios and score diffs."""
    workers = [int(w) for w in args.compare_workers.split(",")] if args.compare_workers else []
    names = [*VARIANTS, *(f"after-w{w}" for w in workers)]
    seconds: dict[str, list[float]] = {n: [] for n in names}
    scores: dict[str, dict[str, float]] = {}
    for r in range(args.rounds):
        for name in names:
            fold, nhwc = VARIANTS[name.split("-")[0]]
            ConvBN.fold, GammaLite.channels_last = fold, nhwc
            argv = ["score", str(photos), *common, "--output", str(tmp / f"{name}.csv")]
            if name.startswith("after-w"):
                argv[argv.index("--workers") + 1] = name[len("after-w") :]
            seconds[name].append(run(argv))
            scores[name] = read_scores(tmp / f"{name}.csv")
            print(f"round {r + 1} {name}: {args.images / seconds[name][-1]:.2f} images/s", file=sys.stderr)
    ConvBN.fold, GammaLite.channels_last = True, True
    rate = {n: args.images / statistics.median(t) for n, t in seconds.items()}
    base = scores["before"]
    return {
        "images_per_s": {n: round(v, 3) for n, v in rate.items()},
        "ratio_vs_before": {n: round(v / rate["before"], 3) for n, v in rate.items()},
        "max_abs_score_diff_vs_before": {n: max(abs(s[k] - base[k]) for k in base) for n, s in scores.items()},
        "rounds": args.rounds,
        "timing": "images / median seconds of the interleaved rounds",
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--size", default="1024x768", help="WIDTHxHEIGHT of the generated JPEGs")
    p.add_argument("--model", help="model name or checkpoint (default: random gamma-vit-b16 saved to a temp folder)")
    p.add_argument("--crops", default="center")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compare", action="store_true", help="time gamma-lite's CPU inference variants interleaved")
    p.add_argument("--compare-workers", default="", help="with --compare, also `after` with these worker counts")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of --compare")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        photos, warm = tmp_path / "photos", tmp_path / "warm"
        photos.mkdir()
        warm.mkdir()
        make_photos(photos, args.images, width, height)
        make_photos(warm, 2, width, height)
        model = args.model
        if model is None:
            random_b16 = gamma_iqa.create_model("gamma-vit-b16", pretrained=False)
            model = str(gamma_iqa.save_checkpoint(random_b16, tmp_path / "m"))
        common = [
            "--model",
            model,
            "--crops",
            args.crops,
            "--workers",
            str(args.workers),
            "--batch-size",
            str(args.batch_size),
            "--device",
            args.device,
            "--dtype",
            args.dtype,
        ]
        run(["score", str(warm), *common])
        print(f"scoring {args.images} images of {args.size} ...", file=sys.stderr)
        if args.compare:
            result = compare(args, photos, common, tmp_path)
        else:
            seconds = run(["score", str(photos), *common])
            result = {"images_per_s": round(args.images / seconds, 3), "seconds": round(seconds, 2)}
    result |= {
        "images": args.images,
        "size": args.size,
        "crops": args.crops,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "device": args.device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "model": args.model or "gamma-vit-b16 (random weights)",
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
