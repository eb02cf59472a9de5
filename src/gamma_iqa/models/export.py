"""ONNX export of a model's image path: normalised crops and scene indices in, scores and level probabilities out.

    crops (N, 3, S, S) float32, (x - mean) / std of RGB x in [0, 1]  --+
    scene (N,) int64, an index into the sidecar's `scenes`  ------------+--> scores (N,) float32, levels (N, K) float32

The graph is the model's own inference forward (gamma-lite: EfficientNet-Lite with BatchNorm folded and the per-pixel
MoAE; Gamma: the CLIP image tower with fused MoAE), then the shared level head against a constant table of each
exported scene's level features, (S_scenes, K, E): Gamma's text features (the text tower runs here, once per prompt
set) or gamma-lite's learned anchors. The scene is an input rather than one file per scene, so that one file (and one
onnxruntime session) scores a batch of mixed scenes, as `gamma-iqa score --manifest` does. The batch size N is
dynamic; the crop side S is fixed (shape-dependent padding and positional tables are traced for S).

The preprocessing (decoding, crops, normalisation, averaging the crops' scores) stays outside the graph and is written
beside it in a JSON sidecar (`sidecar_record`); docs/onnx.md describes both. Needs the optional `onnx` package
(`pip install 'gamma-iqa[onnx]'`), imported only here and only when exporting.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from .base import QualityModel, level_head
from .gamma import Gamma
from .lite import GammaLite
from .scenes import NUM_LEVELS
from .state import state_sha256

__all__ = ["FORMATS", "OPSET", "ImagePath", "export_onnx", "export_scenes", "onnx_missing", "sidecar_path"]

FORMATS = ("onnx",)  # export formats `gamma-iqa export --format` takes
OPSET = 17  # ONNX opset of the exported graphs (LayerNormalization is native from 17; onnxruntime >= 1.16 runs it)
INSTALL_HINT = "pip install 'gamma-iqa[onnx]'"
LEVEL_NAMES = ("bad", "poor", "fair", "good", "perfect")  # the head's levels, worst first (as engine/scoring's)


def onnx_missing() -> str | None:
    """Why ONNX export or the onnxruntime backend cannot run here (one line naming the extra), or None when it can."""
    missing = [m for m in ("onnx", "onnxruntime") if not _importable(m)]
    if not missing:
        return None
    return f"{' and '.join(missing)} not installed; install the ONNX extra: {INSTALL_HINT}"


def _importable(module: str) -> bool:
    """Whether `module` imports (an installed but broken one counts as missing)."""
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def sidecar_path(onnx_file: str | os.PathLike[str]) -> Path:
    """The JSON sidecar of an exported file: OUT.onnx -> OUT.json."""
    return Path(onnx_file).with_suffix(".json")


def export_scenes(model: QualityModel, scene: str | Sequence[str] | None = None) -> list[str]:
    """The scenes an export holds, in table order: the given one(s), else every scene the model accepts.

    The model's default scene comes first when it is among them, so that index 0 means "no scene given".

    Raises:
        ValueError: a scene the model does not accept (the model's message, listing the valid ones).
    """
    if scene is None:
        names = list(model.scenes)
        default = model.config.default_scene
        names = [default, *[s for s in names if s != default]]
    else:
        names = list(dict.fromkeys([scene] if isinstance(scene, str) else scene))
    for name in names:
        model.prompt_key(name)
    return names


class ImagePath(nn.Module):
    """The exported graph: a model's image encoder and level head against a constant scene table.

    `forward(crops, scene)` takes normalised crops (N, 3, S, S) and scene indices (N,) int64 and returns the pair
    (scores (N,), level probabilities (N, K)), equal to the model's `forward(images, scenes, levels=True)` on the
    un-normalised crops (the same operations; float rounding aside).
    """

    def __init__(self, model: QualityModel, scenes: Sequence[str]) -> None:
        """Wrap `model` (fp32, eval, CPU) for the given scenes (each accepted by it).

        Raises:
            TypeError: a model family without an export (not Gamma or gamma-lite).
        """
        super().__init__()
        if not isinstance(model, (Gamma, GammaLite)):
            raise TypeError(f"no ONNX export for a {type(model).__name__} model")
        self.model = model
        with torch.no_grad():
            table = [self._level_features(model.prompt_key(s)) for s in scenes]
        self.register_buffer("table", torch.stack(table).float())  # (S_scenes, K, E)

    def _level_features(self, key: str) -> torch.Tensor:
        """The (K, E) level features of a prompt or anchor key: Gamma's text features, gamma-lite's anchors."""
        if isinstance(self.model, Gamma):
            return self.model.text_features(key)
        return self.model.anchors[key].detach()

    def encode(self, crops: torch.Tensor) -> torch.Tensor:
        """Normalised crops (N, 3, S, S) -> image features before the adapter (N, E), as the model's encode_image."""
        if isinstance(self.model, Gamma):
            return self.model.clip.encode_image(crops)
        features = self.model.backbone.forward_features(crops)  # (N, 1280, S/32, S/32)
        return self.model.proj(features.mean(dim=(2, 3)))

    def forward(self, crops: torch.Tensor, scene: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (N,), level probabilities (N, K)) of normalised crops (N, 3, S, S), scene indices (N,) int64."""
        model = self.model
        logit_scale = model.clip.logit_scale if isinstance(model, Gamma) else model.logit_scale
        anchors = self.table[scene]  # (N, K, E)
        head = (model.adapter, self.encode(crops), anchors, logit_scale, model.score_level)
        return level_head(*head, probabilities=True)


def _fp32_cpu(model: QualityModel) -> QualityModel:
    """`model` itself when it is an fp32 CPU model in eval mode, else an fp32 CPU copy in eval mode."""
    params = list(model.parameters())
    if all(p.dtype == torch.float32 and p.device.type == "cpu" for p in params) and not model.training:
        return model
    return copy.deepcopy(model).float().cpu().eval()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's own warnings and prints (deprecation notes, constant folding chatter)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def sidecar_record(model: QualityModel, scenes: Sequence[str], opset: int, weights_sha256: str) -> dict[str, Any]:
    """The sidecar's content: what the file is, where it comes from, and the preprocessing it expects (docs/onnx.md).

    Args:
        model: the exported model.
        scenes: the scene table's names, in index order.
        opset: the ONNX opset.
        weights_sha256: `state_sha256(model)`, the model's parameters as they score.

    Returns:
        A JSON-ready dict.
    """
    size = model.image_size
    return {
        "format": "gamma-iqa-onnx/1",
        "model": model.config.name,
        "kind": model.kind,
        "weights_sha256": weights_sha256,
        "checkpoint_files": [p.name for p in model.checkpoint_files],
        "gamma_iqa": __version__,
        "torch": torch.__version__,
        "opset": opset,
        "scenes": list(scenes),
        "default_scene": model.config.default_scene,
        "inputs": {
            "crops": {"shape": ["N", 3, size, size], "dtype": "float32", "layout": "NCHW, RGB, normalised"},
            "scene": {"shape": ["N"], "dtype": "int64", "meaning": "index into `scenes`"},
        },
        "outputs": {
            "scores": {"shape": ["N"], "dtype": "float32", "meaning": "one score per crop, higher is better"},
            "levels": {"shape": ["N", NUM_LEVELS], "dtype": "float32", "meaning": "level probabilities per crop"},
        },
        "level_names": list(LEVEL_NAMES),
        "level_values": [float(v) for v in model.score_level.detach().float().cpu()],
        "score_range": list(model.score_range),
        "lower_better": model.lower_better,
        "preprocessing": {
            "decode": "RGB, EXIF orientation applied, embedded ICC profile converted to sRGB; values / 255 in [0, 1]",
            "upscale": f"an image with a side under {size} px: short side to {size} px, bicubic (then clamped to "
            "[0, 1])",
            "crops": f"10 random {size}x{size} crops (the paper's protocol; gamma-iqa seeds them with the image's "
            f"pixels) or one centre crop at ((H - {size}) // 2, (W - {size}) // 2)",
            "mean": [float(v) for v in model.config.mean],
            "std": [float(v) for v in model.config.std],
            "normalise": "crops = (x - mean) / std per channel, x in [0, 1]",
            "image_score": "the mean of the image's crop scores (levels: the mean of its crops' probabilities)",
        },
    }


def export_onnx(
    model: QualityModel,
    path: str | os.PathLike[str],
    *,
    scene: str | Sequence[str] | None = None,
    opset: int = OPSET,
    weights_sha256: str | None = None,
) -> Path:
    """Export `model`'s image path to an ONNX file, with its JSON sidecar beside it (`sidecar_path`).

    The file is written under a temporary name and moved into place, so a reader never sees half a file.

    Args:
        model: a Gamma or gamma-lite model (any device and dtype: an fp32 CPU copy is exported).
        path: the .onnx file to write (its folder must exist).
        scene: one scene or several for the scene table; None: every scene the model accepts, default first.
        opset: the ONNX opset.
        weights_sha256: `state_sha256(model)` when the caller has it already (hashing a large model takes seconds).

    Returns:
        The sidecar's path.

    Raises:
        ValueError: a scene the model does not accept, a model family without an export, `path` a folder or a .json
            file, its folder missing or not writable, or onnx / onnxruntime not installed (the message names the extra
            to install).
    """
    reason = onnx_missing()
    if reason is not None:
        raise ValueError(reason)
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"cannot write {path}: folder {path.parent} is not writable")
    if path.is_dir() or path.suffix == ".json":
        what = "a folder" if path.is_dir() else "its sidecar is the .json beside it"
        raise ValueError(f"cannot write {path}: {what}")
    scenes = export_scenes(model, scene)
    if not isinstance(model, (Gamma, GammaLite)):
        raise ValueError(f"no ONNX export for model {model.config.name} (a {type(model).__name__})")
    model = _fp32_cpu(model)
    digest = weights_sha256 or state_sha256(model)
    graph = ImagePath(model, scenes).eval()
    size = model.image_size
    example = (torch.zeros(2, 3, size, size), torch.zeros(2, dtype=torch.int64))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with torch.no_grad(), _quiet():
            torch.onnx.export(
                graph,
                example,
                str(tmp),
                input_names=["crops", "scene"],
                output_names=["scores", "levels"],
                dynamic_axes={"crops": {0: "N"}, "scene": {0: "N"}, "scores": {0: "N"}, "levels": {0: "N"}},
                opset_version=opset,
                dynamo=False,  # the TorchScript exporter: no onnxscript needed, and it folds the cached weights
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    side = sidecar_path(path)
    side.write_text(json.dumps(sidecar_record(model, scenes, opset, digest), indent=2) + "\n")
    return side
