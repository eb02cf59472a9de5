"""CLIP image and text towers with OpenAI state-dict names (gamma.md §2), and the reader of CLIP/UniQA weight files.

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

QUICK_GELU_ALPHA = 1.702  # QuickGELU(x) = x * sigmoid(1.702 x) (gamma.md §2)


@dataclass(frozen=True)
class CLIPConfig:
    """Shape of a CLIP dual encoder; the defaults are ViT-B/16, the backbone of Gamma (gamma.md §2).

    Head counts default to width // 64, as in OpenAI CLIP: a checkpoint's shapes do not carry them.
    """

    embed_dim: int = 512  # joint image-text embedding E, the output of both projections (gamma.md §2)
    image_size: int = 224  # side of the square input in pixels; the positional table has (image_size/patch)² + 1 rows
    patch_size: int = 16  # side of a patch in pixels, the stride of conv1 (ViT-B/16, gamma.md §2)
    vision_width: int = 768  # image tower width d (gamma.md §2)
    vision_layers: int = 12  # image tower blocks (gamma.md §2)
    vision_heads: int | None = None  # image tower attention heads; None: vision_width // 64 (12 for ViT-B/16)
    context_length: int = 77  # text positions in tokens, SOT and EOT included (gamma.md §2)
    vocab_size: int = 49408  # BPE token ids, SOT 49406 and EOT 49407 the last two (gamma.md §2, §4.1)
    text_width: int = 512  # text tower width d (gamma.md §2)
    text_layers: int = 12  # text tower blocks (gamma.md §2)
    text_heads: int | None = None  # text tower attention heads; None: text_width // 64 (8 for ViT-B/16)

    @property
    def vision_num_heads(self) -> int:
        """Attention heads of the image tower: `vision_heads`, or vision_width // 64 (at least 1)."""
        return self.vision_heads or max(1, self.vision_width // 64)

    @property
    def text_num_heads(self) -> int:
        """Attention heads of the text tower: `text_heads`, or text_width // 64 (at least 1)."""
        return self.text_heads or max(1, self.text_width // 64)

    @property
    def grid(self) -> int:
        """Patches per side of the native input: image_size // patch_size (14 for ViT-B/16)."""
        return self.image_size // self.patch_size


def _count_blocks(keys: list[str], prefix: str) -> int:
    """The number of blocks `prefix{i}.*` among `keys` (the largest index + 1; 0 when there is none)."""
    ids = {int(k[len(prefix) :].split(".", 1)[0]) for k in keys if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def clip_config_from_state_dict(state: Mapping[str, torch.Tensor]) -> CLIPConfig:
    """Derive the tower dimensions from an OpenAI-layout CLIP state dict.

    Args:
        state: a CLIP state dict in OpenAI key names (`visual.conv1.weight`, `token_embedding.weight`, ...).

    Returns:
        The config; head counts are left to their width // 64 default, which the shapes cannot contradict.

    Raises:
        KeyError: a key the dimensions are read from is missing.
        ValueError: the visual positional table is not 1 + a square grid of rows.
    """
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
    """The dtype autocast runs matrix products in on a device type, or None when autocast is off there.

    Args:
        device_type: "cpu", "cuda", ...
    """
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
    """Cut token ids after the last end token (the largest id) of any row.

    Exact for the text tower: under the causal mask later positions cannot reach earlier ones. Finding n reads the
    tokens, a host-device sync when they live on an accelerator, so cut them on the host where that matters.

    Args:
        tokens: (T, context) int64, each row SOT, ids, EOT (the largest id), zeros.

    Returns:
        A view (T, n) with n the last EOT position + 1.
    """
    n = int(tokens.argmax(dim=-1).max()) + 1
    return tokens[:, :n]


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 or wider whatever the input dtype (as OpenAI CLIP; gamma.md §2), eps 1e-5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension of x (..., width) in fp32 (float64 stays float64); the result has x's dtype."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        w, b = self.weight.to(dtype), self.bias.to(dtype)
        return F.layer_norm(x.to(dtype), self.normalized_shape, w, b, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """OpenAI CLIP's activation, x * sigmoid(1.702 x) (gamma.md §2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Elementwise on any shape."""
        return x * torch.sigmoid(QUICK_GELU_ALPHA * x)


class Mlp(nn.Module):
    """The block MLP: c_fc (d -> 4d) -> QuickGELU -> c_proj (4d -> d)."""

    def __init__(self, *, width: int) -> None:
        """Build the two layers for block width d = `width`."""
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., d)."""
        return self.c_proj(self.gelu(self.c_fc(x)))


class Attention(nn.Module):
    """Self-attention with `nn.MultiheadAttention`'s parameter names, computed with SDPA. x: (B, L, D)."""

    def __init__(self, *, width: int, heads: int) -> None:
        """Build the packed q, k, v projection and the output projection.

        Args:
            width: model width D.
            heads: attention heads H; D / H is the head width.

        Raises:
            ValueError: `width` is not divisible by `heads`.
        """
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """(B, L, D) -> (B, L, D); `causal` masks later positions (the text tower)."""
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, L, 3D)
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # each (B, H, L, D/H)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, H, L, D/H)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). `mlp` may be swapped for a MoAE."""

    def __init__(self, *, width: int, heads: int) -> None:
        """Build a block of width D = `width` with `heads` attention heads."""
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = Attention(width=width, heads=heads)
        self.ln_2 = LayerNorm(width)
        self.mlp: nn.Module = Mlp(width=width)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """(B, L, D) -> (B, L, D); `causal` masks later positions."""
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of residual attention blocks (`resblocks.{i}`), one tower's body."""

    def __init__(self, *, width: int, layers: int, heads: int) -> None:
        """Build `layers` blocks of width `width` with `heads` attention heads each."""
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width=width, heads=heads) for _ in range(layers))
        self.grad_checkpointing = False  # recompute block activations in backward: less memory, ~30% more compute

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """(B, L, width) -> (B, L, width); `causal` masks later positions (the text tower)."""
        for block in self.resblocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, causal, use_reentrant=False)
            else:
                x = block(x, causal=causal)
        return x


class VisionTransformer(nn.Module):
    """CLIP's image tower (OpenAI keys under `visual.`): patches, CLS token, blocks, `ln_post` on CLS, projection."""

    def __init__(self, config: CLIPConfig) -> None:
        """Build the tower with uninitialised parameters (`CLIP.reset_parameters` or a load fills them)."""
        super().__init__()
        w = config.vision_width
        self.conv1 = nn.Conv2d(3, w, kernel_size=config.patch_size, stride=config.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(w))
        self.positional_embedding = nn.Parameter(torch.empty(config.grid**2 + 1, w))
        self.ln_pre = LayerNorm(w)
        self.transformer = Transformer(width=w, layers=config.vision_layers, heads=config.vision_num_heads)
        self.ln_post = LayerNorm(w)
        self.proj = nn.Parameter(torch.empty(w, config.embed_dim))  # (in, out): x @ proj

    def positions(self, n_tokens: int) -> torch.Tensor:
        """Positional table for a token count, CLS included: (n_tokens, width).

        Other token counts resize the whole table (CLS row included) as a 1 x 1 x 197 x width image with bicubic
        interpolation along the token axis, as the original does (gamma.md §2, `pos_embedding=True`); at the native
        size this is the identity.
        """
        pos = self.positional_embedding
        if n_tokens == pos.shape[0]:
            return pos
        return F.interpolate(pos[None, None], size=(n_tokens, pos.shape[1]), mode="bicubic", align_corners=False)[0, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> image embeddings (B, embed_dim); a rest under a patch is cut off."""
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
    """OpenAI-layout CLIP: `visual` tower plus the text tower at top level (token_embedding, transformer, ...).

    Keys are OpenAI's (gamma.md §6 without the `clip_model.` prefix), so CLIP and UniQA state dicts load as they are.
    """

    def __init__(self, config: CLIPConfig) -> None:
        """Build both towers with OpenAI CLIP's random initialisation (`reset_parameters`)."""
        super().__init__()
        self.config = config
        self.visual = VisionTransformer(config)
        self.token_embedding = nn.Embedding(config.vocab_size, config.text_width)
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, config.text_width))
        self.transformer = Transformer(width=config.text_width, layers=config.text_layers, heads=config.text_num_heads)
        self.ln_final = LayerNorm(config.text_width)
        self.text_projection = nn.Parameter(torch.empty(config.text_width, config.embed_dim))  # (in, out)
        # A fresh CLIP's temperature, 1/0.07 (gamma.md §5); a loaded backbone brings its own (100 for OpenAI's).
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
        """Normalised images (B, 3, H, W) -> image embeddings (B, embed_dim), not L2-normalised."""
        return self.visual(images)

    def encode_text(self, tokens: torch.Tensor, *, trim: bool = True) -> torch.Tensor:
        """Text embeddings of token ids, taken at each row's end token (gamma.md §2).

        Args:
            tokens: (T, n <= context_length) int64, the end token the largest id of each row.
            trim: first cut the sequences after the last end token (`trim_tokens`): exact, and a short prompt costs a
                few positions instead of 77. Pass tokens already cut on the host with `trim=False` to keep an
                accelerator's forward free of host-device syncs.

        Returns:
            (T, embed_dim), not L2-normalised.
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
    """Whether `path` is a TorchScript archive (a zip with code), as OpenAI's CLIP files are."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def _read_weights(path: Path) -> Any:
    """The object in a CLIP weight file: .safetensors, TorchScript archive (OpenAI's files) or PyTorch pickle.

    Raises:
        CheckpointError: a missing or unreadable file.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        if _is_torchscript(path):
            with warnings.catch_warnings():  # OpenAI's CLIP files are TorchScript archives: a supported input
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.load(str(path), map_location="cpu").state_dict()
        return torch_load(path)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read CLIP weights ({first_line(e)})") from None


def _openai_state(obj: Any, path: Path) -> dict[str, Any]:
    """The OpenAI-layout state dict in a loaded weight file, unwrapped from a `{"state_dict": ...}` dict.

    Raises:
        CheckpointError: no `visual.conv1.weight` key (with or without `module.`); a Gamma checkpoint gets a hint.
    """
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or "visual.conv1.weight" not in {k.removeprefix("module.") for k in obj}:
        gamma = isinstance(obj, dict) and "params" in obj
        hint = "; a Gamma checkpoint goes through `gamma-iqa convert`" if gamma else ""
        raise CheckpointError(f"{path}: not an OpenAI-layout CLIP state dict (no visual.conv1.weight){hint}")
    return obj


def load_clip_state_dict(path: str | Path, *, round_like_original: bool = True) -> dict[str, torch.Tensor]:
    """Read OpenAI-layout CLIP/UniQA weights (gamma.md §2) as a state dict in fp32.

    Args:
        path: a .pt (state dict, possibly under "state_dict" and with `module.` prefixes, or OpenAI's TorchScript
            archive) or a .safetensors file.
        round_like_original: round the weights the original passes through fp16 (conv, attention and MLP weights and
            biases, both projections; gamma.md §2, Precision) the same way, so that a model built on an fp32 backbone
            starts from exactly the original's weights.

    Returns:
        The state dict in OpenAI key names, fp32, without the non-tensor entries of OpenAI's files
        (`input_resolution`, `context_length`, `vocab_size`).

    Raises:
        CheckpointError: a missing or unreadable file, or one of another layout.
    """
    path = Path(path)
    state = _openai_state(_read_weights(path), path)
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
