"""State-dict plumbing shared by every weight format: the one error type, reading PyTorch files, key renames."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "Renames", "first_line", "rename_keys", "torch_load"]

Renames = Sequence[tuple[re.Pattern[str], str]]  # (pattern, replacement) applied in order to each key


class CheckpointError(ValueError):
    """A checkpoint or weight file that cannot be used; the message is one line naming the file and what to do."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when empty), for one-line errors."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def torch_load(path: Path) -> Any:
    """`torch.load` of a PyTorch file on the CPU with `weights_only=True`; unreadable files are CheckpointErrors."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path}: cannot read as a PyTorch checkpoint ({first_line(e)}); is it truncated?"
        ) from None


def rename_keys(
    state: Mapping[str, torch.Tensor], renames: Renames, *, first_only: bool = False, strict: str | None = None
) -> dict[str, torch.Tensor]:
    """Keys of a foreign layout -> ours: `module.` (DataParallel) dropped, then `renames` applied in order.

    `first_only`: stop at the first rule that matches a key. `strict`: the layout's name; then a key that no rule
    renames is a CheckpointError naming it, so a file of another layout fails here rather than loading half.
    """
    out = {}
    for key, value in state.items():
        new = key.removeprefix("module.")
        matched = False
        for pattern, repl in renames:
            new, n = pattern.subn(repl, new)
            matched = matched or n > 0
            if n and first_only:
                break
        if strict and not matched:
            raise CheckpointError(f"unexpected {strict} key {key!r}")
        out[new] = value
    return out
