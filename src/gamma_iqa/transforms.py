"""Image loading and test-time crops (PIL + torch; no torchvision).

Crops are drawn from a generator seeded by the user's seed and the image's own pixels, so an image gets the same
crops, hence the same score, alone or in any batch, at any position, on any run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = ["Crops", "crop_offsets", "image_to_tensor", "load_image", "make_crops", "parse_crops", "resize_short_side"]

Crops = int | str  # a number of random crops, "center" or "none"


def parse_crops(value: str | int) -> Crops:
    """'10' -> 10, 'center' / 'none' as they are; anything else is an error."""
    if isinstance(value, int) or str(value).isdigit():
        n = int(value)
        if n < 1:
            raise ValueError(f"--crops must be a positive number, 'center' or 'none', got {value!r}")
        return n
    if value in ("center", "none"):
        return value
    raise ValueError(f"--crops must be a positive number, 'center' or 'none', got {value!r}")


def load_image(path: str | Path) -> Image.Image:
    """Decode a file to an RGB PIL image: EXIF orientation applied, alpha composited on white, any mode to RGB."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
    return to_rgb(im)


def to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clip at 255.
        a = np.asarray(im, dtype=np.float64)
        a = np.clip(a / (65535.0 if a.max() > 255 else 255.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    return im.convert("RGB")


def resize_short_side(im: Image.Image, size: int) -> Image.Image:
    """Resize so that the short side is `size` (bilinear, long side truncated, as torchvision's Resize(size));
    an image whose short side is already `size` is returned as it is."""
    w, h = im.size
    if min(w, h) == size:
        return im
    new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    return im.resize(new, Image.Resampling.BILINEAR)


def image_to_tensor(im: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [0, 1] (uint8 / 255, as ToTensor)."""
    a = torch.from_numpy(np.array(im, dtype=np.uint8, copy=True))  # (H, W, 3)
    return a.permute(2, 0, 1).float().div(255)


@dataclass(frozen=True)
class Prepared:
    crops: torch.Tensor  # (N, 3, S, S), or (1, 3, H, W) for crops="none"
    upscaled: bool  # the image had a side under the crop size and was enlarged


def _content_seed(im: Image.Image, seed: int) -> int:
    h = hashlib.sha256()
    h.update(f"{seed}:{im.size[0]}x{im.size[1]}:".encode())
    h.update(im.tobytes())
    return int.from_bytes(h.digest()[:8], "little") & ((1 << 63) - 1)


def crop_offsets(height: int, width: int, size: int, n: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """n random (top, left) offsets of a size x size window; per crop the row is drawn before the column."""
    out = []
    for _ in range(n):
        top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
        out.append((top, left))
    return out


def make_crops(im: Image.Image, crops: Crops, size: int, seed: int = 0) -> Prepared:
    """The test-time views of one RGB image: N random crops, one centre crop, or the whole image ("none").

    An image with a side under `size` is first enlarged (short side to `size`, bicubic) and flagged.
    """
    w, h = im.size
    upscaled = min(w, h) < size
    if upscaled:
        scale = size / min(w, h)
        im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
        w, h = im.size
    if crops == "none":
        return Prepared(image_to_tensor(im)[None], upscaled)
    if crops == "center":
        offsets = [((h - size) // 2, (w - size) // 2)]
    else:
        generator = torch.Generator().manual_seed(_content_seed(im, seed))
        offsets = crop_offsets(h, w, size, int(crops), generator)
    # Cut in PIL first so that a huge image never becomes a huge float tensor.
    views = [image_to_tensor(im.crop((left, top, left + size, top + size))) for top, left in offsets]
    return Prepared(torch.stack(views), upscaled)
