"""Foreign formats: the original Gamma release (`{'params': state_dict}` .pth) into our checkpoint format.

Backbone weight files (CLIP/UniQA, EfficientNet-Lite) are read by their families' loaders (clip.py, effnet.py); this
module reads whole released models.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from .checkpoint import model_from_state_dict, save_checkpoint
from .gamma import ORIGINAL_RENAMES, RELEASE_VARIANTS, Gamma, release_config
from .state import CheckpointError, rename_keys, torch_load
from .tokenizer import find_vocab

__all__ = ["convert", "convert_original", "rename_original"]


def rename_original(state):
    """Original release key names (gamma_params.txt) -> ours, with the Gamma family's `ORIGINAL_RENAMES`."""
    return rename_keys(state, ORIGINAL_RENAMES)


def convert_original(path: str | Path, variant: str = "plain") -> Gamma:
    """Read an original release checkpoint `{'params': state_dict}` into a Gamma model (fp32, eval mode).

    `variant` is `plain` (generic prompts) or `sdp` (scene prompts): the weights are the same shape for both.

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


def convert(
    src: str | Path, dst: str | Path, variant: str = "plain", bpe: str | Path | None = None
) -> Path:
    """Convert original release `src` into checkpoint folder `dst` (config, weights, tokenizer vocabulary).

    The vocabulary (`bpe_simple_vocab_16e6.txt.gz`) is `bpe` when given, else found in an installed open_clip or clip
    package; without one the folder is still written and a warning says the model will need it to score.

    Returns:
        The checkpoint folder.

    Raises:
        FileNotFoundError: `bpe` was given and does not exist.
        ValueError, CheckpointError: as `convert_original`.
    """
    model = convert_original(src, variant=variant)
    try:
        model.vocab_path = str(find_vocab(bpe))
    except FileNotFoundError as e:
        if bpe is not None:
            raise FileNotFoundError(f"`bpe` {bpe}: not found") from None
        warnings.warn(f"{e}; the converted model will need it to score", stacklevel=2)
    return save_checkpoint(model, dst)
