"""The onnxruntime scoring backend: the Scorer's forward on the crop tensor, run by onnxruntime instead of PyTorch.

Decoding, cropping, the fixed forward sizes and the averaging of the crops stay the Scorer's (engine/scoring.py); only
`model(crops, scenes, levels=...)` is replaced by `OnnxForward`, which normalises the crops as the model does and runs
the exported image path (models/export.py). The export is made once per model and cached under
`$GAMMA_IQA_HOME/onnx/`, keyed on the model's parameters (SHA-256), its scenes and the opset. onnxruntime is the
optional extra `gamma-iqa[onnx]`, imported only when this backend is asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.base import QualityModel
from ..models.export import OPSET, ExportPathError, export_onnx, export_scenes, onnx_missing, sidecar_path
from ..models.state import state_sha256
from ..paths import gamma_home

__all__ = ["BACKENDS", "OnnxForward", "cached_export"]

BACKENDS = ("torch", "onnxruntime")  # the Scorer's `backend` choices; torch is the default
_SESSIONS: dict[tuple[str, int], Any] = {}  # (file, threads) -> InferenceSession, reused by later Scorers
SPINNING = "session.intra_op.allow_spinning"  # onnxruntime's session option: idle intra-op threads spin ("1") or sleep


def cached_export(model: QualityModel) -> Path:
    """The ONNX file of `model`'s image path with every scene it accepts, exported on first use.

    Args:
        model: a Gamma or gamma-lite model.

    Returns:
        `$GAMMA_IQA_HOME/onnx/<model name>-<weights SHA-256, 16 hex>-<scenes hash, 8 hex>-opset<N>.onnx`, its sidecar
        beside it (the folder is created).

    Raises:
        ValueError: as `export_onnx` (onnx missing, a model family without an export), or a cache folder that cannot
            be made or written (one line naming it and GAMMA_IQA_HOME).
    """
    digest = state_sha256(model)
    scenes = export_scenes(model)
    tag = hashlib.sha256("\n".join(scenes).encode()).hexdigest()[:8]
    folder = gamma_home() / "onnx"
    path = folder / f"{model.config.name}-{digest[:16]}-{tag}-opset{OPSET}.onnx"
    if not (path.is_file() and sidecar_path(path).is_file()):
        hint = "set GAMMA_IQA_HOME to a writable folder"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            reason = "a file is in the way" if isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror
            raise ValueError(f"cannot create the ONNX export cache {folder}: {str(reason).lower()} ({hint})") from None
        for half in (path, sidecar_path(path)):  # half an earlier export (cut between its two moves): ours, by name
            with contextlib.suppress(OSError):  # a folder not writable: export_onnx says so, in one line
                half.unlink(missing_ok=True)
        try:
            export_onnx(model, path, opset=OPSET, weights_sha256=digest)
        except ExportPathError as e:
            raise ValueError(f"the ONNX export cache: {e} ({hint})") from None
    return path


class OnnxForward:
    """`model(crops, scenes, levels=...)` through onnxruntime on the CPU, in fp32.

    Attributes:
        path: the ONNX file run.
        info: what the run's provenance records: backend name, onnxruntime version, opset and file name.
    """

    def __init__(self, model: QualityModel, *, threads: int | None = None) -> None:
        """Export `model` (or find its cached export) and open an onnxruntime session on it.

        Args:
            model: a Gamma or gamma-lite model on the CPU.
            threads: onnxruntime's intra-op threads; default torch's (`torch.get_num_threads()`, as PyTorch scores).

        Raises:
            ValueError: onnx / onnxruntime not installed (one line naming `pip install 'gamma-iqa[onnx]'`), a model
                that cannot be exported, or an export cache that cannot be written (each names `backend`).
        """
        reason = onnx_missing()
        if reason is not None:
            raise ValueError(f"`backend` onnxruntime: {reason}")
        import onnxruntime  # the optional extra, checked just above

        try:
            self.path = cached_export(model)
        except ValueError as e:
            raise ValueError(f"`backend` onnxruntime: {e}") from None
        record = json.loads(sidecar_path(self.path).read_text())
        self.index = {name: i for i, name in enumerate(record["scenes"])}
        self.default = record["default_scene"]
        self.mean = model.mean.detach().float().cpu()  # (1, 3, 1, 1), as the model normalises
        self.std = model.std.detach().float().cpu()
        threads = threads or torch.get_num_threads()
        key = (str(self.path), threads)
        if key not in _SESSIONS:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            # Idle intra-op threads sleep instead of spinning: between forwards this process decodes and crops, and a
            # spinning thread takes the core it needs (gamma-lite, centre crop, 2 threads: 24 images/s spinning, 54
            # without; benchmarks/README.md).
            options.add_session_config_entry(SPINNING, "0")
            _SESSIONS[key] = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.session = _SESSIONS[key]
        self.info = {
            "name": "onnxruntime",
            "onnxruntime": onnxruntime.__version__,
            "opset": record["opset"],
            "file": self.path.name,
        }

    def __call__(
        self, crops: torch.Tensor, scenes: Sequence[str | None], *, levels: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Scores (N,) of crops (N, 3, S, S) in [0, 1], one scene name (or None: the default) per crop.

        Returns:
            Scores (N,) float32; with `levels`, the pair (scores, level probabilities (N, K)).
        """
        x = ((crops.detach().float().cpu() - self.mean) / self.std).numpy()  # (N, 3, S, S), as the model's forward
        index = np.array([self.index[self.default if s is None else s] for s in scenes], dtype=np.int64)  # (N,)
        scores, probs = self.session.run(["scores", "levels"], {"crops": x, "scene": index})
        if levels:
            return torch.from_numpy(scores), torch.from_numpy(probs)
        return torch.from_numpy(scores)
