"""Time forms of one MoAE block's forward (and backward) on random weights: the evidence behind `forward_fused`.

Forms (all compute out = shared(x) + s * sum_i g_i expert_i(x)):
  reference     MoAE.forward_reference: 1 + E separate MLPs
  fused         MoAE.forward_fused (the package's): the shared expert as its own MLP; for the E experts one wide
                first product, one SiLU, one batched second product, the gates applied to the (E, N, d) outputs
  gated_hidden  one wide first product, QuickGELU, the hidden chunks scaled by [1, s g_1 .. s g_E] per token, one
                wide second product against the stacked second layers, biases b_shared + s sum_i g_i b_i
  all_fused     the fused form over all 1 + E MLPs, the shared expert included in the wide products
Concatenated weights are built outside the timing for inference, as the package caches them; in training they are
built in every step. The forms run interleaved; each reports the minimum and the median over the rounds (ms per call).
The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gamma_iqa.models.clip import Mlp, QuickGELU, autocast_dtype
from gamma_iqa.models.moe import MoAE


def gated_hidden(moe: MoAE, cache_dtype: torch.dtype | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The gated-hidden form; with `cache_dtype` its concatenated weights are built once, in that dtype."""
    mlps = [moe.shared, *moe.experts]
    gelu = QuickGELU()

    def weights() -> tuple[torch.Tensor, ...]:
        w1 = torch.cat([m.c_fc.weight for m in mlps])  # ((1 + E) H, d)
        b1 = torch.cat([m.c_fc.bias for m in mlps])  # ((1 + E) H,)
        w2 = torch.cat([m.c_proj.weight for m in mlps], dim=1)  # (d, (1 + E) H)
        b2 = torch.stack([m.c_proj.bias for m in mlps])  # (1 + E, d)
        return w1, b1, w2, b2

    cached = None
    if cache_dtype is not None:
        with torch.no_grad():
            cached = tuple(w.to(cache_dtype) for w in weights())

    def forward(x: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2 = cached or weights()
        sg = moe.scale * moe.gates(x)  # (N, E)
        coef = torch.cat([torch.ones_like(sg[:, :1]), sg], dim=-1)  # (N, 1 + E)
        h = gelu(F.linear(x, w1, b1))  # (N, (1 + E) H)
        h = (h.view(x.shape[0], len(mlps), -1) * coef[..., None].to(h.dtype)).flatten(1)
        return F.linear(h, w2) + coef.to(h.dtype) @ b2  # (N, d)

    return forward


def all_fused(moe: MoAE) -> Callable[[torch.Tensor], torch.Tensor]:
    """The fused form over the shared expert and the E experts together (1 + E chunks in each wide product)."""
    mlps = [moe.shared, *moe.experts]
    cache: dict = {}

    def forward(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            w1, b1, w2, b2 = MoAE._build_fused(mlps)
        else:
            dtype = autocast_dtype("cpu")
            if dtype not in cache:
                w = MoAE._build_fused(mlps)
                cache[dtype] = w if dtype is None else tuple(t.to(dtype) for t in w)
            w1, b1, w2, b2 = cache[dtype]
        h = F.silu(F.linear(x, w1, b1), inplace=not torch.is_grad_enabled())  # (N, (1 + E) H)
        y = torch.baddbmm(b2, h.view(x.shape[0], len(mlps), -1).transpose(0, 1), w2)  # (1 + E, N, d)
        sg = moe.scale * moe.gates(x)  # (N, E)
        out = torch.addcmul(y[0], y[1], sg[:, :1])
        for i in range(2, len(mlps)):
            out.addcmul_(y[i], sg[:, i - 1 : i])
        return out

    return forward


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=768, help="d (768: ViT-B/16 image tower)")
    p.add_argument("--tokens", type=int, default=197, help="N (197: one 224 crop)")
    p.add_argument("--mode", choices=["fp32", "bf16", "train"], default="fp32", help="inference dtype or fp32 training")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    moe = MoAE(Mlp(width=args.width), num_experts=3)
    with torch.no_grad():
        for q in [*moe.experts.parameters(), *moe.router.parameters()]:
            q.add_(torch.randn_like(q) * 0.02)
        moe.scale.fill_(0.5)
    train = args.mode == "train"
    x = torch.randn(args.tokens, args.width, requires_grad=train)
    dtype = torch.bfloat16 if args.mode == "bf16" else torch.float32
    low = torch.autocast("cpu", dtype, enabled=dtype != torch.float32)
    forms: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "reference": moe.forward_reference,
        "fused": moe.forward_fused,
        "gated_hidden": gated_hidden(moe, None if train else dtype),
        "all_fused": all_fused(moe),
    }

    def call(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if train:
            moe.zero_grad(set_to_none=True)
            fn(x).square().mean().backward()
        else:
            with torch.inference_mode(), low:
                fn(x)

    with torch.no_grad(), low:
        want = moe.forward_reference(x)
        diffs = {n: float((f(x).float() - want.float()).abs().max()) for n, f in forms.items()}
    times: dict[str, list[float]] = {n: [] for n in forms}
    for fn in forms.values():
        call(fn)
    for _ in range(args.rounds):
        for name, fn in forms.items():
            t0 = time.perf_counter()
            call(fn)
            times[name].append((time.perf_counter() - t0) * 1e3)
    result = {
        "width": args.width,
        "tokens": args.tokens,
        "mode": args.mode,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        **{f"{n}_ms_min": round(min(t), 2) for n, t in times.items()},
        **{f"{n}_ms_median": round(statistics.median(t), 2) for n, t in times.items()},
        **{f"{n}_max_abs_diff": d for n, d in diffs.items()},
    }
    for n, t in times.items():
        print(f"{n:14s} min {min(t):8.2f} ms  median {statistics.median(t):8.2f} ms", file=sys.stderr)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
