"""Quality maps: where in an image the quality is, as the scores of a regular grid of windows.

Windows of `window` pixels are placed every `stride` pixels along each axis, the last one of a row or column moved
back to end at the image's border, so every pixel is in some window: an axis of L pixels gets
ceil((L - window) / stride) + 1 windows (one when L <= window). An image with a side under `window` is first enlarged
as `make_crops` enlarges it (short side to `window`, bicubic), and the boxes are given back in the original's pixels.

Each window is scored as the Scorer scores one centre crop of an image that size: through `Scorer.score_items`, in its
fixed-size forwards on the model's device and under its dtype, so a window's score is the one
`model.score(window, crops="center")` gives (bit-identical on the CPU) and a map does not depend on anything else.
Windows are cut from the decoded image one forward at a time, so memory is the image plus one forward's windows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.transforms import image_to_tensor, make_crops
from ..models.base import QualityModel, require_model
from .scoring import Scorer, decode_input, describe_error

__all__ = [
    "DEFAULT_STRIDE",
    "MAX_MAP_WINDOWS",
    "ImageReadError",
    "QualityMap",
    "check_pixels",
    "decode_image",
    "grid_offsets",
    "quality_map",
]

DEFAULT_STRIDE = 112  # px: half of a 224-pixel window, so each pixel is in up to 4 windows
# Most windows one map scores: 128 x 128 windows, e.g. a 14,000-pixel square at stride 112, or a 16-megapixel photo
# at stride 32 (about 2,000 s of gamma-lite on one CPU core). Read at each call, so an application may raise it.
MAX_MAP_WINDOWS = 1 << 14


@dataclass(frozen=True)
class QualityMap:
    """The scores of a grid of windows over one image.

    Attributes:
        scores: (rows, cols) float32, each window's score in the model's `score_range` (higher is better), row by row
            from the top-left window.
        boxes: (rows, cols, 4) int64, each window's (top, left, bottom, right) in the original image's pixels (bottom
            and right exclusive); they cover the image, and the last row and column end at its border.
        size: (height, width) of the original image, in pixels.
        window: the windows' side in pixels (in the enlarged image when `upscaled`).
        stride: the step between windows in pixels (the last one is moved back to the border).
        scene: the scene scored with.
        upscaled: the image had a side under `window` and was enlarged before it was cut.
    """

    scores: np.ndarray
    boxes: np.ndarray
    size: tuple[int, int]
    window: int
    stride: int
    scene: str
    upscaled: bool = False

    @property
    def single(self) -> bool:
        """Whether the map is one window (an image no larger than a window): a score, not a map of where."""
        return self.scores.size == 1

    @property
    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """(row centres (rows,), column centres (cols,)) of the windows, in the original image's pixels."""
        ys = (self.boxes[:, 0, 0] + self.boxes[:, 0, 2]) / 2
        xs = (self.boxes[0, :, 1] + self.boxes[0, :, 3]) / 2
        return ys.astype(np.float64), xs.astype(np.float64)


class ImageReadError(ValueError):
    """An image that cannot be read or scored as given: one line, `NAME: reason`, worded as scoring words it.

    Attributes:
        name: the image as named in the message: its path, or `image` for one in memory.
        reason: why, as `gamma-iqa score` says it on the image's row (`describe_error`): "no such file", ...
    """

    def __init__(self, name: str, reason: str) -> None:
        """The error for image `name` failing for `reason`."""
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


def decode_image(image: Any) -> Image.Image | torch.Tensor:
    """One image decoded as the Scorer decodes it: a PIL RGB image, or a (3, H, W) float tensor in [0, 1].

    Args:
        image: a file path or its bytes, a PIL image, a numpy array or a (3, H, W) tensor.

    Raises:
        ImageReadError: the image cannot be read or scored as given (a ValueError; one line naming the path, or
            `image`, and why, as `QualityModel.score` says it: "no such file", "not an image, ...").
    """
    try:
        return decode_input(image)
    except Exception as e:  # any failure to read it is the input's: one line, as scoring words it
        name = str(image) if isinstance(image, (str, os.PathLike)) else "`image`"
        raise ImageReadError(name, describe_error(e)) from None


def check_pixels(value: Any, parameter: str) -> int:
    """`value` as a number of pixels: an int >= 1 (a bool is no number here).

    Raises:
        ValueError: naming `parameter` and the value given.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{parameter}` must be a whole number of pixels >= 1, got {value!r}")
    return int(value)


def grid_offsets(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of the windows along an axis of `length` pixels: every `stride`, the last one at the border.

    Args:
        length: the axis's length in pixels, >= `window`.
        window: the window's side in pixels.
        stride: the step in pixels, >= 1.

    Returns:
        ceil((length - window) / stride) + 1 increasing offsets, from 0 to length - window.
    """
    n = math.ceil((length - window) / stride) + 1
    return [min(i * stride, length - window) for i in range(n)]


def _check(stride: int, window: int, counts: tuple[int, int], size: tuple[int, int]) -> None:
    """Refuse a map over `MAX_MAP_WINDOWS` windows (`counts` rows x cols over an image of `size` (h, w)).

    Raises:
        ValueError: naming the counts, the budget and how to lift it.
    """
    budget = MAX_MAP_WINDOWS
    rows, cols = counts
    if rows * cols > budget:
        raise ValueError(
            f"too many windows for a quality map: {rows} x {cols} = {rows * cols:,} windows of {window} px at "
            f"`stride` {stride} over a {size[1]} x {size[0]} image, over the budget of {budget:,} windows per map "
            "(use a larger `stride`, or raise gamma_iqa.engine.maps.MAX_MAP_WINDOWS)"
        )


def _edges(offsets: list[int], window: int, enlarged: int, original: int) -> np.ndarray:
    """(n, 2) int64 (start, end) of windows at `offsets` of an axis enlarged from `original` to `enlarged` pixels.

    In the original's pixels, rounded outwards (starts down, ends up), so the windows still cover every pixel.
    """
    starts = np.asarray(offsets, dtype=np.int64)
    return np.stack([starts * original // enlarged, -(-(starts + window) * original // enlarged)], axis=1)


def _windows(view: Image.Image | torch.Tensor, offsets: list[tuple[int, int]], window: int) -> torch.Tensor:
    """The windows at (top, left) `offsets` of `view`, (n, 3, window, window) float32 in [0, 1].

    Cut as `make_crops` cuts a centre crop: in PIL for a PIL image, by slicing for a tensor.
    """
    if isinstance(view, Image.Image):
        cut = [image_to_tensor(view.crop((left, top, left + window, top + window))) for top, left in offsets]
    else:
        cut = [view[:, top : top + window, left : left + window] for top, left in offsets]
    return torch.stack(cut).float()


def _scored(
    scorer: Scorer, view: Any, offsets: list[tuple[int, int]], window: int, scene: str | None
) -> Iterator[float]:
    """The score of each window, in the Scorer's fixed-size forwards (one window an item, as a centre crop)."""
    per_forward, size = scorer.per_forward, scorer.model.image_size
    for start in range(0, len(offsets), per_forward):
        views = _windows(view, offsets[start : start + per_forward], window)  # (n, 3, window, window)
        if window != size:  # another window side: seen at the model's crop size
            views = F.interpolate(views, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        group = [({"crops": v[None]}, scene) for v in views]  # each (1, 3, size, size)
        for mean, _, _ in scorer.score_items(group):  # the Scorer's own forward: same batching, device and dtype
            yield mean


def quality_map(
    model: QualityModel,
    image: Any,
    *,
    scene: str | None = None,
    stride: int = DEFAULT_STRIDE,
    window: int | None = None,
    dtype: str = "fp32",
) -> QualityMap:
    """Score a grid of windows covering `image`: where in it the quality is high or low.

    Deterministic: the same image, model, scene and settings give the same map (no random crops).

    Args:
        model: the model scoring, on its device.
        image: one image: a file path or its bytes, a PIL image, a numpy array or a (3, H, W) tensor, as
            `QualityModel.score` takes them.
        scene: the scene scored with; None for the model's default.
        stride: pixels between the windows' starts along each axis, >= 1 (smaller is finer and slower).
        window: the windows' side in pixels; None for the model's crop size (`image_size`, 224 for the shipped
            models). A window of another side is resized to the crop size before it is scored.
        dtype: autocast precision, a DTYPES name.

    Returns:
        The map: scores (rows, cols), boxes (rows, cols, 4) in the original's pixels, and the image's size.

    Raises:
        TypeError: `model` is not a model (a name, say: make it with `gamma_iqa.create_model(name)`).
        ValueError: `stride` or `window` not an int >= 1, a scene the model does not accept, a bad `dtype`, more
            windows than `MAX_MAP_WINDOWS` (naming how to lift it), or an image that cannot be read or scored (an
            `ImageReadError`, one line naming it as `QualityModel.score` does: "missing.jpg: no such file").

    Examples:
        >>> import torch
        >>> import gamma_iqa
        >>> model = gamma_iqa.create_model("gamma-test")  # tiny and random, 64-pixel crops: needs no weights
        >>> image = torch.rand(3, 100, 160, generator=torch.Generator().manual_seed(0))  # RGB in [0, 1]
        >>> qmap = gamma_iqa.quality_map(model, image, stride=32)
        >>> qmap.scores.shape, qmap.boxes.shape, qmap.size  # ceil((100 - 64) / 32) + 1 rows, ceil(96 / 32) + 1 cols
        ((3, 4), (3, 4, 4), (100, 160))
        >>> qmap.boxes[-1, -1].tolist()  # (top, left, bottom, right): the last window ends at the border
        [36, 96, 100, 160]
    """
    require_model(model)
    stride = check_pixels(stride, "stride")
    window = check_pixels(model.image_size if window is None else window, "window")
    model.prompt_key(scene)
    scorer = Scorer(model, crops="center", dtype=dtype)
    decoded = decode_image(image)
    if isinstance(decoded, Image.Image):
        original = (decoded.height, decoded.width)
    else:
        original = (int(decoded.shape[1]), int(decoded.shape[2]))
    upscaled = min(original) < window
    view = make_crops(decoded, "none", window).crops[0] if upscaled else decoded  # enlarged as make_crops does
    h, w = (view.height, view.width) if isinstance(view, Image.Image) else (int(view.shape[1]), int(view.shape[2]))
    tops, lefts = grid_offsets(h, window, stride), grid_offsets(w, window, stride)
    _check(stride, window, (len(tops), len(lefts)), original)
    offsets = [(top, left) for top in tops for left in lefts]
    scores = np.fromiter(_scored(scorer, view, offsets, window, scene), np.float32, len(offsets))
    shape = (len(tops), len(lefts))
    ys, xs = _edges(tops, window, h, original[0]), _edges(lefts, window, w, original[1])  # each (n, 2)
    rows, cols = ys[:, None, :], xs[None, :, :]  # (rows, 1, 2), (1, cols, 2)
    corners = [rows[..., 0], cols[..., 0], rows[..., 1], cols[..., 1]]  # top, left, bottom, right
    boxes = np.stack([np.broadcast_to(c, shape) for c in corners], axis=-1)  # (rows, cols, 4)
    return QualityMap(
        scores=scores.reshape(shape),
        boxes=boxes.reshape(*shape, 4),
        size=original,
        window=window,
        stride=stride,
        scene=scene or model.config.default_scene,
        upscaled=upscaled,
    )
