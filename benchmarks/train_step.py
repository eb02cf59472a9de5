"""Training step throughput: forward, MSE loss, backward and an Adam step of the trainable parameters.

Two MoAE forms, interleaved: `fused` (the package's default) and `reference` (separate expert MLPs). A registered
model is built with random weights; the text tower runs on every step, as in training. The last line of stdout is one
JSON object with samples/s of each form and the peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch

import gamma_iqa
from gamma_iqa.engine.runtime import DTYPES
from gamma_iqa.models.moe import set_moae_fused


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--model", default="gamma-vit-b16")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = gamma_iqa.create_model(args.model, pretrained=False).to(device).train()
    size = model.config.clip.image_size
    optimizer = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=1e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=args.dtype == "fp16")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, size, size, generator=g).to(device)
    y = torch.rand(args.batch, generator=g).to(device)

    def step(fused: bool) -> float:
        set_moae_fused(model, fused)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=DTYPES[args.dtype], enabled=args.dtype != "fp32"):
            pred = model(x)
        loss = torch.nn.functional.mse_loss(pred.float(), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"fused": [], "reference": []}
    for i in range(args.warmup + args.iters):
        for form in times:
            t = step(form == "fused")
            if i >= args.warmup:
                times[form].append(t)
        print(
            f"iteration {i + 1}: " + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in times.items() if v),
            file=sys.stderr,
        )
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated() / 2**20, "torch.cuda.max_memory_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "ru_maxrss (process peak RSS)"
    result = {f"{k}_samples_per_s": round(args.batch / statistics.median(v), 3) for k, v in times.items()} | {
        "fused_vs_reference": round(statistics.median(times["reference"]) / statistics.median(times["fused"]), 3),
        "peak_mem_mb": round(peak, 1),
        "peak_mem_kind": kind,
        "device": args.device,
        "dtype": args.dtype,
        "batch": args.batch,
        "model": args.model,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
