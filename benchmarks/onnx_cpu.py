"""onnxruntime against PyTorch on the CPU for gamma-lite: forward alone, and `gamma-iqa score` end to end.

Forward: PyTorch fp32 (the package's inference forward: BatchNorm folded, channels-last), PyTorch bf16 autocast, and
onnxruntime fp32 (the exported image path, `gamma-iqa export`), interleaved (one forward of each per round) on the same
random crops, at 10 crops (one image at the paper's protocol) and 1 crop (a centre crop), each forward holding the
images a Scorer puts in one (1 at 10 crops, 4 at a centre crop); images/s is the images per forward over the median
time, and the largest score difference of each from PyTorch fp32 is reported.

End to end: `gamma-iqa score` (in this process, its `main`) on the same generated 1024x768 JPEGs with
`--backend torch` and `--backend onnxruntime` (`--workers` as the command's default unless given), interleaved over
`--rounds`, at 10 crops and a centre crop; the
onnxruntime export is made (and cached in a temporary $GAMMA_IQA_HOME) before the timing. Reports images/s (the best
round) and the largest difference between the two backends' scores.

Uses the shipped gamma-lite weights. Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
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
from gamma_iqa.engine.onnxrt import OnnxForward
from gamma_iqa.engine.runtime import autocast, default_workers
from gamma_iqa.engine.scoring import Scorer


def make_photos(folder: Path, n: int, width: int, height: int) -> list[str]:
    """n JPEGs (quality 90) with smooth structure and noise, like photos as far as the decoder is concerned."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    paths = []
    for i in range(n):
        base = 127 + 100 * np.sin(x / (40 + 7 * i))[..., None] * np.cos(y / (30 + 5 * i))[..., None]
        pixels = np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
    return paths


def forwards(model: torch.nn.Module, onnx: OnnxForward, crops: int, iters: int, warmup: int) -> dict:
    """Forward-only images/s of torch fp32, torch bf16 and onnxruntime fp32 at `crops` crops per image.

    Each forward holds the images a Scorer puts in one (`Scorer.per_forward`: 4 at one crop, 1 at 10 crops).
    """
    images = Scorer(model, crops=crops).per_forward
    x = torch.rand(images * crops, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(0))
    scenes = [None] * len(x)
    variants = {
        "torch-fp32": lambda: model(x),
        "torch-bf16": lambda: model(x).float(),
        "onnxruntime-fp32": lambda: onnx(x, scenes),
    }
    times: dict[str, list[float]] = {v: [] for v in variants}
    scores: dict[str, torch.Tensor] = {}
    for i in range(warmup + iters):
        for name, run in variants.items():
            start = time.perf_counter()
            with torch.inference_mode(), autocast(torch.device("cpu"), "bf16" if "bf16" in name else "fp32"):
                scores[name] = run()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
        print(f"forward {crops} crops round {i + 1}", file=sys.stderr)
    rate = {v: images / statistics.median(t) for v, t in times.items()}  # images/s
    return {
        "crops_per_image": crops,
        "images_per_forward": images,
        "images_per_s": {v: round(r, 2) for v, r in rate.items()},
        "speed_vs_torch_fp32": {v: round(r / rate["torch-fp32"], 3) for v, r in rate.items()},
        "max_abs_score_diff_vs_torch_fp32": {
            v: float((s - scores["torch-fp32"]).abs().max()) for v, s in scores.items()
        },
    }


def score_once(
    paths: list[str], backend: str, crops: str, workers: int | None, out: Path
) -> tuple[float, dict[str, float]]:
    """Seconds of one `gamma-iqa score` run and its scores by path."""
    argv = ["score", "--model", "gamma-lite", "--crops", crops, "--backend", backend]
    argv += [] if workers is None else ["--workers", str(workers)]
    start = time.perf_counter()
    code = cli_main([*argv, "--output", str(out), *paths])
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"gamma-iqa score --backend {backend} failed ({code})")
    with open(out, newline="") as f:
        return seconds, {r["path"]: float(r["score"]) for r in csv.DictReader(f)}


def end_to_end(paths: list[str], crops: str, workers: int | None, rounds: int, tmp: Path) -> dict:
    """`gamma-iqa score` images/s with each backend (best of `rounds`, interleaved) and their largest difference."""
    seconds: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
    scores = {}
    for r in range(rounds):
        for backend in seconds:
            t, scores[backend] = score_once(paths, backend, crops, workers, tmp / f"{backend}.csv")
            seconds[backend].append(t)
            print(f"score --crops {crops} --backend {backend} round {r + 1}: {t:.2f}s", file=sys.stderr)
    rate = {b: len(paths) / min(t) for b, t in seconds.items()}
    diff = max(abs(scores["torch"][p] - scores["onnxruntime"][p]) for p in scores["torch"])
    return {
        "crops": crops,
        "images": len(paths),
        "images_per_s": {b: round(v, 2) for b, v in rate.items()},
        "onnxruntime_vs_torch": round(rate["onnxruntime"] / rate["torch"], 3),
        "max_abs_score_diff": diff,
        "seconds": {b: [round(x, 2) for x in t] for b, t in seconds.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    """Parse the options, run both measurements, print and return the JSON result."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--images", type=int, default=20, help="generated JPEGs for the end-to-end runs")
    p.add_argument("--size", default="1024x768", help="WIDTHxHEIGHT of the generated JPEGs")
    p.add_argument("--workers", type=int, default=None, help="gamma-iqa score --workers (default: its own default)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved end-to-end rounds per backend")
    p.add_argument("--skip-e2e", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        os.environ["GAMMA_IQA_HOME"] = str(tmp / "home")  # the export cache, made here once
        model = gamma_iqa.create_model("gamma-lite").eval()
        onnx = OnnxForward(model, threads=args.threads)
        result = {
            "forward": [forwards(model, onnx, c, args.iters, args.warmup) for c in (10, 1)],
            "threads": args.threads,
            "torch": torch.__version__,
            "onnxruntime": onnx.info["onnxruntime"],
        }
        if not args.skip_e2e:
            width, height = (int(v) for v in args.size.split("x"))
            (tmp / "photos").mkdir()
            paths = make_photos(tmp / "photos", args.images, width, height)
            result["end_to_end"] = [end_to_end(paths, c, args.workers, args.rounds, tmp) for c in ("10", "center")]
            result["workers"] = default_workers() if args.workers is None else args.workers
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
