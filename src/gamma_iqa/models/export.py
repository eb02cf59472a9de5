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
import errno
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
from .base import INTENT_NAMES, RENDERING_INTENT, QualityModel, level_head
from .gamma import Gamma
from .lite import GammaLite
from .scenes import LEVEL_NAMES, NUM_LEVELS
from .state import state_sha256

__all__ = [
    "FORMATS",
    "OPSET",
    "ExportPathError",
    "ImagePath",
    "check_export_path",
    "default_scene",
    "export_onnx",
    "export_scenes",
    "is_sidecar",
    "onnx_missing",
    "sidecar_path",
]

FORMATS = ("onnx",)  # export formats `gamma-iqa export --format` takes
OPSET = 17  # ONNX opset of the exported graphs (LayerNormalization is native from 17; onnxruntime >= 1.16 runs it)
SIDECAR_FORMAT = "gamma-iqa-onnx/1"  # the sidecar's `format`: ours, and its version
SIDECAR_MAX_BYTES = 1 << 20  # a sidecar is a few kB; a larger JSON file is not one of ours (and is not read whole)
INSTALL_HINT = "pip install 'gamma-iqa[onnx]'"


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
    """The scenes an export holds, in table order.

    The given one(s) in the order given (repeats dropped), else every scene the model accepts with the model's default
    first (index 0).

    Raises:
        ValueError: an empty list of scenes, an empty scene name, or a scene the model does not accept (the model's
            message, listing the valid ones); each names `scene`.
    """
    if scene is None:
        names = list(model.scenes)
        default = model.config.default_scene
        names = [default, *[s for s in names if s != default]]
    else:
        names = list(dict.fromkeys([scene] if isinstance(scene, str) else scene))
        if not names:
            raise ValueError(f"`scene`: no scene given; name one or more of {', '.join(model.scenes)}")
        if any(not name.strip() for name in names):
            raise ValueError(f"`scene`: an empty scene name in {','.join(names)!r}")
    for name in names:
        model.prompt_key(name)
    return names


def default_scene(model: QualityModel, scenes: Sequence[str]) -> str:
    """The scene to take when none is given: the model's default if `scenes` holds it, else `scenes[0]`."""
    default = model.config.default_scene
    return default if default in scenes else scenes[0]


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


def preprocessing_record(model: QualityModel) -> dict[str, Any]:
    """The sidecar's `preprocessing`: what `gamma-iqa score` does to a file before the graph, step by step.

    Each step is what data/transforms.py does (`load_image`, `make_crops`), told exactly enough to be reimplemented
    (docs/onnx.md has a numpy version that reproduces the CLI's scores).
    """
    size = model.image_size
    intent = INTENT_NAMES[RENDERING_INTENT]  # the decoder's own (data/transforms.py reads the same constant)
    return {
        "decode": f"PIL decode; EXIF orientation applied; an embedded ICC profile converted to sRGB ({intent} intent; "
        "one that moves no colour by more than one level is not applied); palette and alpha composited on white; "
        "16-bit greyscale to 8 bits as floor(v / 65535 * 255 + 0.5) (32-bit integer greyscale: / 65535 when some "
        "value is over 255, else / 255; float greyscale: values in [0, 1], * 255); then RGB uint8 (H, W, 3)",
        "to_float": "float32 x = uint8 / 255, in [0, 1]",
        "upscale": f"only an image with a side under {size} px: x (float32, not rounded back to 8 bits) resized to "
        f"(max({size}, round(H * s)), max({size}, round(W * s))) with s = {size} / min(H, W) (round: half to even) "
        "by bicubic convolution with a = -0.75, no antialiasing, source coordinate (i + 0.5) * in / out - 0.5, "
        "edge pixels repeated (PyTorch's F.interpolate(mode='bicubic', align_corners=False); not PIL's bicubic, "
        "which uses a = -0.5 on uint8), then clamped to [0, 1]",
        "crops": f"10 random {size}x{size} crops (the paper's protocol; gamma-iqa seeds them with the image's "
        f"pixels) or one centre crop at ((H - {size}) // 2, (W - {size}) // 2) of the (enlarged) image",
        "mean": [float(v) for v in model.config.mean],
        "std": [float(v) for v in model.config.std],
        "normalise": "crops = (x - mean) / std per channel, in float32, NCHW",
        "image_score": "the mean of the image's crop scores (levels: the mean of its crops' probabilities)",
    }


def sidecar_record(model: QualityModel, scenes: Sequence[str], opset: int, weights_sha256: str) -> dict[str, Any]:
    """The sidecar's content: what the file is, where it comes from, and the preprocessing it expects (docs/onnx.md).

    Args:
        model: the exported model.
        scenes: the scene table's names, in index order.
        opset: the ONNX opset.
        weights_sha256: `state_sha256(model)`, the model's parameters as they score.

    Returns:
        A JSON-ready dict. `lower_better` is the package's own term (`QualityModel.lower_better`, `list datasets`):
        false means a higher score is better quality.
    """
    size = model.image_size
    direction = "lower is better" if model.lower_better else "higher is better"
    return {
        "format": SIDECAR_FORMAT,
        "model": model.config.name,
        "kind": model.kind,
        "weights_sha256": weights_sha256,
        "checkpoint_files": [p.name for p in model.checkpoint_files],
        "gamma_iqa": __version__,
        "torch": torch.__version__,
        "opset": opset,
        "scenes": list(scenes),
        "default_scene": default_scene(model, scenes),
        "inputs": {
            "crops": {"shape": ["N", 3, size, size], "dtype": "float32", "layout": "NCHW, RGB, normalised"},
            "scene": {"shape": ["N"], "dtype": "int64", "meaning": "index into `scenes`"},
        },
        "outputs": {
            "scores": {"shape": ["N"], "dtype": "float32", "meaning": f"one score per crop, {direction}"},
            "levels": {"shape": ["N", NUM_LEVELS], "dtype": "float32", "meaning": "level probabilities per crop"},
        },
        "level_names": list(LEVEL_NAMES),
        "level_values": [float(v) for v in model.score_level.detach().float().cpu()],
        "score_range": list(model.score_range),
        "lower_better": model.lower_better,
        "preprocessing": preprocessing_record(model),
    }


def _temp(target: Path) -> Path:
    """The temporary name `target` is written under before it is moved into place (hidden, beside it)."""
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def _nearest_existing(folder: Path) -> Path:
    """`folder` or its nearest ancestor that exists, as the user wrote it (relative stays relative)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def is_sidecar(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a sidecar an export of ours wrote: a small JSON object whose `format` is ours.

    Only such a file (and the .onnx beside it) may be replaced by a new export; a user's own JSON never is.
    """
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size > SIDECAR_MAX_BYTES:
            return False
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8 (UnicodeDecodeError is a ValueError) or not JSON
        return False
    return isinstance(record, dict) and str(record.get("format", "")).startswith(SIDECAR_FORMAT.split("/")[0] + "/")


def _path_problem(path: Path) -> str | None:
    """Why `path` or its sidecar cannot be written, judged from the file system alone (no write tried), or None.

    Never replaces a file that is not an earlier export: `path` must end in .onnx, an existing `path` must have a
    sidecar of ours beside it, and an existing sidecar must be one of ours.
    """
    if path.is_dir():  # first: `.` and `..` have no suffix to check (nor to replace)
        return "it is a folder"
    if path.suffix.lower() != ".onnx":
        return "the name must end in .onnx (its JSON sidecar goes beside it)"
    side = sidecar_path(path)
    if side.is_dir():
        return f"its sidecar {side} is a folder"
    if side.exists() and not is_sidecar(side):
        return f"its sidecar {side} exists and is not an earlier export's; move it away or name another file"
    if path.exists() and not is_sidecar(side):
        return f"it exists and is not an earlier export (no sidecar of one, {side}); move it away or name another file"
    folder = path.parent
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if existing != folder:
        return f"folder {folder} does not exist"
    return None


_WRITE_REASONS = {  # errno -> why a file cannot be created in an existing folder
    errno.EACCES: "not writable (permission denied)",
    errno.EPERM: "not writable (operation not permitted)",
    errno.EROFS: "not writable (a read-only file system)",
    errno.ENOENT: "not writable (it takes no new files)",
    errno.ENOSPC: "no space left on its device",
    errno.EDQUOT: "over the disk quota",
}


class ExportPathError(ValueError):
    """An export's file or sidecar cannot be written: "cannot write PATH: why", naming the user's path."""


def _write_error(path: Path, error: OSError) -> ExportPathError:
    """A one-line error naming the user's `path` (never a temporary name) for `error`, raised while writing it."""
    reason = _WRITE_REASONS.get(error.errno or 0)
    if reason in (None, _WRITE_REASONS[errno.ENOSPC], _WRITE_REASONS[errno.EDQUOT]):
        text = reason or (error.strerror or str(error)).lower()
        return ExportPathError(f"cannot write {path}: {text}")
    return ExportPathError(f"cannot write {path}: folder {path.parent} is {reason}")


def _reserve(path: Path) -> tuple[Path, Path]:
    """Create the (empty) temporary files of `path` and its sidecar: the proof that both can be written.

    Returns:
        The temporary (onnx, sidecar) paths; the caller removes them.

    Raises:
        ValueError: either cannot be created (one line naming `path` or its sidecar and the reason).
    """
    problem = _path_problem(path)
    if problem is not None:
        raise ExportPathError(f"cannot write {path}: {problem}")
    made: list[Path] = []
    try:
        for target in (path, sidecar_path(path)):
            tmp = _temp(target)
            try:
                os.close(os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644))
            except OSError as e:
                raise _write_error(target, e) from None
            made.append(tmp)
    except ValueError:
        for tmp in made:
            tmp.unlink(missing_ok=True)
        raise
    return made[0], made[1]


def check_export_path(path: str | os.PathLike[str]) -> None:
    """Check, before a (slow) export, that `path` and its sidecar can be written: creates and removes their temps.

    Raises:
        ExportPathError: (a ValueError) one line naming `path` (or its sidecar) and why not: a name not ending in
            .onnx, a file there (or at the sidecar's place) that is not an earlier export, a folder in the way, a
            missing folder or a file where a folder should be, a folder not writable.
    """
    for tmp in _reserve(Path(path)):
        tmp.unlink(missing_ok=True)


def export_onnx(
    model: QualityModel,
    path: str | os.PathLike[str],
    *,
    scene: str | Sequence[str] | None = None,
    opset: int = OPSET,
    weights_sha256: str | None = None,
) -> Path:
    """Export `model`'s image path to an ONNX file, with its JSON sidecar beside it (`sidecar_path`).

    Both are written under temporary names beside them (created before the export, so an unwritable place fails at
    once) and moved into place only when both are complete; on any failure neither appears and the temporary files
    are removed.

    Args:
        model: a Gamma or gamma-lite model (any device and dtype: an fp32 CPU copy is exported).
        path: the .onnx file to write (its folder must exist); an existing one is replaced only when it is an earlier
            export (its sidecar one of ours), and an existing sidecar only when it is one of ours.
        scene: one scene or several for the scene table, in that order; None: every scene the model accepts, its
            default first. The sidecar's `default_scene` is the model's default if the table holds it, else the
            table's first.
        opset: the ONNX opset.
        weights_sha256: `state_sha256(model)` when the caller has it already (hashing a large model takes seconds).

    Returns:
        The sidecar's path.

    Raises:
        ExportPathError: (a ValueError) `path` or its sidecar not writable (as `check_export_path`; also a write
            failing during the export, e.g. a full disk).
        ValueError: a scene the model does not accept or an empty scene list or name, a model family without an
            export, or onnx / onnxruntime not installed (the message names the extra to install).
    """
    reason = onnx_missing()
    if reason is not None:
        raise ValueError(reason)
    path = Path(path)
    scenes = export_scenes(model, scene)
    if not isinstance(model, (Gamma, GammaLite)):
        raise ValueError(f"no ONNX export for model {model.config.name} (a {type(model).__name__})")
    tmp, tmp_side = _reserve(path)
    try:
        _write(model, scenes, opset, weights_sha256, (path, tmp, tmp_side))
        os.replace(tmp, path)
        os.replace(tmp_side, sidecar_path(path))
    finally:
        tmp.unlink(missing_ok=True)
        tmp_side.unlink(missing_ok=True)
    return sidecar_path(path)


def _write(
    model: QualityModel, scenes: list[str], opset: int, digest: str | None, paths: tuple[Path, Path, Path]
) -> None:
    """Trace `model` into `paths[1]` and write its sidecar to `paths[2]` (temporaries of `paths[0]` and its sidecar).

    Raises:
        ValueError: a write failing (one line naming the user's path, `paths[0]` or its sidecar).
    """
    path, tmp, tmp_side = paths
    model = _fp32_cpu(model)
    digest = digest or state_sha256(model)
    graph = ImagePath(model, scenes).eval()
    size = model.image_size
    example = (torch.zeros(2, 3, size, size), torch.zeros(2, dtype=torch.int64))
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
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        tmp_side.write_text(json.dumps(sidecar_record(model, scenes, opset, digest), indent=2) + "\n")
    except OSError as e:
        raise _write_error(sidecar_path(path), e) from None
