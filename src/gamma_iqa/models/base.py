"""What every model family shares: the interface, the image adapter and the quality-level head.

`QualityModel` is the interface scoring, evaluation and training rely on; `Adapter` and `level_head` are Gamma's
scoring head (gamma.md §5), reused by gamma-lite.

Shapes: image features (B, E); level anchors (B, K, E); level values (K,); scores (B,).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "INTENT_NAMES",
    "RENDERING_INTENT",
    "UNIT_TOLERANCE",
    "Adapter",
    "QualityModel",
    "check_images",
    "check_keys",
    "level_head",
    "range_problem",
    "require_model",
    "set_scorer",
    "values_unchecked",
]

# How far float RGB may stray outside [0, 1] and still count as [0, 1] (rounding, resampling overshoot); beyond it
# the values are on another scale (0..255, say) and the input is refused rather than scored wrongly.
UNIT_TOLERANCE = 1e-3
# The ICC rendering intent of an embedded colour profile to sRGB: 1, relative colorimetric (data/transforms.py's
# module text says why). Here rather than there so that the ONNX export's sidecar (models/export.py), which tells
# the preprocessing, names the intent the decoder uses: both read this one constant.
RENDERING_INTENT = 1
# ImageCms's (and the ICC's) numbering of the rendering intents.
INTENT_NAMES = {0: "perceptual", 1: "relative colorimetric", 2: "saturation", 3: "absolute colorimetric"}


def check_keys(cls: type, d: Mapping[str, Any], what: str) -> None:
    """Check that every key of a serialised config names a field of dataclass `cls`.

    Args:
        cls: the config dataclass.
        d: the serialised config (e.g. the "model" entry of a checkpoint's config.json).
        what: what the config is, for the message (e.g. "model config").

    Raises:
        ValueError: some keys are not fields of `cls`; the message lists them.
    """
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} keys: {', '.join(sorted(unknown))}")


def range_problem(values: torch.Tensor) -> str | None:
    """What is wrong with float RGB meant to be in [0, 1], or None when nothing is.

    One reduction and one host sync (NaN propagates into both the minimum and the maximum).

    Args:
        values: any shape, floating point.

    Returns:
        A phrase to follow the input's name ("holds NaN or infinite values", "holds values in [0, 255], ..."), or
        None when every value is finite and within `UNIT_TOLERANCE` of [0, 1].
    """
    if values.numel() == 0:
        return None
    lo, hi = torch.stack(torch.aminmax(values.detach())).tolist()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "holds NaN or infinite values"
    if lo < -UNIT_TOLERANCE or hi > 1 + UNIT_TOLERANCE:
        hint = "; 8-bit values? divide by 255" if 2 < hi <= 255.5 else ""
        return f"holds values in [{lo:.4g}, {hi:.4g}], outside RGB's [0, 1]{hint}"
    return None


# False inside `values_unchecked`: `check_images` then skips the value check, its one host sync.
_check_values = contextvars.ContextVar("gamma_iqa_check_values", default=True)


@contextlib.contextmanager
def values_unchecked() -> Iterator[None]:
    """Within the block, `check_images` checks shape and dtype but not the values (no reduction, no host sync).

    For callers that vouch for the range themselves, such as `QualityLoss` on pixels being optimised. Per thread and
    per asyncio task (a context variable).
    """
    token = _check_values.set(False)
    try:
        yield
    finally:
        _check_values.reset(token)


def check_images(images: torch.Tensor) -> None:
    """Refuse a model input that is not (B, 3, H, W) float RGB in [0, 1].

    The value check (one reduction and a host sync) is skipped inside `values_unchecked`.

    Args:
        images: what a model's `forward` was given.

    Raises:
        ValueError: the shape, the dtype (integers must be scaled to [0, 1] first) or the values (non-finite, or
            outside [0, 1] by more than `UNIT_TOLERANCE`) are wrong; the message says which.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) RGB in [0, 1], got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float RGB in [0, 1], got {images.dtype} (uint8 images: divide by 255)")
    problem = range_problem(images) if _check_values.get() else None
    if problem is not None:
        raise ValueError(f"images must be RGB in [0, 1]: the batch {problem}")


class Adapter(nn.Module):
    """Residual bottleneck on the image feature: x + ReLU(up(ReLU(down(x)))), no biases (gamma.md §5, step 1).

    Keys: `down.weight` (hidden, dim), `up.weight` (dim, hidden); PyTorch's default Linear initialisation.
    """

    def __init__(self, *, dim: int, hidden: int) -> None:
        """Build the two bias-free layers.

        Args:
            dim: width of the image feature E (512 for Gamma's ViT-B/16).
            hidden: bottleneck width (256 for Gamma, gamma.md §5).
        """
        super().__init__()
        self.down = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Adapt image features (..., dim) -> (..., dim)."""
        return x + torch.relu(self.up(torch.relu(self.down(x))))


def level_head(
    adapter: Adapter,
    image_features: torch.Tensor,
    anchors: torch.Tensor,
    logit_scale: torch.Tensor,
    levels: torch.Tensor,
    *,
    probabilities: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The quality-level head (gamma.md §5): image features and per-image level anchors to scores.

    Adapter, L2 normalisation, cosine times exp(`logit_scale`), softmax over the K levels, expectation of `levels`.
    Computed in the levels' dtype even under autocast: it is cheap, and scores deserve more than bf16's 8 bits.
    The scores are the same tensor values whether or not the probabilities are asked for.

    Args:
        adapter: the image adapter, applied to `image_features` only (the anchors are not adapted).
        image_features: (B, E), before the adapter.
        anchors: (B, K, E), each image's K level features (text features for Gamma, learned for gamma-lite), in
            level order, worst first; not normalised.
        logit_scale: 0-dim, in log space (exp gives 100 for OpenAI CLIP, 1/0.07 for a fresh one).
        levels: (K,) level values (initialised to 0.2, 0.4, ..., 1.0 in gamma.md §5).
        probabilities: also return the softmax over the levels.

    Returns:
        Scores (B,) in the levels' dtype, inside [min(levels), max(levels)]; with `probabilities`, the pair (scores,
        level probabilities (B, K), each row summing to 1, worst level first), where scores = probabilities @ levels.
    """
    dtype = levels.dtype
    with torch.autocast(image_features.device.type, enabled=False):
        f = adapter(image_features.to(dtype))
        f = f / f.norm(dim=-1, keepdim=True)
        t = anchors.to(dtype)
        t = t / t.norm(dim=-1, keepdim=True)
        logits = logit_scale.exp() * torch.einsum("be,bke->bk", f, t)  # (B, K)
        p = logits.softmax(dim=-1)  # (B, K)
        scores = p @ levels  # (B,)
    return (scores, p) if probabilities else scores


class QualityModel(nn.Module):
    """What scoring, evaluation and training rely on, shared by Gamma and GammaLite.

    Subclasses set `config` (with `name`, `default_scene`) and define `image_size`, `scenes`, `prompt_key` and
    `forward(images, scene, *, levels=False) -> (B,)` (with `levels=True`: the pair (scores (B,), level probabilities
    (B, K)), as `level_head` gives them; `score(..., details=True)` needs it); a family registers the subclass
    (models/registry.py).

    Attributes:
        kind: the checkpoint's model kind, which selects the family on load ("gamma", "gamma-lite").
        lower_better: whether a lower score means better quality (False for every family here).
        score_range: the nominal range of scores, (low, high), as the HTML report draws it; training targets are
            MOS min-max normalised to [0, 1] (gamma.md §1).
        config: the family's frozen config dataclass, saved with every checkpoint.
        checkpoint_files: the files the model was loaded from (`load_checkpoint` sets them: the weights, and the
            folder's config.json when there is one); empty for a model built fresh. Run provenance hashes them.
        cpu_bf16: whether bf16 autocast was measured faster than fp32 for this family on a CPU with native bf16
            (avx512_bf16); False: the Scorer scores in fp32 on the CPU when bf16 is asked for (engine/runtime.py
            `scoring_dtype`).
        cpu_crops_per_forward: the fewest crops a CPU forward of this family should hold, measured (1: any count
            runs as fast per crop). A Scorer on the CPU puts ceil(this / crops per image) images in each forward, a
            fixed number, so the scores still do not depend on the batch size.
    """

    kind = ""
    lower_better = False
    cpu_bf16 = True
    cpu_crops_per_forward = 1
    score_range = (0.0, 1.0)
    config: Any
    checkpoint_files: tuple[Path, ...] = ()

    @property
    def image_size(self) -> int:
        """Side of the square crops the model is trained and scored on, in pixels (224 for the released models)."""
        raise NotImplementedError

    @property
    def scenes(self) -> list[str]:
        """Names of the scenes this model accepts (models/scenes.py)."""
        raise NotImplementedError

    def prompt_key(self, scene: str | None) -> str:
        """The prompt or anchor set that scores images of `scene`.

        Args:
            scene: a scene name, or None for the model's default scene.

        Returns:
            A key of the model's prompt (Gamma) or anchor (gamma-lite) sets.

        Raises:
            ValueError: the model does not accept `scene`; the message lists the valid scenes.
        """
        raise NotImplementedError

    def assets(self) -> dict[str, Path]:
        """Files a checkpoint folder carries beside the weights, as {file name: where it is now}; none by default.

        Returns:
            The files `save_checkpoint` copies into the folder, by the name they get there.
        """
        return {}

    def load_assets(self, folder: Path) -> None:
        """Pick up the files `assets` wrote into a checkpoint folder; nothing by default.

        Args:
            folder: the checkpoint folder being loaded.
        """

    def scene_keys(self, scene: str | Sequence[str | None] | None, batch: int) -> list[str]:
        """One prompt key per image.

        Args:
            scene: one scene name for all images, None for the default scene, or one name (or None) per image.
            batch: the number of images B.

        Returns:
            B prompt keys (`prompt_key` of each image's scene).

        Raises:
            ValueError: a sequence of scenes whose length is not `batch`, or a scene the model does not accept.
        """
        if scene is None or isinstance(scene, str):
            return [self.prompt_key(scene)] * batch
        scenes = list(scene)
        if len(scenes) != batch:
            raise ValueError(f"got {len(scenes)} scenes for {batch} images")
        return [self.prompt_key(s) for s in scenes]

    def score(
        self,
        inputs: Any,
        *,
        scene: str | Sequence[str] | None = None,
        crops: int | str = 10,
        seed: int = 0,
        batch_size: int = 8,
        dtype: str = "fp32",
        details: bool = False,
        mos_scale: str | None = None,
        calibration: Any = None,
        backend: str = "torch",
        compile: str | bool | None = None,
    ) -> list[float] | list[dict[str, Any]]:
        """Score images, with the same semantics as `gamma-iqa score`.

        Always a single-process call, also under torchrun (each process scores all of `inputs`). The engine
        (gamma_iqa.engine.scoring) provides the implementation; importing `gamma_iqa` installs it.

        Args:
            inputs: image files, folders or globs, PIL images (their EXIF orientation applied, as for files),
                numpy arrays (H, W, 3) or tensors (3, H, W) / (B, 3, H, W): uint8 (divided by 255), uint16 (by
                65535) or float in [0, 1]; one of these or a list of them. A folder or glob alone counts as its
                images (sorted paths); in a list each item must be one image.
            scene: one scene name for all images, one per image, or None for the model's default scene.
            crops: the number of random `image_size` crops averaged per image (10 in gamma.md §9), "center" (one
                centre crop) or "none" (the whole image). An image with a side under `image_size` is first enlarged.
            seed: seeds the random crops together with each image's pixels, so a score does not depend on the
                batch it was scored in.
            batch_size: images decoded per batch, >= 1; the scores do not depend on it (the forwards hold a fixed
                number of images, `engine.scoring.Scorer.per_forward`).
            dtype: "fp32", "bf16" or "fp16" (autocast).
            details: return, instead of the scores, one dict per image with the columns of `gamma-iqa score
                --details`: path, score, scene, crops, `spread` (the population standard deviation of the crop
                scores, `torch.std(correction=0)`; 0 for one crop) and `p_bad` ... `p_perfect` (the level
                probabilities of the head, averaged over the crops: they sum to 1, and their expectation under the
                model's level values, `score_level`, is the score).
            mos_scale: a registered dataset's name (see `gamma_iqa.list_datasets`): return dicts with a key `mos` too,
                the score on that dataset's MOS scale, the inverse of its training normalisation
                (`DatasetSpec.denormalise`; for a lower-is-better dataset such as LIVE's DMOS a higher score gives a
                lower `mos`), as `gamma-iqa score --mos-scale`.
            calibration: a calibration file of `gamma-iqa calibrate` fitted for this model (a path, or a loaded
                `gamma_iqa.engine.calibration.Calibration`): return dicts with a key `calibrated` too, the score
                through it, as `gamma-iqa score --calibration`.
            backend: "torch" (the model's forward) or "onnxruntime": the model's ONNX export run by onnxruntime
                on the CPU in fp32 (exported once, cached under $GAMMA_IQA_HOME/onnx; the extra `gamma-iqa[onnx]`),
                as `gamma-iqa score --backend onnxruntime`; scores equal torch's to about 1e-6.
            compile: a torch.compile mode ("default", "reduce-overhead" for CUDA graphs on a GPU, "max-autotune",
                "max-autotune-no-cudagraphs"; True: "default") to compile the image tower in before scoring (Gamma
                models), as `gamma-iqa score --compile-mode`; scores equal the eager ones to float rounding. The model
                stays compiled: later calls and `model(x)` run the compiled tower too.

        Returns:
            One score per image, in input order; higher is better for every family here (`lower_better`). With
            `details`, `mos_scale` or `calibration`, one dict per image instead: path, score, scene, crops, then the
            keys each adds.

        Raises:
            ValueError: a bad input, naming it (its path or `<input N>`): unreadable, another integer type (int64...),
                float values outside [0, 1] or not finite, a folder or glob in a list, a view over the pixel budget;
                or a bad argument (naming the parameter in backticks): an unknown `mos_scale`, a malformed `calibration`
                or one fitted for another model; an unknown `compile` mode, or one for a model without a compiled
                path (gamma-lite).
            FileNotFoundError: `calibration` is not a file.
            RuntimeError: the engine is not installed (only when gamma_iqa.models is used without gamma_iqa).

        Examples:
            >>> import torch
            >>> import gamma_iqa
            >>> model = gamma_iqa.create_model("gamma-test")  # tiny and random: needs no weights
            >>> images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # RGB in [0, 1]
            >>> scores = model.score(images, crops="center")
            >>> len(scores), all(isinstance(s, float) for s in scores)
            (3, True)
            >>> all(0.2 <= s <= 1.0 for s in scores)  # between the lowest and highest level value
            True
            >>> row = model.score(images[0], crops=4, details=True)[0]  # how sure: the spread and the level mix
            >>> sorted(row)
            ['crops', 'p_bad', 'p_fair', 'p_good', 'p_perfect', 'p_poor', 'path', 'scene', 'score', 'spread']
            >>> round(sum(row[f"p_{lv}"] for lv in ("bad", "poor", "fair", "good", "perfect")), 6)
            1.0
        """
        if _scorer is None:  # never in practice: importing any part of gamma_iqa imports the engine
            raise RuntimeError("scoring is provided by gamma_iqa.engine; import gamma_iqa first")
        options = {"scene": scene, "crops": crops, "seed": seed, "batch_size": batch_size, "dtype": dtype}
        options |= {"backend": backend, "compile": compile}
        return _scorer(self, inputs, details=details, mos_scale=mos_scale, calibration=calibration, **options)


def require_model(model: Any, parameter: str = "model") -> None:
    """Refuse anything but a `QualityModel` where an API takes a model (a name is the common slip).

    Raises:
        TypeError: one line naming `parameter`, what was given and how to make a model (`create_model`).
    """
    if isinstance(model, QualityModel) or isinstance(getattr(model, "_orig_mod", None), QualityModel):
        return  # a model, or one wrapped by torch.compile (which passes attributes through)
    if isinstance(model, (str, os.PathLike)):
        how = f"gamma_iqa.create_model({str(model)!r})"
    else:
        how = "gamma_iqa.create_model(NAME_OR_CHECKPOINT)"
    text = " ".join(repr(model).split())  # one line, even for a module or a tensor
    shown = text if len(text) <= 60 else text[:57] + "..."
    raise TypeError(f"`{parameter}` must be a model, got the {type(model).__name__} {shown}: pass {how}")


# The models layer sits below the data and engine layers that decode and crop images, so `QualityModel.score` cannot
# import them: the engine hands its scoring function down once, when it is imported (dependency inversion).
_scorer: Callable[..., Any] | None = None


def set_scorer(scorer: Callable[..., Any]) -> None:
    """Install the function behind `QualityModel.score` (called by gamma_iqa.engine.scoring at import).

    Args:
        scorer: called as `scorer(model, inputs, scene=, crops=, seed=, batch_size=, dtype=, details=, mos_scale=,
            calibration=, backend=)`; returns the scores (with `details`, `mos_scale` or `calibration`: the dicts).
    """
    global _scorer
    _scorer = scorer
