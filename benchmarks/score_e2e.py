"""End-to-end `gamma-iqa score` throughput: images per second on a generated folder of JPEGs.

Runs the real command (decoding in DataLoader workers, crops, the model, CSV output) in this process, after one
warm-up run on a few images. Without --model, a gamma-vit-b16 with random weights is saved to a temporary folder and
scored from there, as a user's converted checkpoint would be. The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import gamma_iqa
from gamma_iqa.cli import main as cli_main


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
        seconds = run(["score", str(photos), *common])
    result = {
        "images_per_s": round(args.images / seconds, 3),
        "seconds": round(seconds, 2),
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
