"""What every model family shares: `QualityModel` (the interface scoring, evaluation and training rely on), the image
adapter and Gamma's quality-level head (gamma.md §5).

Shapes: image features (B, E); level anchors (B, K, E); level values (K,); scores (B,).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["Adapter", "QualityModel", "check_keys", "level_head", "set_scorer"]


def check_keys(cls: type, d: Mapping[str, Any], what: str) -> None:
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} keys: {', '.join(sorted(unknown))}")


class Adapter(nn.Module):
    """Residual bottleneck on the image feature: x + ReLU(up(ReLU(down(x)))), no biases."""

    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.up(torch.relu(self.down(x))))


def level_head(
    adapter: Adapter,
    image_features: torch.Tensor,
    anchors: torch.Tensor,
    logit_scale: torch.Tensor,
    levels: torch.Tensor,
) -> torch.Tensor:
    """The quality-level head (gamma.md §5): features (B, E), per-image level anchors (B, K, E) -> scores (B,).

    Adapter, L2 normalisation, cosine times exp(`logit_scale`), softmax over the K levels, expectation of `levels`.
    Computed in the levels' dtype even under autocast: it is cheap, and scores deserve more than bf16's 8 bits.
    """
    dtype = levels.dtype
    with torch.autocast(image_features.device.type, enabled=False):
        f = adapter(image_features.to(dtype))
        f = f / f.norm(dim=-1, keepdim=True)
        t = anchors.to(dtype)
        t = t / t.norm(dim=-1, keepdim=True)
        logits = logit_scale.exp() * torch.einsum("be,bke->bk", f, t)  # (B, K)
        return logits.softmax(dim=-1) @ levels


class QualityModel(nn.Module):
    """What scoring, evaluation and training rely on, shared by Gamma and GammaLite.

    Subclasses set `config` (with `name`, `default_scene`) and define `image_size`, `scenes`, `prompt_key` and
    `forward(images, scenes) -> (B,)`.
    """

    kind = ""  # the checkpoint's model kind, which selects the class on load
    lower_better = False
    score_range = (0.0, 1.0)
    config: Any

    @property
    def image_size(self) -> int:
        """Side of the square crops the model is trained and scored on."""
        raise NotImplementedError

    @property
    def scenes(self) -> list[str]:
        raise NotImplementedError

    def prompt_key(self, scene: str | None) -> str:
        raise NotImplementedError

    def assets(self) -> dict[str, Path]:
        """Files a checkpoint folder carries beside the weights, as {file name: where it is now}; none by default."""
        return {}

    def load_assets(self, folder: Path) -> None:
        """Pick up the files `assets` wrote into checkpoint `folder`; nothing by default."""

    def scene_keys(self, scenes: str | Sequence[str | None] | None, batch: int) -> list[str]:
        """One prompt key per image from one scene name (or None: the default) or one per image."""
        if scenes is None or isinstance(scenes, str):
            return [self.prompt_key(scenes)] * batch
        scenes = list(scenes)
        if len(scenes) != batch:
            raise ValueError(f"got {len(scenes)} scenes for {batch} images")
        return [self.prompt_key(s) for s in scenes]

    def score(
        self,
        inputs: Any,
        *,
        scene: str | Sequence[str] | None = None,
        crops: int | str = 10,
        seed: int = 0,
        batch_size: int = 8,
        dtype: str = "fp32",
    ) -> list[float]:
        """Scores of image files, folders, globs, PIL images, numpy arrays or a (B, 3, H, W) tensor in [0, 1].

        Same semantics as `gamma-iqa score`: `crops` random crops (or "center" / "none") seeded by `seed` and each
        image's pixels. A bad input raises one ValueError naming it. Always a single-process call, also under
        torchrun (each process scores all of `inputs`).
        """
        if _scorer is None:  # never in practice: importing any part of gamma_iqa imports the engine
            raise RuntimeError("scoring is provided by gamma_iqa.engine; import gamma_iqa first")
        return _scorer(self, inputs, scene=scene, crops=crops, seed=seed, batch_size=batch_size, dtype=dtype)


# The models layer sits below the data and engine layers that decode and crop images, so `QualityModel.score` cannot
# import them: the engine hands its scoring function down once, when it is imported (dependency inversion).
_scorer: Callable[..., list[float]] | None = None


def set_scorer(scorer: Callable[..., list[float]]) -> None:
    """Install the function behind `QualityModel.score` (called by gamma_iqa.engine.scoring at import)."""
    global _scorer
    _scorer = scorer
