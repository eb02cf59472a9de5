"""Crops per second of gamma-iqa's scoring forward against a naive reference and a plain CLIP image tower.

Paths, all under torch.inference_mode on the same input crops:
  ours   the package as used: fused MoAE (--moae reference: separate expert MLPs), cached text features cut after
         the end token, --dtype autocast, optionally torch.compile (--compile);
  naive  how the original runs: separate expert MLPs (MoAE.forward_reference), the prompts re-encoded on every
         forward through all 77 positions, fp32;
  plain  a CLIP image tower without experts (plus the same input normalisation), in --dtype.
With --dtype bf16 or fp16 our path is also timed in fp32, and the scores of both are compared on extra images.

The paths run interleaved (ours, naive, plain, ...), so that load from other processes hits them alike; crops/s is the
batch over the median iteration time. A registered model name is built fresh (random weights, MoAE experts, routers
and scales perturbed so that they change the output); a path is loaded as is. Progress goes to stderr; the last line
of stdout is one JSON object. Only the standard library, torch and gamma_iqa are used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import gamma_iqa
from gamma_iqa.engine.runtime import COMPILE_MODES, DTYPES
from gamma_iqa.models.clip import CLIP
from gamma_iqa.models.moe import set_moae_fused

PATHS = ("ours", "naive", "plain", "ours_fp32")


def positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def positive_list(text: str) -> list[int]:
    """An argparse type: comma-separated whole numbers, each >= 1 ("1,8,32" -> [1, 8, 32])."""
    values = text.split(",")
    if not all(v.isascii() and v.isdigit() and int(v) >= 1 for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated whole numbers >= 1, got {text!r}")
    return [int(v) for v in values]


def check_device(p: argparse.ArgumentParser, device: str) -> None:
    """--device cuda where there is none: the parser's one-line error, not a traceback later."""
    if device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here (use --device cpu)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="autocast dtype of our path and plain")
    p.add_argument("--batch", type=positive, default=1, help="crops per forward")
    p.add_argument("--model", default="gamma-vit-b16", help="registered name (random weights) or checkpoint path")
    p.add_argument("--scene", default=None, help="scene to score against (default: the model's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--iters", type=positive, default=10, help="timed forwards per path")
    p.add_argument("--warmup", type=int, default=2, help="untimed forwards per path before timing")
    p.add_argument("--compile", action="store_true", help="torch.compile our path's towers")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default=None, help="torch.compile mode (implies --compile)")
    p.add_argument("--moae", choices=["fused", "reference"], default="fused", help="our path's MoAE form")
    p.add_argument(
        "--paths",
        default="ours,naive,plain,ours_fp32",
        help="paths to time, comma-separated (ours always): leave out ours_fp32 with --compile, else our path "
        "compiles a second time for fp32; the scores of a compiled path are then compared with the eager one's",
    )
    p.add_argument(
        "--sdpa",
        choices=["auto", "flash", "efficient", "cudnn", "math"],
        default="auto",
        help="attention backend of every path (torch.nn.attention.sdpa_kernel); auto: torch's choice",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    check_device(p, args.device)
    wanted = [name.strip() for name in args.paths.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(PATHS))
    if unknown:
        p.error(f"--paths: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(PATHS)}")
    args.paths = ",".join(dict.fromkeys(["ours", *wanted]))
    check_model(p, args.model)
    return args


def check_model(p: argparse.ArgumentParser, name: str | None) -> None:
    """--model that is neither a registered name nor an existing path: the parser's one-line error."""
    if name is not None and name not in gamma_iqa.list_models() and not Path(name).exists():
        p.error(f"--model {name}: neither a registered model ({', '.join(gamma_iqa.list_models())}) nor a path")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build(name: str, device: torch.device, seed: int) -> gamma_iqa.Gamma:
    if name not in gamma_iqa.list_models():
        return gamma_iqa.create_model(name).to(device)
    model = gamma_iqa.create_model(name, pretrained=False, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".mlp." in n and p.requires_grad:  # experts, routers and scales (0 at init: experts would not count)
                p.add_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() == 0 else 0.02))
    return model.to(device)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "ru_maxrss (process peak RSS)"


def autocast(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


SDPA = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION", "math": "MATH"}


def attention(choice: str) -> contextlib.AbstractContextManager:
    """The attention backend forced for every path (`--sdpa`), or torch's own choice."""
    if choice == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, SDPA[choice]))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    log(f"building {args.model} on {device} ...")
    ours = build(args.model, device, args.seed)
    set_moae_fused(ours, args.moae == "fused")
    args.compile = args.compile or args.compile_mode is not None
    if args.compile:
        if not hasattr(ours, "compile_towers"):
            raise SystemExit(f"--compile: {args.model} has no compiled path (Gamma models only)")
        ours.compile_towers(**({"mode": args.compile_mode} if args.compile_mode else {}))
    scene = ours.prompt_key(args.scene)
    size = ours.config.clip.image_size
    gen = torch.Generator().manual_seed(args.seed)
    crops = torch.rand(args.batch, 3, size, size, generator=gen)  # RGB in [0, 1]
    if device.type == "cuda":
        crops = crops.pin_memory()

    def inputs() -> torch.Tensor:  # a host-to-device copy per forward, as a scoring loop does
        return crops.to(device, non_blocking=True)

    graphs = args.compile_mode in ("reduce-overhead", "max-autotune") and device.type == "cuda"

    def run_ours(x: torch.Tensor, autocast_dtype: torch.dtype = dtype) -> torch.Tensor:
        if graphs:  # a new step of the CUDA graphs (as the Scorer marks each forward)
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(device, autocast_dtype):
            return ours(x, scene).clone()  # a graph's output is replayed over by the next step

    # Our path alone first: its peak memory is read before the other paths exist.
    with torch.inference_mode():
        for _ in range(max(args.warmup, 1)):  # the first call builds the caches (and compiles)
            run_ours(inputs())
        sync()
    peak_mb, peak_kind = peak_memory_mb(device)

    wanted = set(args.paths.split(","))
    log("building the naive and plain paths ...")
    naive = build(args.model, device, args.seed)
    set_moae_fused(naive, False)
    tokens = naive.tokens(scene).to(device)  # (K, 77): no cut

    def run_naive(x: torch.Tensor) -> torch.Tensor:
        text = naive.clip.encode_text(tokens, trim=False)  # (K, E), recomputed on every forward
        return naive.head(naive.encode_image(x), text.expand(x.shape[0], -1, -1))

    plain = CLIP(ours.config.clip).visual.to(device)
    mean, std = ours.mean, ours.std

    def run_plain(x: torch.Tensor) -> torch.Tensor:
        with autocast(device, dtype):
            return plain((x - mean) / std)

    paths: dict[str, Callable[[torch.Tensor], torch.Tensor]] = dict(ours=run_ours, naive=run_naive, plain=run_plain)
    if dtype != torch.float32:
        paths["ours_fp32"] = lambda x: run_ours(x, torch.float32)
    paths = {name: fn for name, fn in paths.items() if name in wanted}
    times: dict[str, list[float]] = {name: [] for name in paths}
    with torch.inference_mode(), attention(args.sdpa):
        for name, fn in paths.items():
            for _ in range(args.warmup if name != "ours" else 0):
                fn(inputs())
        sync()
        for i in range(args.iters):
            for name, fn in paths.items():
                t0 = time.perf_counter()
                fn(inputs())
                sync()
                times[name].append(time.perf_counter() - t0)
            log(f"iteration {i + 1}/{args.iters}: " + ", ".join(f"{n} {t[-1] * 1e3:.1f} ms" for n, t in times.items()))
    rate = {name: args.batch / statistics.median(t) for name, t in times.items()}

    result = {f"{name}_crops_per_s": round(r, 3) for name, r in rate.items() if name != "ours_fp32"}
    if "naive" in rate:
        result["speedup_vs_naive"] = round(rate["ours"] / rate["naive"], 3)
    if "plain" in rate:
        result["ratio_vs_plain"] = round(rate["ours"] / rate["plain"], 3)
    result |= {
        "peak_mem_mb": round(peak_mb, 1),
        "peak_mem_kind": f"{peak_kind}, after building and warming up our path alone",
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype,
        "batch": args.batch,
        "model": args.model,
        "scene": scene,
        "threads": torch.get_num_threads(),
        "compile": args.compile_mode or ("default" if args.compile else False),
        "moae": args.moae,
        "sdpa": args.sdpa,
        "iters": args.iters,
        "warmup": args.warmup,
        "timing": "batch / median time of the interleaved iterations",
        "torch": torch.__version__,
    }
    if args.compile and "ours_fp32" not in paths:
        log("comparing scores with the eager path ...")
        eager = build(args.model, device, args.seed)
        set_moae_fused(eager, args.moae == "fused")
        check = torch.rand(max(args.batch, 8), 3, size, size, generator=gen).to(device)
        with torch.inference_mode(), attention(args.sdpa):
            fast = torch.cat([run_ours(x) for x in check.split(args.batch)])
            with autocast(device, dtype):
                plain_scores = torch.cat([eager(x, scene) for x in check.split(args.batch)])
        result["max_abs_score_diff_vs_eager"] = float((fast.float() - plain_scores.float()).abs().max())
        result["score_diff_images"] = check.shape[0]
    elif "ours_fp32" in paths:
        log("comparing scores with our fp32 path ...")
        check = torch.rand(max(args.batch, 8), 3, size, size, generator=gen).to(device)
        with torch.inference_mode(), attention(args.sdpa):
            low = torch.cat([run_ours(x) for x in check.split(args.batch)])
            full = torch.cat([run_ours(x, torch.float32) for x in check.split(args.batch)])
        result["ours_fp32_crops_per_s"] = round(rate["ours_fp32"], 3)
        result["speedup_vs_ours_fp32"] = round(rate["ours"] / rate["ours_fp32"], 3)
        result["max_abs_score_diff_vs_fp32"] = float((low.float() - full).abs().max())
        result["score_diff_images"] = check.shape[0]
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
