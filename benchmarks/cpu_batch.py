"""gamma-lite's CPU forward by crops per forward, with its depthwise layers' zero-tap padding on and off.

Why `GammaLite.cpu_crops_per_forward` is 4 and why `ConvBN.zero_tap` is on: for each forward size (crops per forward)
the package's forward (shipped weights, fp32, torch.inference_mode) runs with `ConvBN.zero_tap` True (asymmetric SAME
padding of the stride-2 depthwise layers through a zero tap in the kernel) and False (a padded copy of the input, as
before), interleaved (one forward of each per round, every size in each round) on the same random crops, so that load
from other processes hits them alike. Reports crops/s (the size over the median time), each size's rate over the rate
at one crop, zero-tap over padded copy, and the largest score difference between the two (0 where they agree bit for
bit). Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from throughput import positive_list  # a sibling script: benchmarks/ is on the path when run

import gamma_iqa
from gamma_iqa.models.effnet import ConvBN


def timed(model: torch.nn.Module, x: torch.Tensor, zero_tap: bool) -> tuple[float, torch.Tensor]:
    """Seconds of one forward with `ConvBN.zero_tap` set as given, and its scores."""
    ConvBN.zero_tap = zero_tap
    try:
        start = time.perf_counter()
        with torch.inference_mode():
            scores = model(x)
        return time.perf_counter() - start, scores
    finally:
        ConvBN.zero_tap = True


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison and print its JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=positive_list, default=[1, 2, 4, 8, 16], help="crops per forward, comma-separated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7, help="timed rounds (after one warm-up round)")
    args = p.parse_args(argv)
    if args.threads < 1 or args.rounds < 1:
        p.error("--threads and --rounds must be at least 1")
    torch.set_num_threads(args.threads)
    model = gamma_iqa.create_model("gamma-lite").eval()
    inputs = {n: torch.rand(n, 3, 224, 224, generator=torch.Generator().manual_seed(n)) for n in args.sizes}
    times: dict[tuple[int, bool], list[float]] = {(n, z): [] for n in args.sizes for z in (True, False)}
    diff = dict.fromkeys(args.sizes, 0.0)
    for r in range(args.rounds + 1):
        for n, x in inputs.items():
            (tap, s_tap), (pad, s_pad) = timed(model, x, True), timed(model, x, False)
            diff[n] = max(diff[n], float((s_tap - s_pad).abs().max()))
            if r:  # round 0 warms up
                times[n, True].append(tap)
                times[n, False].append(pad)
        print(f"round {r}/{args.rounds} done", file=sys.stderr)
    rate = {key: key[0] / statistics.median(t) for key, t in times.items()}
    one = rate[min(args.sizes), True]
    result = {
        "threads": args.threads,
        "torch": torch.__version__,
        "rounds": args.rounds,
        "sizes": [
            {
                "crops_per_forward": n,
                "crops_per_s": round(rate[n, True], 1),
                "crops_per_s_padded_copy": round(rate[n, False], 1),
                "vs_smallest_size": round(rate[n, True] / one, 3),
                "zero_tap_vs_padded_copy": round(rate[n, True] / rate[n, False], 3),
                "max_abs_score_diff": diff[n],
            }
            for n in args.sizes
        ],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
