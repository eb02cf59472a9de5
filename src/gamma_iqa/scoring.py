"""Scoring files: input expansion, per-image crops, and rows with errors instead of exceptions."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from .model import Gamma
from .transforms import Crops, load_image, make_crops

__all__ = ["IMAGE_EXTENSIONS", "ScoreRow", "expand_inputs", "score_files"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})


@dataclass
class ScoreRow:
    FIELDS: ClassVar[tuple[str, ...]] = ("path", "score", "scene", "crops", "error")

    index: int
    path: str
    score: float | None = None
    scene: str | None = None
    crops: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.FIELDS}


def expand_inputs(paths: Sequence[str]) -> tuple[list[tuple[int, Path]], list[ScoreRow]]:
    """Files as given, folders recursively (sorted, image extensions in any case), globs sorted.

    Returns the files to score, numbered in input order, and error rows for inputs that match nothing.
    """
    files: list[tuple[int, Path]] = []
    missing: list[ScoreRow] = []

    def add(p: Path) -> None:
        files.append((len(files) + len(missing), p))

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                missing.append(ScoreRow(len(files) + len(missing), raw, error="folder holds no images"))
            for q in found:
                add(q)
        elif p.exists():
            add(p)
        elif glob.has_magic(raw):
            matches = sorted(Path(m) for m in glob.glob(raw, recursive=True) if Path(m).is_file())
            if not matches:
                missing.append(ScoreRow(len(files) + len(missing), raw, error="pattern matches no file"))
            for q in matches:
                add(q)
        else:
            missing.append(ScoreRow(len(files) + len(missing), raw, error="no such file or folder"))
    return files, missing


def _crops_label(crops: Crops, upscaled: bool) -> str:
    return f"{crops}{' (upscaled)' if upscaled else ''}"


@torch.inference_mode()
def score_files(
    model: Gamma, files: Sequence[tuple[int, Path]], *, scene: str | None, crops: Crops, seed: int = 0
) -> list[ScoreRow]:
    """Score each file as the mean over its crops; a file that fails gets a row with a one-line error."""
    size = model.config.clip.image_size
    device = next(model.parameters()).device
    scene_name = scene or model.config.default_scene
    rows = []
    for index, path in files:
        row = ScoreRow(index, str(path), scene=scene_name)
        try:
            prepared = make_crops(load_image(path), crops, size, seed)
        except Exception as e:  # PIL raises many types for corrupt, truncated or foreign files
            row.error = f"cannot read image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unknown'})"
            rows.append(row)
            continue
        scores = model(prepared.crops.to(device), scene)
        row.score = float(scores.mean())
        row.crops = _crops_label(crops, prepared.upscaled)
        rows.append(row)
    return rows
