"""A quality model as a differentiable loss or reward on pixels: `QualityLoss`.

Deterministic by construction: the crops sit on a fixed grid that depends only on the image size (`crop_grid`), never
on a random generator or on the pixels, so two calls on the same images give the same value and the same gradient.
The model is used as it is, never changed: its parameters enter the forward detached (they get no gradient and need
no `requires_grad_(False)`), and a model in training mode is put in eval mode for the call and back afterwards.

Sign convention (docs/differentiable.md): with the model's `score_range` (low, high), nominally (0, 1), a model's
quality is its score (higher-better models, every family here) or low + high - score (a `lower_better` model). The
loss is high - quality, `1 - score` for the families here: 0 for a perfect image, to be minimised. The reward
(`as_reward=True`) is the quality itself, `score`, to be maximised; loss + reward = high, so their gradients are
opposite.

Shapes: images (B, 3, H, W); crops (B * N, 3, S, S) with S the model's `image_size`; per-image scores (B,).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .base import QualityModel, range_problem, require_model, values_unchecked

__all__ = ["MAX_LOSS_PIXELS", "QualityLoss", "crop_grid"]

Reduction = Literal["mean", "sum", "none"]
# Most pixels one image may become on the way to the model: its enlarged view (a thin image is enlarged to the crop
# size) and its crops together. The same budget as scoring's views (data.transforms.MAX_VIEW_PIXELS, which this layer
# may not import): 2**24 float pixels are 200 MB, and the graph kept for the gradient holds several times that.
# Read at each call, so an application may raise it.
MAX_LOSS_PIXELS = 1 << 24


def _grid_shape(n: int, height: int, width: int) -> tuple[int, int]:
    """(rows, cols) with rows * cols = n whose shape is closest to the image's aspect ratio (ties: more columns)."""
    pairs = [(r, n // r) for r in range(1, n + 1) if n % r == 0]
    aspect = math.log(width / height)
    return min(pairs, key=lambda rc: (abs(math.log(rc[1] / rc[0]) - aspect), rc[0]))


def _spread(count: int, free: int) -> list[int]:
    """`count` offsets evenly spaced over [0, free], both ends included (the middle, free // 2, for one)."""
    if count == 1:
        return [free // 2]
    # Integer rounding of i * free / (count - 1): exact, so the grid never depends on float behaviour.
    return [(2 * i * free + count - 1) // (2 * (count - 1)) for i in range(count)]


def crop_grid(height: int, width: int, size: int, crops: int | str) -> list[tuple[int, int]]:
    """The fixed (top, left) offsets of `QualityLoss`'s size x size crops in a height x width image.

    A pure function of its arguments: the same image size always gives the same crops, in row-major order.

    Args:
        height: image height in pixels, >= `size` (smaller images are enlarged first, see `QualityLoss`).
        width: image width in pixels, >= `size`.
        size: the crop side in pixels (the model's `image_size`).
        crops: "center" (one crop in the middle, at ((height - size) // 2, (width - size) // 2), as `score`'s
            "center"); an int N >= 1 (an evenly spaced rows x cols grid with rows * cols = N, the factorisation
            closest to the image's aspect ratio, corners included when there is more than one crop per axis; 1 is
            "center"); or "grid" (the fewest crops that cover every pixel: ceil(height / size) x ceil(width / size),
            evenly spaced, overlapping where the sides are not multiples of `size`).

    Returns:
        N offsets (top, left), row-major.

    Raises:
        ValueError: `crops` is none of the above, or the image is smaller than `size`.
    """
    if height < size or width < size:
        raise ValueError(f"a {width} x {height} image is smaller than the {size}-pixel crop (enlarge it first)")
    if crops == "center":
        rows, cols = 1, 1
    elif crops == "grid":
        rows, cols = -(-height // size), -(-width // size)
    elif isinstance(crops, int) and not isinstance(crops, bool) and crops >= 1:
        rows, cols = _grid_shape(crops, height, width)
    else:
        raise ValueError(f'`crops` must be "center", "grid" or an int >= 1, got {crops!r}')
    return [(top, left) for top in _spread(rows, height - size) for left in _spread(cols, width - size)]


def enlarged_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) of an image after `enlarge`: short side to `size` when under it, else as it is."""
    if min(height, width) >= size:
        return height, width
    scale = size / min(height, width)
    return max(size, round(height * scale)), max(size, round(width * scale))


def check_budget(height: int, width: int, size: int, crops: int | str) -> None:
    """Refuse an image whose enlarged view or whose crops would exceed `MAX_LOSS_PIXELS` (before any allocation).

    Raises:
        ValueError: one line naming the image's shape, the pixels and the budget, and how to get under it.
    """
    budget = MAX_LOSS_PIXELS
    eh, ew = enlarged_size(height, width, size)
    lift = "raise gamma_iqa.models.loss.MAX_LOSS_PIXELS"
    if eh * ew > budget:
        raise ValueError(
            f"`images` of {height} x {width} pixels (H x W) would be enlarged to {eh} x {ew} = {eh * ew:,} pixels to "
            f"reach the {size}-pixel crop side, over the budget of {budget:,} pixels per image (pad or crop it to a "
            f"less extreme aspect ratio, or {lift})"
        )
    n = len(crop_grid(eh, ew, size, crops))
    if n * size * size > budget:
        raise ValueError(
            f"`crops` {crops!r} makes {n} crops of {size} x {size} of each {height} x {width} image, "
            f"{n * size * size:,} pixels, over the budget of {budget:,} pixels per image (use fewer crops, or {lift})"
        )


def enlarge(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images (B, 3, H, W) with a side under `size`, enlarged (short side to `size`) as `make_crops` does.

    Bicubic, `align_corners=False`, then clamped to [0, 1]: differentiable (the clamp passes no gradient to values
    the bicubic kernel pushed outside [0, 1]). Images with both sides >= `size` are returned as they are.
    """
    h, w = images.shape[-2:]
    if min(h, w) >= size:
        return images
    new = enlarged_size(h, w, size)
    return F.interpolate(images, size=new, mode="bicubic", align_corners=False).clamp(0, 1)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Run `model` in eval mode (no dropout, BatchNorm on its running statistics, left unchanged), then restore."""
    training = [m for m in model.modules() if m.training]
    for m in training:
        m.training = False
    try:
        yield
    finally:
        for m in training:
            m.training = True


class QualityLoss(nn.Module):
    """An image-quality model as a loss (or reward) on images, differentiable with respect to the pixels.

    The loss of an image is `1 - score` (to minimise), its reward `score` (to maximise), the score being the mean of
    the model's scores of the image's crops on a fixed grid (`crop_grid`): no random crops, so two calls give
    bit-identical values and gradients. A `lower_better` model's score is reflected in its `score_range` first
    (module docstring), so minimising the loss always improves quality.

    The model is not changed and is not a submodule: `loss.parameters()` is empty, `loss.to()` and `loss.train()` do
    not reach it (move the model itself), and its parameters get no gradient (they enter each call detached, through
    `torch.func.functional_call`; a model whose parameters all have `requires_grad=False` is called directly). A model
    in training mode is switched to eval mode for each call and back afterwards. Gradient flows to the images only.

    Autocast: use it around the call (`torch.autocast("cpu", torch.bfloat16)`, or "cuda" with bf16 or fp16); the
    towers then run in the low dtype while the scoring head stays in float32 (`level_head`), so the loss is float32.
    With fp16 on CUDA, scale the loss (`torch.amp.GradScaler`) as for any fp16 training. Images are cast to the
    model's parameter dtype first (float64 images into a float32 model, for instance).

    Range check: the values must be RGB in [0, 1] (within `UNIT_TOLERANCE`), as for the model's forward. Checking
    needs one reduction and a host-device sync, so by default (`check=None`) only images that do not require grad
    are checked; pixels being optimised (`requires_grad=True`) are not: keep them in range yourself (clamp after each
    step). `check=True` checks every call, `check=False` none. Shape and dtype are always checked (no sync).

    Examples:
        >>> import torch
        >>> import gamma_iqa
        >>> model = gamma_iqa.create_model("gamma-test")  # tiny, random, 64-pixel crops
        >>> loss_fn = gamma_iqa.QualityLoss(model, crops=4)
        >>> x = torch.rand(2, 3, 80, 96, generator=torch.Generator().manual_seed(0)).requires_grad_()
        >>> loss = loss_fn(x)  # mean over the batch of 1 - score
        >>> loss.backward()
        >>> x.grad.shape, all(p.grad is None for p in model.parameters())
        (torch.Size([2, 3, 80, 96]), True)
    """

    def __init__(
        self,
        model: QualityModel,
        scene: str | None = None,
        crops: int | str = "center",
        reduction: Reduction = "mean",
        as_reward: bool = False,
        check: bool | None = None,
    ) -> None:
        """Wrap `model`.

        Args:
            model: any `QualityModel` (gamma-lite, Gamma, a loaded checkpoint); used, never modified.
            scene: the scene every image is scored as; None for the model's default scene.
            crops: "center", an int N >= 1 or "grid": where the model's `image_size` crops sit (`crop_grid`).
            reduction: "mean" or "sum" over the batch (a 0-dim tensor), or "none" (one value per image, (B,)).
            as_reward: return the reward (`score`, higher is better) instead of the loss (`1 - score`).
            check: check the pixel values on every call (True), never (False), or only for images that do not
                require grad (None).

        Raises:
            TypeError: `model` is not a model (a name, say: make it with `gamma_iqa.create_model(name)`).
            ValueError: a scene the model does not accept, or a bad `crops` or `reduction` (naming the parameter).
        """
        super().__init__()
        require_model(model)
        crop_grid(1, 1, 1, crops)  # validates `crops` (any valid value has a grid on a 1-pixel image)
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f'`reduction` must be "mean", "sum" or "none", got {reduction!r}')
        model.prompt_key(scene)  # an unknown scene fails here, not at the first call
        object.__setattr__(self, "model", model)  # a plain attribute: not a submodule, its parameters not ours
        self.scene, self.crops, self.reduction, self.as_reward, self.check = scene, crops, reduction, as_reward, check

    def extra_repr(self) -> str:
        """The settings, for `repr`."""
        kind = "reward" if self.as_reward else "loss"
        settings = f"scene={self.scene!r}, crops={self.crops!r}, reduction={self.reduction!r}"
        return f"{self.model.config.name}, {settings}, {kind}"

    def _checked(self, images: torch.Tensor) -> None:
        """Refuse images that are not (B, 3, H, W) float with B, H, W >= 1 (and, per `check`, not in [0, 1]).

        Raises:
            TypeError: not a torch tensor (a numpy array, a PIL image).
            ValueError: naming what is wrong, or the image is over `MAX_LOSS_PIXELS` once enlarged and cropped.
        """
        if not isinstance(images, torch.Tensor):
            raise TypeError(
                f"`images` must be a torch tensor (B, 3, H, W) of RGB in [0, 1], got {type(images).__name__} (a numpy "
                "array: torch.from_numpy(a).permute(0, 3, 1, 2) for (B, H, W, 3), divided by 255 if uint8)"
            )
        if images.dim() != 4 or images.shape[1] != 3 or min(images.shape[0], images.shape[2], images.shape[3]) == 0:
            raise ValueError(
                f"`images` must be (B, 3, H, W) RGB in [0, 1], B, H, W >= 1, got shape {tuple(images.shape)}"
            )
        check_budget(images.shape[2], images.shape[3], self.model.image_size, self.crops)
        if not images.is_floating_point():
            raise ValueError(f"`images` must be float RGB in [0, 1], got {images.dtype} (uint8 images: divide by 255)")
        if self.check or (self.check is None and not images.requires_grad):
            problem = range_problem(images)
            if problem is not None:
                raise ValueError(f"`images` must be RGB in [0, 1]: the batch {problem}")

    def crop(self, images: torch.Tensor) -> torch.Tensor:
        """The crops the model scores: images (B, 3, H, W) -> (B * N, 3, S, S), image-major, differentiable."""
        size = self.model.image_size
        images = enlarge(images, size)
        offsets = crop_grid(images.shape[-2], images.shape[-1], size, self.crops)
        views = [images[:, :, top : top + size, left : left + size] for top, left in offsets]  # N x (B, 3, S, S)
        return torch.stack(views, dim=1).flatten(0, 1)

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """The model's scores of the images, each the mean over its crops: (B,), differentiable.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1], any H, W (a side under the model's `image_size` is enlarged).

        Raises:
            TypeError: not a tensor.
            ValueError: wrong shape, dtype, size (over `MAX_LOSS_PIXELS`) or (when checked) values.
        """
        self._checked(images)
        model = self.model
        views = self.crop(images)
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), views.dtype)
        views = views.to(dtype)
        with _eval_mode(model), values_unchecked():  # values were checked above, on the uncropped batch
            if any(p.requires_grad for p in model.parameters()):
                params = {name: p.detach() for name, p in model.named_parameters()}
                scores = functional_call(model, params, (views,), {"scene": self.scene})
            else:
                scores = model(views, self.scene)
        return scores.view(images.shape[0], -1).mean(dim=1)  # (B * N,) -> (B,)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The loss (or reward) of a batch of images.

        Args:
            images: (B, 3, H, W) float RGB in [0, 1], any H, W; a side under the model's `image_size` is enlarged
                (bicubic, as scoring does). Gradients flow back to it.

        Returns:
            `1 - score` per image (`score` with `as_reward`), in general high - quality (quality) with the model's
            `score_range` (low, high); reduced over the batch as `reduction` says: a 0-dim tensor, or (B,) for
            "none". Float32 under autocast too (the head runs in float32); the model's dtype otherwise.

        Raises:
            TypeError: `images` is not a tensor (a numpy array, say).
            ValueError: `images` is not (B, 3, H, W) float with B, H, W >= 1, is over `MAX_LOSS_PIXELS` once enlarged
                (a thin image) or cropped, or (when checked) not in [0, 1].
        """
        low, high = self.model.score_range
        s = self.scores(images)
        quality = (low + high) - s if self.model.lower_better else s
        value = quality if self.as_reward else high - quality
        if self.reduction == "none":
            return value
        return value.mean() if self.reduction == "mean" else value.sum()
