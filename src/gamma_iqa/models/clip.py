"""CLIP image and text towers with OpenAI state-dict names.

Knows nothing of experts or scenes. Dimensions come from a `CLIPConfig`; `clip_config_from_state_dict` derives one
from an OpenAI-layout checkpoint (ViT-B/16 by default). Tensors are batch-first inside: (B, L, D).
"""

from __future__ import annotations

import math
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from .state import CheckpointError, first_line, torch_load

__all__ = [
    "CLIP",
    "CLIPConfig",
    "autocast_dtype",
    "clip_config_from_state_dict",
    "load_clip_state_dict",
    "trim_tokens",
]

QUICK_GELU_ALPHA = 1.702  # QuickGELU(x) = x * sigmoid(1.702 x)


@dataclass(frozen=True)
class CLIPConfig:
    """Shape of a CLIP dual encoder. Head counts default to width // 64, as in OpenAI CLIP."""

    embed_dim: int = 512
    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int | None = None
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_layers: int = 12
    text_heads: int | None = None

    @property
    def vision_num_heads(self) -> int:
        return self.vision_heads or max(1, self.vision_width // 64)

    @property
    def text_num_heads(self) -> int:
        return self.text_heads or max(1, self.text_width // 64)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


def _count_blocks(keys: list[str], prefix: str) -> int:
    ids = {int(k[len(prefix) :].split(".", 1)[0]) for k in keys if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def clip_config_from_state_dict(state: Mapping[str, torch.Tensor]) -> CLIPConfig:
    """Derive the tower dimensions from an OpenAI-layout CLIP state dict (heads are width // 64)."""
    keys = list(state)
    conv = state["visual.conv1.weight"]  # (width, 3, patch, patch)
    n_pos = state["visual.positional_embedding"].shape[0]
    grid = math.isqrt(n_pos - 1)
    if grid * grid != n_pos - 1:
        raise ValueError(f"visual.positional_embedding has {n_pos} rows, not 1 + a square grid")
    return CLIPConfig(
        embed_dim=state["text_projection"].shape[1],
        image_size=conv.shape[-1] * grid,
        patch_size=conv.shape[-1],
        vision_width=conv.shape[0],
        vision_layers=_count_blocks(keys, "visual.transformer.resblocks."),
        context_length=state["positional_embedding"].shape[0],
        vocab_size=state["token_embedding.weight"].shape[0],
        text_width=state["ln_final.weight"].shape[0],
        text_layers=_count_blocks(keys, "transformer.resblocks."),
    )


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast runs matrix products in on `device_type`, or None when autocast is off there."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        enabled = torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()
    if not enabled:
        return None
    try:
        return torch.get_autocast_dtype(device_type)
    except AttributeError:  # torch < 2.4
        return torch.get_autocast_cpu_dtype() if device_type == "cpu" else torch.get_autocast_gpu_dtype()


def trim_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Cut token ids (T, context) after the last end token (the largest id) of any row: (T, n).

    Exact for the text tower: under the causal mask later positions cannot reach earlier ones. Finding n reads the
    tokens, a host-device sync when they live on an accelerator, so cut them on the host where that matters.
    """
    n = int(tokens.argmax(dim=-1).max()) + 1
    return tokens[:, :n]


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the input dtype (as OpenAI CLIP)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps).to(
            x.dtype
        )


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(QUICK_GELU_ALPHA * x)


class Mlp(nn.Module):
    """The block MLP: c_fc (d -> 4d) -> QuickGELU -> c_proj (4d -> d)."""

    def __init__(self, *, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Attention(nn.Module):
    """Self-attention with `nn.MultiheadAttention`'s parameter names, computed with SDPA. x: (B, L, D)."""

    def __init__(self, *, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, L, 3D)
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # each (B, H, L, D/H)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, H, L, D/H)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). `mlp` may be swapped for a MoAE."""

    def __init__(self, *, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = Attention(width=width, heads=heads)
        self.ln_2 = LayerNorm(width)
        self.mlp: nn.Module = Mlp(width=width)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, *, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width=width, heads=heads) for _ in range(layers))
        self.grad_checkpointing = False  # recompute block activations in backward: less memory, ~30% more compute

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for block in self.resblocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, causal, use_reentrant=False)
            else:
                x = block(x, causal=causal)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        w = cfg.vision_width
        self.conv1 = nn.Conv2d(3, w, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(w))
        self.positional_embedding = nn.Parameter(torch.empty(cfg.grid**2 + 1, w))
        self.ln_pre = LayerNorm(w)
        self.transformer = Transformer(width=w, layers=cfg.vision_layers, heads=cfg.vision_num_heads)
        self.ln_post = LayerNorm(w)
        self.proj = nn.Parameter(torch.empty(w, cfg.embed_dim))  # (in, out): x @ proj

    def positions(self, n_tokens: int) -> torch.Tensor:
        """Positional table for `n_tokens` tokens: (n_tokens, width).

        Other token counts resize the whole table (CLS row included) as a 1 x 1 x 197 x width image with bicubic
        interpolation along the token axis, as the original does; at the native size this is the identity.
        """
        pos = self.positional_embedding
        if n_tokens == pos.shape[0]:
            return pos
        return F.interpolate(pos[None, None], size=(n_tokens, pos.shape[1]), mode="bicubic", align_corners=False)[0, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: normalised images (B, 3, H, W) -> image embeddings (B, embed_dim)."""
        dtype = self.positional_embedding.dtype
        x = self.conv1(x.to(self.conv1.weight.dtype))  # (B, W, H/p, W/p)
        # The residual stream keeps the parameters' dtype: under autocast only the matrix products run in low
        # precision (as in the text tower, whose embeddings are not autocast).
        x = x.flatten(2).transpose(1, 2).to(dtype)  # (B, N, W)
        cls = self.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=dtype, device=x.device)
        x = torch.cat([cls, x], dim=1)  # (B, 1 + N, W)
        x = x + self.positions(x.shape[1])
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class CLIP(nn.Module):
    """OpenAI-layout CLIP: `visual` tower plus the text tower at top level (token_embedding, transformer, ...)."""

    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        self.config = cfg
        self.visual = VisionTransformer(cfg)
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.text_width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.text_width))
        self.transformer = Transformer(width=cfg.text_width, layers=cfg.text_layers, heads=cfg.text_num_heads)
        self.ln_final = LayerNorm(cfg.text_width)
        self.text_projection = nn.Parameter(torch.empty(cfg.text_width, cfg.embed_dim))  # (in, out)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """OpenAI CLIP's random initialisation (only used when no weights are loaded)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        vw = self.config.vision_width
        nn.init.normal_(self.visual.class_embedding, std=vw**-0.5)
        nn.init.normal_(self.visual.positional_embedding, std=vw**-0.5)
        nn.init.normal_(self.visual.proj, std=vw**-0.5)
        for tower in (self.visual.transformer, self.transformer):
            w, n = tower.width, len(tower.resblocks)
            proj_std, attn_std, fc_std = (w**-0.5) * ((2 * n) ** -0.5), w**-0.5, (2 * w) ** -0.5
            for block in tower.resblocks:
                nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
                nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
                nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
                nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=self.config.text_width**-0.5)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> (B, embed_dim)."""
        return self.visual(images)

    def encode_text(self, tokens: torch.Tensor, *, trim: bool = True) -> torch.Tensor:
        """Token ids (T, n <= context) with the end token as the largest id -> (T, embed_dim).

        `trim` first cuts the sequences after the last end token (`trim_tokens`): exact, and a short prompt costs a
        few positions instead of 77. Pass tokens already cut on the host with `trim=False` to keep an accelerator's
        forward free of host-device syncs.
        """
        if trim:
            tokens = trim_tokens(tokens)
        eot = tokens.argmax(dim=-1)  # (T,)
        n = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:n]  # (T, n, W)
        x = self.transformer(x, causal=True)
        x = self.ln_final(x[torch.arange(x.shape[0], device=x.device), eot])  # (T, W)
        return x @ self.text_projection


# ---- weight files (OpenAI layout: CLIP and UniQA) ---------------------------------------------------------------
# The original builds its model in fp16 then calls .float(): conv, attention and MLP weights and biases and the two
# projections pass through fp16; LayerNorms, embeddings and logit_scale do not (gamma.md §2, Precision).
_FP16_ROUNDED = re.compile(
    r"(conv1\.weight|attn\.in_proj_(weight|bias)|attn\.out_proj\.(weight|bias)|mlp\.c_(fc|proj)\.(weight|bias)"
    r"|^visual\.proj|^text_projection)$"
)
_NON_TENSOR_KEYS = ("input_resolution", "context_length", "vocab_size")


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def load_clip_state_dict(path: str | Path, *, round_like_original: bool = True) -> dict[str, torch.Tensor]:
    """OpenAI-layout CLIP/UniQA weights from a .pt (state dict or TorchScript archive) or a .safetensors, in fp32.

    With `round_like_original` the weights the original passes through fp16 are rounded the same way, so a model
    built on an fp32 backbone starts from exactly the original's weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            state: Any = load_file(str(path))
        elif _is_torchscript(path):
            with warnings.catch_warnings():  # OpenAI's CLIP files are TorchScript archives: a supported input
                warnings.simplefilter("ignore", DeprecationWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch_load(path)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read CLIP weights ({first_line(e)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "visual.conv1.weight" not in {k.removeprefix("module.") for k in state}:
        hint = (
            "; a Gamma checkpoint goes through `gamma-iqa convert`"
            if isinstance(state, dict) and "params" in state
            else ""
        )
        raise CheckpointError(f"{path}: not an OpenAI-layout CLIP state dict (no visual.conv1.weight){hint}")
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key in _NON_TENSOR_KEYS:
            continue
        value = value.float()
        if round_like_original and _FP16_ROUNDED.search(key):
            value = value.half().float()
        out[key] = value
    return out


