"""State-dict plumbing shared by every weight format: the one error type, reading PyTorch files, key renames.

Also the small file helpers the layers above share: SHA-256 of a file or state dict, and reading and writing the
package's small JSON files (calibration files, provenance records) with one-line errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointError",
    "Renames",
    "file_sha256",
    "first_line",
    "read_json",
    "rename_keys",
    "state_sha256",
    "torch_load",
    "write_json",
]

Renames = Sequence[tuple[re.Pattern[str], str]]  # (pattern, replacement) applied in order to each key


class CheckpointError(ValueError):
    """A checkpoint or weight file that cannot be used; the message is one line naming the file and what to do.

    A ValueError, so that callers catching bad arguments catch bad files too. Advice that only a Python caller can
    follow (`pretrained=False`) is `python_hint`: the message ends with ", or HINT", while `command_line` is the
    message without it, for the command line, which has no such argument.
    """

    def __init__(self, message: str, *, python_hint: str | None = None) -> None:
        """The error with its one-line message, and advice for Python callers only (appended to the message)."""
        super().__init__(message if python_hint is None else f"{message}, or {python_hint}")
        self.command_line = message


def state_sha256(module: torch.nn.Module) -> str:
    """The SHA-256 of a module's state dict as it scores, hex: each entry's name, dtype, shape and bytes, by name.

    The model's identity in run provenance (`parameters_sha256`) and in calibration files: it covers a model built
    fresh as well as one loaded from any checkpoint format.
    """
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, hex, read in 1 MiB chunks (label files, checkpoints, split-file keys)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: str | os.PathLike[str]) -> Any:
    """The parsed content of a JSON file (any JSON value: the caller checks its shape).

    Raises:
        ValueError: not JSON: "not JSON (REASON, line N)" or "not JSON (not UTF-8 text)", without the path (the
            caller puts it, and the parameter it came from, in front).
        OSError: the file cannot be read.
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg}, line {e.lineno})") from None
    except UnicodeDecodeError:
        raise ValueError("not JSON (not UTF-8 text)") from None


def write_json(path: str | os.PathLike[str], record: Any) -> Path:
    """Write `record` to `path` as indented JSON, atomically (a kill never leaves half a file); returns the path."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when empty), for one-line errors.

    Args:
        e: the exception, typically one raised by torch, safetensors or zipfile.
    """
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _looks_like_torch(path: Path) -> bool:
    """Whether `path` starts as torch.save writes: a zip archive, or (before torch 1.6) a pickle of protocol 2+."""
    with path.open("rb") as f:
        head = f.read(2)
    return head == b"PK" or head[:1] == b"\x80"


def torch_load(path: Path) -> Any:
    """`torch.load` of a PyTorch file on the CPU with `weights_only=True` (no code runs from the file).

    Args:
        path: a PyTorch pickle (.pth, .pt, ...).

    Returns:
        The loaded object, usually a dict of tensors (or of dicts of tensors).

    Raises:
        CheckpointError: the file is missing or cannot be read (truncated, not a PyTorch file, or holding objects
            other than tensors and containers).
    """
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a PyTorch checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # one line of ours: torch's advises weights_only=False, which would run code from the file
        if isinstance(e, pickle.UnpicklingError) and _looks_like_torch(path):  # the safe unpickler refused an object
            raise CheckpointError(
                f"{path}: not a plain PyTorch weights file (it holds Python objects beyond tensors, or is no PyTorch "
                "file); gamma-iqa does not unpickle such files, since that can run code from them"
            ) from None
        # text, another format, a cut zip or pickle: the reader tripped somewhere
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint, or a truncated one ({path.stat().st_size:,} bytes)"
        ) from None


def rename_keys(
    state: Mapping[str, torch.Tensor], renames: Renames, *, first_only: bool = False, layout: str | None = None
) -> dict[str, torch.Tensor]:
    """Rename the keys of a foreign layout to ours: `module.` (DataParallel) dropped, then `renames` applied in order.

    Args:
        state: the foreign state dict; its tensors are kept as they are (same objects).
        renames: (pattern, replacement) rules, each applied with `re.subn` to the key the rules before it produced.
        first_only: stop at the first rule that matches a key.
        layout: the foreign layout's name. When given, every key must match a rule, so that a file of another layout
            fails here rather than loading half.

    Returns:
        The state dict under our key names, in the input's order.

    Raises:
        CheckpointError: `layout` is given and a key matches no rule; the message names the key.
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
        if layout and not matched:
            raise CheckpointError(f"unexpected {layout} key {key!r}")
        out[new] = value
    return out
