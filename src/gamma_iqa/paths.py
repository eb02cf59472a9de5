"""Where gamma-iqa keeps files: the user's model home and the weights shipped inside the package (a leaf module)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["WEIGHTS_DIR", "gamma_home", "shipped_weights"]

# Package data: trained checkpoints shipped inside the installed package, one folder per model name.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def gamma_home() -> Path:
    """The user's model and metadata folder: `$GAMMA_IQA_HOME`, default `~/.cache/gamma-iqa` (need not exist)."""
    return Path(os.environ.get("GAMMA_IQA_HOME", "~/.cache/gamma-iqa")).expanduser()


def shipped_weights(name: str) -> Path:
    """The package-data folder where model `name`'s trained checkpoint ships (it may not exist)."""
    return WEIGHTS_DIR / name
