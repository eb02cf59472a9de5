"""Our checkpoint format: a folder with `config.json` and `model.safetensors`, plus the family's assets.

The assets are files the model needs beside its weights (Gamma: the BPE vocabulary). The same config JSON sits in the
safetensors header (key `gamma_iqa_config`), so a lone .safetensors file describes itself. The config's "kind" selects
the model family (models/registry.py); foreign formats are read by models/convert.py and by each family's backbone
loader.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .._version import __version__
from .base import QualityModel
from .registry import family_of, get_family
from .state import CheckpointError, first_line

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "CheckpointError",
    "load_checkpoint",
    "model_from_state_dict",
    "save_checkpoint",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METADATA_KEY = "gamma_iqa_config"  # the safetensors header entry that holds the config JSON
FORMAT = "gamma-iqa"
FORMAT_VERSION = 1  # raised when a change makes older gamma-iqa misread new checkpoints
LEGACY_KIND = "gamma"  # checkpoints written before gamma-lite have no "kind": they are Gamma


# ---- our format --------------------------------------------------------------------------------------------------
def save_checkpoint(model: QualityModel, folder: str | Path) -> Path:
    """Write a checkpoint folder: `config.json`, `model.safetensors` and the model's assets.

    The weights are written to a temporary file and renamed, so a crash never leaves a half-written model.

    Args:
        model: any registered family's model; saved as its parameters' dtype, on the CPU.
        folder: created when missing; files already there are overwritten.

    Returns:
        The folder.
    """
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
    for filename, source in model.assets().items():  # e.g. Gamma's tokenizer vocabulary
        if source.resolve() != (folder / filename).resolve():
            shutil.copyfile(source, folder / filename)
    return folder


def _parse_meta(text: str, source: Path) -> Any:
    """The model config of a checkpoint's config JSON `text`; a bad one is a CheckpointError naming `source`."""
    try:
        meta = json.loads(text)
        if meta.get("format") != FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, not {FORMAT!r}")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"format version {meta['format_version']} is newer than this gamma-iqa; upgrade it")
        return get_family(meta.get("kind", LEGACY_KIND)).config_class.from_dict(meta["model"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{source}: invalid gamma-iqa config ({first_line(e)})") from None


def model_from_state_dict(config: Any, state: Mapping[str, torch.Tensor], source: str | Path) -> QualityModel:
    """Build the model of `config`'s family without random initialisation and load `state` into it strictly.

    Args:
        config: a registered family's config.
        state: the full state dict, in our key names.
        source: where `state` came from, for the error message.

    Returns:
        The model on the CPU in fp32 (the state's values are cast, e.g. from fp16), in training mode (as a freshly
        built module).

    Raises:
        CheckpointError: missing or unexpected keys or shape mismatches; one line naming `source` and examples.
        TypeError: `config` belongs to no registered family.
    """
    with torch.device("meta"):
        model = family_of(config).model_class(config)
    expected = model.state_dict()  # meta tensors: shapes and dtypes, no memory
    problems = _state_problems({k: tuple(v.shape) for k, v in expected.items()}, state)
    if problems:
        raise CheckpointError(f"{source}: weights do not fit model {config.name}: {'; '.join(problems)}")
    # New CPU tensors of the model's dtypes, filled from the state and assigned: what to_empty + load_state_dict do,
    # without materialising the meta tensors (torch's Python reference of empty_like imports sympy: 0.3 s per load).
    fresh = {k: torch.empty(v.shape, dtype=v.dtype).copy_(state[k]) for k, v in expected.items()}
    model.load_state_dict(fresh, strict=True, assign=True)
    # The non-persistent buffers (mean and std, the only ones) are not in a state dict: set from the config.
    model.mean = torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1)
    model.std = torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1)
    return model


def _state_problems(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, torch.Tensor]) -> list[str]:
    """What keeps `state` from loading into a model of key shapes `expected`, as message parts (none: it fits)."""
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
    return problems


def load_checkpoint(path: str | Path) -> QualityModel:
    """Load a checkpoint folder or a lone .safetensors file written by `save_checkpoint`.

    The config comes from the folder's `config.json` when there is one, else from the safetensors header; its
    "kind" picks the family (none: Gamma, as in checkpoints written before gamma-lite).

    Args:
        path: a checkpoint folder, or a .safetensors file.

    Returns:
        The model on the CPU in fp32 (weights saved in fp16 are widened), in eval mode.

    Raises:
        CheckpointError: a missing path, a folder without weights, a PyTorch pickle (to convert first), an
            unreadable file, no or an invalid config (including a kind of a newer gamma-iqa), or weights that do not
            fit the config; one line naming the file.
    """
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
            f"{weights}: unreadable safetensors file ({first_line(e)}); re-save or re-convert it"
        ) from None
    config_file = path / CONFIG_FILE if path.is_dir() else None
    if config_file is not None and config_file.is_file():
        config = _parse_meta(config_file.read_text(), config_file)
    elif header is not None:
        config = _parse_meta(header, weights)
    else:
        raise CheckpointError(f"{weights}: no gamma-iqa config in the folder or the safetensors header")
    model = model_from_state_dict(config, state, weights)
    if path.is_dir():
        model.load_assets(path)
    model.checkpoint_files = (weights,) if config_file is None or not config_file.is_file() else (weights, config_file)
    return model.eval()
