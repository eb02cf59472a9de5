"""Forward-only crops per second on the CPU: fp32 against bf16 autocast, and gamma-lite's inference options.

For each model and batch, the variants run interleaved (one forward of each per round) under torch.inference_mode on
the same random crops, so that load from other processes hits them alike; crops/s is the batch over the median time.
Variants: `fp32` and `bf16` (the package's forward, bf16 by autocast, as `--dtype bf16` would run without the
Scorer's fallback); for gamma-lite also `fp32-before` (BatchNorm not folded, NCHW: the forward before the CPU
options) and `bf16-before`. A registered model is built with `pretrained=False` (random weights) except gamma-lite,
which uses its shipped weights. The largest score difference of each variant from `fp32` is reported. Progress goes to
stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

import gamma_iqa
from gamma_iqa.engine.runtime import autocast, cpu_has_bf16
from gamma_iqa.models.effnet import ConvBN
from gamma_iqa.models.lite import GammaLite


def set_before(before: bool) -> None:
    """Switch gamma-lite's CPU inference options off (`before`) or on (the package's default)."""
    ConvBN.fold = GammaLite.channels_last = not before


def forward(model: torch.nn.Module, x: torch.Tensor, variant: str) -> tuple[float, torch.Tensor]:
    """Seconds of one forward of `variant` and its scores."""
    set_before(variant.endswith("-before"))
    start = time.perf_counter()
    with torch.inference_mode(), autocast(torch.device("cpu"), variant.split("-")[0]):
        scores = model(x)
    seconds = time.perf_counter() - start
    set_before(False)
    return seconds, scores.float()


def measure(name: str, batch: int, iters: int, warmup: int) -> dict:
    """One model at one batch: crops/s of each variant, their ratio to fp32 and score difference from fp32."""
    model = gamma_iqa.create_model(name, pretrained=name == "gamma-lite").eval()
    variants = ["fp32", "bf16"] + (["fp32-before", "bf16-before"] if isinstance(model, GammaLite) else [])
    x = torch.rand(batch, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {v: [] for v in variants}
    scores = {}
    for i in range(warmup + iters):
        now = {}
        for v in variants:
            now[v], scores[v] = forward(model, x, v)
            if i >= warmup:
                times[v].append(now[v])
        shown = " ".join(f"{v} {t:.2f}s" for v, t in now.items())
        print(f"{name} batch {batch} round {i + 1}: {shown}", file=sys.stderr)
    rate = {v: batch / statistics.median(t) for v, t in times.items()}
    return {
        "model": name,
        "batch": batch,
        "crops_per_s": {v: round(r, 2) for v, r in rate.items()},
        "speed_vs_fp32": {v: round(r / rate["fp32"], 3) for v, r in rate.items()},
        "max_abs_score_diff_vs_fp32": {v: float((s - scores["fp32"]).abs().max()) for v, s in scores.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    """Parse the options, measure every model at every batch, print and return the JSON result."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="gamma-lite,gamma-vit-b16", help="comma-separated registered names")
    p.add_argument("--batches", default="10,32", help="comma-separated crops per forward")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [
        measure(m, int(b), args.iters, args.warmup) for m in args.models.split(",") for b in args.batches.split(",")
    ]
    result = {
        "runs": runs,
        "threads": torch.get_num_threads(),
        "native_bf16": cpu_has_bf16(),
        "timing": "batch / median time of the interleaved forwards",
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
