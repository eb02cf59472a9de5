"""Image loading and test-time crops (PIL + torch; no torchvision).

Decoding has a per-image pixel budget, `MAX_PIXELS`: `load_image` reads the size from the file's header and refuses a
larger image before decoding it. PIL's own decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`, about 89 M pixels, a
process-wide setting that belongs to the application) is neither changed nor applied when the header is read, so photos
above it but within the budget open without PIL's warning or error. The plugins of a few formats (WebP, TIFF, MPO,
GIF frames after the first) repeat PIL's check themselves; for those, the application's setting still applies.

Crops are drawn from a generator seeded by the user's seed and the image's own pixels, so an image gets the same
crops, hence the same score, alone or in any batch, at any position, on any run, and whether it comes as a file, a
PIL image, a uint8 array or a [0, 1] tensor.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "MAX_PIXELS",
    "Crops",
    "Prepared",
    "crop_offsets",
    "image_to_tensor",
    "load_image",
    "make_crops",
    "parse_crops",
    "resize_short_side",
    "to_rgb",
]

Crops = int | str  # a number of random crops, "center" or "none"
# Largest image load_image decodes by default, in pixels (width x height): 2**30, 3 GiB as 8-bit RGB. Read at each
# call, so an application may raise it; load_image(max_pixels=...) sets it for one call.
MAX_PIXELS = 1 << 30


def parse_crops(value: str | int) -> Crops:
    """'10' -> 10, 'center' / 'none' as they are.

    Raises:
        ValueError: for anything else (naming `crops`).
    """
    if isinstance(value, int) or str(value).isdigit():
        n = int(value)
        if n >= 1:
            return n
    elif value in ("center", "none"):
        return value
    raise ValueError(f"`crops` must be a positive number, 'center' or 'none', got {value!r}")


def load_image(path: str | Path, *, max_pixels: int | None = None) -> Image.Image:
    """Decode a file to an RGB PIL image: EXIF orientation applied, alpha composited on white, any mode to RGB.

    Args:
        path: an image file in any format PIL reads.
        max_pixels: the pixel budget (width x height) for this image; None: `MAX_PIXELS` as it is at the call.

    Returns:
        The decoded image, mode RGB.

    Raises:
        ValueError: when the header's size is over the budget; the image is not decoded.
        UnidentifiedImageError: when PIL recognises no image format in the file.
        FileNotFoundError: when there is no such file.
        OSError: for a truncated or corrupt image.
    """
    budget = MAX_PIXELS if max_pixels is None else max_pixels
    with open(path, "rb") as fp, _open_header(fp, str(path)) as im:
        _check_pixel_budget(im.size, budget)
        im.load()
        im = ImageOps.exif_transpose(im)
    return to_rgb(im)


def _check_pixel_budget(size: tuple[int, int], max_pixels: int) -> None:
    """Refuse an image of `size` (width, height) with more than `max_pixels` pixels.

    Raises:
        ValueError: naming the size, the budget and how to lift it.
    """
    width, height = size
    if width * height > max_pixels:
        raise ValueError(
            f"image too large: {width} x {height} = {width * height:,} pixels, over the budget of {max_pixels:,} "
            "pixels per image (raise gamma_iqa.data.transforms.MAX_PIXELS, or pass load_image(..., max_pixels=N))"
        )


def _open_header(fp: BinaryIO, filename: str) -> ImageFile.ImageFile:
    """Identify an image and read its header, as `Image.open` does but without PIL's process-wide size check.

    `Image.open` warns above `Image.MAX_IMAGE_PIXELS` and raises above twice that; lifting that for one call would
    mean changing a global that other threads and the application rely on. The format plugins' factories are called
    directly instead, in PIL's order (the common formats first, then all), skipping a plugin that rejects the file as
    `Image.open` does. Nothing is decoded yet.

    Raises:
        UnidentifiedImageError: when no plugin accepts the file.
    """
    prefix = fp.read(16)
    tried: set[str] = set()
    for register_plugins in (Image.preinit, Image.init):
        register_plugins()
        for fmt in [f for f in Image.ID if f not in tried]:
            tried.add(fmt)
            factory, accept = Image.OPEN[fmt]
            verdict = accept(prefix) if accept else True
            if not verdict or isinstance(verdict, str):  # a string is PIL's reason for rejecting the file
                continue
            fp.seek(0)
            try:
                return factory(fp, filename)
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue  # what Image.open takes for "not this format"
    raise UnidentifiedImageError(f"cannot identify image file {filename!r}")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: palette and alpha composited on white, 16/32-bit and float greyscale rescaled, CMYK."""
    if im.mode == "RGB":
        return im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        # 16-bit data spans 0..65535; float data is taken as [0, 1]; 8-bit-range integers stay as they are.
        top = 1.0 if im.mode == "F" and a.max() <= 1.0 else 65535.0 if a.max() > 255 else 255.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    return im.convert("RGB")


def resize_short_side(im: Image.Image, size: int) -> Image.Image:
    """Resize so that the short side is `size` pixels (bilinear, long side truncated, as torchvision's Resize(size)).

    An image whose short side is already `size` is returned as it is.
    """
    w, h = im.size
    if min(w, h) == size:
        return im
    new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    return im.resize(new, Image.Resampling.BILINEAR)


def image_to_tensor(im: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [0, 1] (uint8 / 255, as ToTensor)."""
    a = torch.from_numpy(np.array(im, dtype=np.uint8, copy=True))  # (H, W, 3)
    return a.permute(2, 0, 1).float().div(255)


def _pixels_u8(image: Image.Image | torch.Tensor) -> bytes:
    """The image as HWC uint8 bytes: the canonical content that seeds its crops."""
    if isinstance(image, Image.Image):
        return image.tobytes()
    return (image * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy().tobytes()


def content_seed(image: Image.Image | torch.Tensor, seed: int) -> int:
    h, w = _size(image)
    digest = hashlib.sha256(f"{seed}:{w}x{h}:".encode())
    digest.update(_pixels_u8(image))
    return int.from_bytes(digest.digest()[:8], "little") & ((1 << 63) - 1)


def _size(image: Image.Image | torch.Tensor) -> tuple[int, int]:
    """(height, width)."""
    if isinstance(image, Image.Image):
        return image.size[1], image.size[0]
    return int(image.shape[-2]), int(image.shape[-1])


def _as_tensor(image: Image.Image | torch.Tensor) -> torch.Tensor:
    return image_to_tensor(image) if isinstance(image, Image.Image) else image.float()


@dataclass(frozen=True)
class Prepared:
    """The test-time views of one image, ready to be scored."""

    crops: torch.Tensor  # (N, 3, S, S), or (1, 3, H, W) for crops="none"
    upscaled: bool  # the image had a side under the crop size and was enlarged


def crop_offsets(height: int, width: int, size: int, n: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """Random (top, left) offsets of `n` size x size windows in a height x width image.

    Per crop the row is drawn before the column, from `generator`.
    """
    out = []
    for _ in range(n):
        top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
        out.append((top, left))
    return out


def make_crops(
    image: Image.Image | torch.Tensor,
    crops: Crops,
    size: int,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> Prepared:
    """The test-time views of one RGB image (PIL, or a (3, H, W) tensor in [0, 1]).

    N random crops, one centre crop, or the whole image ("none"). An image with a side under `size` is first
    enlarged (short side to `size`, bicubic, in torch so that files and tensors agree) and flagged. Large images are
    cut in PIL before any float tensor is made, so memory stays at the decoded image plus the crops. Random crops come
    from `generator` when given (training), else from one seeded by `seed` and the image's pixels.

    Raises:
        ValueError: for a tensor that is not (3, H, W).
    """
    if isinstance(image, torch.Tensor) and (image.dim() != 3 or image.shape[0] != 3):
        raise ValueError(f"an image tensor must be (3, H, W) RGB in [0, 1], got shape {tuple(image.shape)}")
    h, w = _size(image)
    if isinstance(crops, int) and generator is None:
        generator = torch.Generator().manual_seed(content_seed(image, seed))
    upscaled = min(h, w) < size
    if upscaled:
        scale = size / min(h, w)
        new = (max(size, round(h * scale)), max(size, round(w * scale)))
        image = F.interpolate(_as_tensor(image)[None], size=new, mode="bicubic", align_corners=False)[0].clamp(0, 1)
        h, w = new
    if crops == "none":
        return Prepared(_as_tensor(image)[None], upscaled)
    if crops == "center":
        offsets = [((h - size) // 2, (w - size) // 2)]
    else:
        offsets = crop_offsets(h, w, size, int(crops), generator)
    if isinstance(image, Image.Image):
        views = [image_to_tensor(image.crop((left, top, left + size, top + size))) for top, left in offsets]
    else:
        views = [image[:, top : top + size, left : left + size] for top, left in offsets]
    return Prepared(torch.stack(views).float(), upscaled)
