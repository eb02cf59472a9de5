"""Foreign formats: the original Gamma release (`{'params': state_dict}` .pth) into our checkpoint format.

Backbone weight files (CLIP/UniQA, EfficientNet-Lite) are read by their families' loaders (clip.py, effnet.py); this
module reads whole released models.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from .checkpoint import model_from_state_dict, save_checkpoint
from .gamma import ORIGINAL_RENAMES, RELEASE_VARIANTS, Gamma, release_config
from .state import CheckpointError, rename_keys, torch_load
from .tokenizer import find_vocab

__all__ = ["convert", "convert_original", "rename_original"]


def rename_original(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the original release's keys (gamma.md §6, gamma_params.txt) to ours, with `ORIGINAL_RENAMES`.

    Args:
        state: the release's `params` state dict; its tensors are kept as they are.

    Returns:
        The state dict under our key names, in the input's order.
    """
    return rename_keys(state, ORIGINAL_RENAMES)


def convert_original(path: str | Path, variant: str = "plain") -> Gamma:
    """Read an original release checkpoint `{'params': state_dict}` (gamma.md §6) into a Gamma model.

    Args:
        path: the released .pth ("Gamma weight" or "Gamma-Prompt weight", gamma.md §13).
        variant: "plain" (generic prompts, gamma.md §4.1) or "sdp" (scene prompts, §4.2); the weights have the same
            shapes for both, so the file cannot tell.

    Returns:
        The model on the CPU in fp32, in eval mode; widths and depths are read from the weights' shapes.

    Raises:
        ValueError: an unknown `variant`.
        CheckpointError: a missing, unreadable or foreign file (one line naming it).
    """
    path = Path(path)
    if variant not in RELEASE_VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(RELEASE_VARIANTS)}, got {variant!r}")
    obj = torch_load(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("params"), dict):
        found = f"keys {sorted(obj)[:5]}" if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{path}: not an original Gamma checkpoint (expected {{'params': state_dict}}, found {found})"
        )
    state = {k: v.float() for k, v in rename_original(obj["params"]).items()}
    config = release_config(state, variant, path)
    return model_from_state_dict(config, state, path).eval()


def convert(src: str | Path, dst: str | Path, variant: str = "plain", bpe: str | Path | None = None) -> Path:
    """Convert an original release checkpoint into our checkpoint folder (config, weights, tokenizer vocabulary).

    Without a vocabulary the folder is still written, and a warning says the model will need one to score.

    Args:
        src: the released .pth.
        dst: the checkpoint folder to write (created when missing).
        variant: "plain" or "sdp", as in `convert_original`.
        bpe: the CLIP BPE vocabulary (`bpe_simple_vocab_16e6.txt.gz`, or a folder holding it); None: the one of an
            installed open_clip or clip package.

    Returns:
        The checkpoint folder.

    Raises:
        FileNotFoundError: `bpe` was given and does not exist.
        ValueError: an unknown `variant`.
        CheckpointError: a missing, unreadable or foreign `src`.
    """
    model = convert_original(src, variant=variant)
    try:
        model.vocab_path = str(find_vocab(bpe))
    except FileNotFoundError as e:
        if bpe is not None:
            raise FileNotFoundError(f"`bpe` {bpe}: not found") from None
        warnings.warn(f"{e}; the converted model will need it to score", stacklevel=2)
    return save_checkpoint(model, dst)
