"""Training step throughput: forward, MSE loss, backward and an Adam step of the trainable parameters.

Variants, interleaved round by round: each MoAE form of `--forms` (`fused`, the package's default, and `reference`,
separate expert MLPs), each Adam implementation of `--optimizer` (torch's `default` choice, `fused`, `foreach`; one
optimiser each, all stepping the same parameters), and with `--compile [MODE]` the towers compiled
(`Gamma.compile_towers`; `--also-eager` times them eager too, in the same process, through
`torch.compiler.set_stance("force_eager")`). Every compiled form costs a compile, timed apart (`compile_s`, the first
step of each compiled variant). A registered model is built with random weights; the text tower runs on every step, as
in training. The last line of stdout is one JSON object: samples/s of each variant
(`<form>[_compiled][_<optimizer>-adam]_samples_per_s`, the optimiser part left out for `default`), the settings and
the peak memory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from throughput import check_device, check_model, positive  # sibling scripts: benchmarks/ is on the path when run

import gamma_iqa
from gamma_iqa.engine.runtime import COMPILE_MODES, DTYPES
from gamma_iqa.models.moe import set_moae_fused

OPTIMIZERS = ("default", "fused", "foreach")


@dataclass(frozen=True)
class Variant:
    """One timed configuration of the training step."""

    form: str  # MoAE form: fused or reference
    optimizer: str  # Adam implementation: default, fused or foreach
    compiled: bool

    @property
    def label(self) -> str:
        """The variant's name in the JSON keys, e.g. `fused_compiled_fused-adam`."""
        return (
            self.form
            + ("_compiled" if self.compiled else "")
            + ("" if self.optimizer == "default" else f"_{self.optimizer}-adam")
        )


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked (`--forms` split into a list)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    p.add_argument("--batch", type=positive, default=8)
    p.add_argument("--model", default="gamma-vit-b16")
    p.add_argument("--iters", type=positive, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--forms", default="fused,reference", help="comma-separated MoAE forms to time (fused, reference)")
    p.add_argument("--optimizer", nargs="+", choices=OPTIMIZERS, default=["default"], help="Adam implementations")
    p.add_argument(
        "--compile",
        nargs="?",
        const="default",
        choices=COMPILE_MODES,
        default=None,
        metavar="MODE",
        help="compile the model (a mode, default without one); the first step compiles, so at least 1 --warmup",
    )
    p.add_argument("--also-eager", action="store_true", help="with --compile: time the eager step too")
    args = p.parse_args(argv)
    args.forms = [f.strip() for f in args.forms.split(",") if f.strip()]
    if not args.forms or set(args.forms) - {"fused", "reference"}:
        p.error(f"--forms: choose from fused, reference, got {args.forms}")
    if args.also_eager and not args.compile:
        p.error("--also-eager needs --compile")
    check_device(p, args.device)
    check_model(p, args.model)
    if args.compile:
        args.warmup = max(args.warmup, 1)  # the first compiled step is the compile: never a timed one
    return args


def variants(args: argparse.Namespace) -> list[Variant]:
    """The variants to time, in the order each round runs them."""
    modes = [False] if not args.compile else ([False, True] if args.also_eager else [True])
    return [Variant(f, o, c) for f in args.forms for c in modes for o in dict.fromkeys(args.optimizer)]


def make_optimizer(params: list[torch.nn.Parameter], kind: str) -> torch.optim.Optimizer:
    """Adam over `params` in implementation `kind` (default: torch chooses; fused; foreach)."""
    flags = {"default": {}, "fused": {"fused": True}, "foreach": {"foreach": True}}[kind]
    return torch.optim.Adam(params, lr=1e-5, **flags)


def main(argv: list[str] | None = None) -> dict:
    """Time the variants; prints and returns the JSON result."""
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = gamma_iqa.create_model(args.model, pretrained=False).to(device).train()
    if args.compile:
        if hasattr(model, "compile_towers"):
            model.compile_towers(mode=args.compile)
        else:
            model.compile(mode=args.compile)
    size = model.image_size
    params = [q for q in model.parameters() if q.requires_grad]
    optimizers = {kind: make_optimizer(params, kind) for kind in dict.fromkeys(args.optimizer)}
    scaler = torch.amp.GradScaler(device.type, enabled=args.dtype == "fp16")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, size, size, generator=g).to(device)
    y = torch.rand(args.batch, generator=g).to(device)

    def step(v: Variant) -> float:
        set_moae_fused(model, v.form == "fused")
        optimizer = optimizers[v.optimizer]
        stance = (
            torch.compiler.set_stance("force_eager") if args.compile and not v.compiled else contextlib.nullcontext()
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with stance:
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

    todo = variants(args)
    times: dict[str, list[float]] = {v.label: [] for v in todo}
    compile_s: dict[str, float] = {}
    for i in range(args.warmup + args.iters):
        for v in todo:
            t = step(v)
            if i == 0 and v.compiled:
                compile_s[v.label] = round(t, 1)
            if i >= args.warmup:
                times[v.label].append(t)
        print(
            f"iteration {i + 1}: " + ", ".join(f"{k} {t[-1] * 1000:.0f} ms" for k, t in times.items() if t),
            file=sys.stderr,
            flush=True,
        )
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated() / 2**20, "torch.cuda.max_memory_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "ru_maxrss (process peak RSS)"
    median = {k: statistics.median(t) for k, t in times.items()}
    result: dict = {f"{k}_samples_per_s": round(args.batch / m, 3) for k, m in median.items()}
    if {"fused", "reference"} <= median.keys():
        result["fused_vs_reference"] = round(median["reference"] / median["fused"], 3)
    for v in todo:  # each compiled variant against its eager twin, each non-default Adam against torch's default
        eager = Variant(v.form, v.optimizer, False).label
        if v.compiled and eager in median:
            result[f"{v.label}_vs_eager"] = round(median[eager] / median[v.label], 3)
        base = Variant(v.form, "default", v.compiled).label
        if v.optimizer != "default" and base in median:
            result[f"{v.label}_vs_default_adam"] = round(median[base] / median[v.label], 3)
    result |= {
        "compile": args.compile,
        "compile_s": compile_s,
        "forms": args.forms,
        "optimizers": list(optimizers),
        "iters": args.iters,
        "warmup": args.warmup,
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
