"""Image loading and test-time crops (PIL + torch; no torchvision).

Decoding has a per-image pixel budget, `MAX_PIXELS`: `load_image` reads the size from the file's header and refuses a
larger image before decoding it. PIL's own decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`, about 89 M pixels, a
process-wide setting that belongs to the application) is neither changed nor applied when the header is read, so photos
above it but within the budget open without PIL's warning or error. The plugins of a few formats (WebP, TIFF, MPO,
GIF frames after the first) repeat PIL's check themselves; for those, PIL's error (above twice the setting) still
applies, but not its warning (the budget has already been checked).

Test-time views have a budget too, `MAX_VIEW_PIXELS`: the whole image scored with crops "none", or a thin image
enlarged until its short side reaches the crop size (an 8000 x 1 strip would become 224 x 1,792,000), must fit in it,
so memory stays bounded; a larger one is refused with a message that names the budget and how to lift it.

Colours are decoded to sRGB, the space the models were trained in, through the image's embedded ICC profile
(littleCMS, through Pillow's ImageCms) in every path: files, PIL images, and the training and evaluation readers, which
all go through `to_rgb`. The rendering intent is relative colorimetric (`RENDERING_INTENT`): colours inside sRGB's
gamut come out exactly as a colour-managed viewer shows them, and only those outside it are clipped to its edge.
Perceptual intent would also shift in-gamut colours, and the matrix profiles of cameras and phones (Adobe RGB, Display
P3, ProPhoto) have no perceptual table anyway (littleCMS then uses the colorimetric transform). A profile that moves no
colour by more than one level (an sRGB profile, the most common) leaves the pixels exactly as they are. When a profile
cannot be applied (unreadable, or of another colour space than the pixels), the image is still decoded, its pixels
taken as sRGB, and a `ColourWarning` names the image and the reason (`gamma-iqa score` prints it as one line).

A stream (standard input, a pipe) is read as bytes: `load_image` takes an encoded file's bytes as it takes a path. A
HEIC/HEIF file is read through the optional package pillow-heif when it is installed (registered on first use), and
otherwise refused with a message naming it.

In-memory images are checked as files are decoded: `array_to_image` scales uint8 and uint16 arrays by their type's
range and refuses other integer types, float values outside [0, 1] (beyond rounding) and NaN or infinity; float
(mode "F") PIL images, e.g. float TIFFs, are refused the same way rather than guessed at.

Crops are drawn from a generator seeded by the user's seed and the image's own pixels, so an image gets the same
crops, hence the same score, alone or in any batch, at any position, on any run, and whether it comes as a file, a
PIL image, a uint8 array or a [0, 1] tensor.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import io
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..models.base import RENDERING_INTENT, range_problem  # the intent: models/base.py, the ONNX sidecar reads it

__all__ = [
    "HEIF_SUFFIXES",
    "MAX_PIXELS",
    "MAX_VIEW_PIXELS",
    "RENDERING_INTENT",
    "ColourWarning",
    "Crops",
    "Prepared",
    "TruncatedImageError",
    "array_to_image",
    "ascii_digits",
    "crop_offsets",
    "enlarged_size",
    "image_size",
    "image_to_tensor",
    "image_to_uint8",
    "is_heif",
    "load_image",
    "make_crops",
    "parse_crops",
    "parse_seed",
    "resize_short_side",
    "to_rgb",
]

Crops = int | str  # a number of random crops, "center" or "none"
# Largest image load_image decodes by default, in pixels (width x height): 2**30, 3 GiB as 8-bit RGB. Read at each
# call, so an application may raise it; load_image(max_pixels=...) sets it for one call.
MAX_PIXELS = 1 << 30
# Largest view make_crops turns into one float tensor, in pixels: the whole image with crops "none", which then goes
# through the model whole (gamma-lite on the CPU peaks at about 350 bytes a pixel: 6 GB at 2**24), or a thin image
# enlarged to the crop size. 2**24 is a 16-megapixel photo, or an aspect ratio of about 330:1 at a 224-pixel crop.
# Read at each call, so an application may raise it.
MAX_VIEW_PIXELS = 1 << 24
# The major brands of an ISO base media file (bytes 8..12, after b"ftyp") that are HEIF images.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"})
# The file name suffixes of HEIF images (read by the optional package pillow-heif).
HEIF_SUFFIXES = (".heic", ".heif", ".hif")


class TruncatedImageError(OSError):
    """An image file that ends before its header does (an empty or cut-off download); the message is one line."""


class ColourWarning(UserWarning):
    """An image's embedded colour profile could not be applied: its pixels were taken as sRGB as they are.

    Attributes:
        name: the image (its path, or "image" for an in-memory one).
        reason: why the profile could not be applied.
    """

    def __init__(self, name: str, reason: str) -> None:
        """The warning for image `name`, for `reason`."""
        reason = _one_line(reason)
        super().__init__(f"{name}: embedded colour profile ignored ({reason}); scored as sRGB")
        self.name, self.reason = name, reason

    def __reduce__(self) -> tuple[type[ColourWarning], tuple[str, str]]:
        """Pickle as (name, reason), so that a DataLoader worker's warning reaches the main process whole."""
        return type(self), (self.name, self.reason)


def _one_line(text: str) -> str:
    """`text` as one printable line: control characters and line breaks (a garbage profile's bytes) as spaces."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split()) or "unreadable profile"


# More random crops than this per image is a typo, not a protocol (the paper averages 10, gamma.md §9): 1000 crops of
# 224 px are 600 MB of float32 per image already, and a huge count would hang on allocating them.
MAX_CROPS = 1000


def ascii_digits(text: str) -> bool:
    """Whether `text` is a run of 0-9 only: str.isdigit alone also takes "²" (which int() refuses) and "３"."""
    return text.isascii() and text.isdigit()


def parse_seed(value: str | int) -> int:
    """A seed of the random crops: an int, or its text in ASCII digits with an optional sign ("+5", "-3", " 7 ").

    Stricter than int(), which also takes "7_0" and "３": a seed reads the same in every tool.

    Raises:
        ValueError: anything else ("7_0", "３", "1.5", "", a bool, over 4300 digits) (naming `seed`).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    digits = text[1:] if text[:1] in ("+", "-") else text
    try:
        if ascii_digits(digits):
            return int(text)
    except ValueError:  # over Python's 4300-digit limit of int()
        pass
    raise ValueError(f"`seed` must be a whole number, got {value!r}")


def parse_crops(value: str | int, *, most: int | None = MAX_CROPS) -> Crops:
    """'10' -> 10, 'center' / 'none' as they are.

    Raises:
        ValueError: for anything else, or more than `most` crops (default MAX_CROPS; None: no limit, for a caller
            with its own) (naming `crops`).
    """
    if (isinstance(value, int) and not isinstance(value, bool)) or ascii_digits(str(value)):
        n = int(value)
        if most is not None and n > most:
            raise ValueError(f"`crops` must be at most {most} per image, got {value}")
        if n >= 1:
            return n
    elif value in ("center", "none"):
        return value
    raise ValueError(f"`crops` must be a positive number, 'center' or 'none', got {value!r}")


def load_image(path: str | Path | bytes, *, max_pixels: int | None = None) -> Image.Image:
    """Decode a file to an sRGB PIL image.

    EXIF orientation applied, embedded colour profile applied (see `to_rgb`), alpha composited on white, any mode to
    RGB.

    Args:
        path: an image file in any format PIL reads, or the bytes of one (e.g. read from standard input).
        max_pixels: the pixel budget (width x height) for this image; None: `MAX_PIXELS` as it is at the call.

    Returns:
        The decoded image, mode RGB.

    Raises:
        ValueError: when the header's size is over the budget (the image is not decoded), or for a HEIC/HEIF file
            without the optional package that reads it (the message names it).
        UnidentifiedImageError: when PIL recognises no image format in the file.
        FileNotFoundError: when there is no such file.
        TruncatedImageError: for a file shorter than its header (an OSError).
        OSError: for a truncated or corrupt image.
    """
    budget = MAX_PIXELS if max_pixels is None else max_pixels
    name = "<bytes>" if isinstance(path, bytes) else str(path)
    source = io.BytesIO(path) if isinstance(path, bytes) else open(path, "rb")  # noqa: SIM115 (closed by `with`)
    # PIL's warnings on a damaged file ("Corrupt EXIF data", "Truncated File Read") are held back: they are noise
    # beside the error of a file that then fails, and are shown as they were for one that decodes.
    with warnings.catch_warnings(record=True) as caught, source as fp, _open_header(fp, name) as im:
        warnings.simplefilter("always")
        _check_pixel_budget(im.size, budget)
        # A plugin repeating PIL's check warns between its limit and twice it: our budget has been checked already.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im.load()
        im = ImageOps.exif_transpose(im)
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return to_rgb(im, name=name)


def image_size(data: bytes) -> tuple[int, int]:
    """The (width, height) an encoded image's header gives, before EXIF orientation; nothing is decoded.

    Raises:
        UnidentifiedImageError, TruncatedImageError: as `load_image`, for bytes that are no readable image.
    """
    with _open_header(io.BytesIO(data), "<bytes>") as im:
        return im.size


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
        TruncatedImageError: when the file is shorter than any image header, or a format recognised by its first
            bytes (its signature) cannot read its header.
    """
    prefix = fp.read(16)
    tried: set[str] = set()
    recognised: list[str] = []  # formats whose signature the file carries
    for register_plugins in (Image.preinit, Image.init, functools.partial(_register_heif, prefix, filename)):
        register_plugins()
        for fmt in [f for f in Image.ID if f not in tried]:
            tried.add(fmt)
            factory, accept = Image.OPEN[fmt]
            if not _accepts(accept, prefix):
                continue
            recognised += [fmt] if accept else []
            fp.seek(0)
            try:
                return factory(fp, filename)
            except (SyntaxError, IndexError, TypeError, struct.error, EOFError):
                continue  # what Image.open takes for "not this format"
    size = fp.seek(0, io.SEEK_END)
    if recognised:
        raise TruncatedImageError(
            f"truncated or corrupt {recognised[0]} image: its header cannot be read ({size:,} bytes)"
        )
    if size < len(b"\x89PNG\r\n\x1a\n") + 8:  # shorter than the smallest header (a PNG signature and a chunk's head)
        s = "" if size == 1 else "s"
        raise TruncatedImageError(f"truncated or empty file: {size} byte{s}, too short for an image")
    raise UnidentifiedImageError(f"cannot identify image file {filename!r}")


def _accepts(accept: Callable[[bytes], Any] | None, prefix: bytes) -> bool:
    """Whether a plugin's signature check `accept` (None: none) lets it try a file beginning with `prefix`.

    A check that fails on a short prefix (PIL's BMP check unpacks 4 bytes) rejects it; a string is PIL's reason for
    rejecting the file.
    """
    if accept is None:
        return True
    try:
        verdict = accept(prefix)
    except (struct.error, IndexError, ValueError):
        return False
    return bool(verdict) and not isinstance(verdict, str)


def is_heif(prefix: bytes, filename: str) -> bool:
    """Whether a file is a HEIF image (HEIC, HEIF), by its first 16 bytes `prefix` or else its name's suffix."""
    return (prefix[4:8] == b"ftyp" and prefix[8:12] in _HEIF_BRANDS) or filename.lower().endswith(HEIF_SUFFIXES)


def _register_heif(prefix: bytes, filename: str) -> None:
    """For a HEIF file no plugin read: register pillow-heif's opener (once), or say that it is needed.

    Raises:
        ValueError: the file is a HEIF image and pillow-heif is not installed (naming the package).
    """
    if not is_heif(prefix, filename):
        return
    try:
        importlib.import_module("pillow_heif").register_heif_opener()  # idempotent; adds its plugin to Image.ID
    except ImportError:
        raise ValueError(
            "HEIC/HEIF image: Pillow reads it only with the optional package pillow-heif (pip install pillow-heif)"
        ) from None


def to_rgb(im: Image.Image, *, name: str = "image") -> Image.Image:
    """Any PIL image to sRGB, mode RGB.

    Its embedded ICC profile applied, palette and alpha composited on white, 16/32-bit and float greyscale rescaled,
    CMYK converted. The profile (`im.info["icc_profile"]`) is applied with `RENDERING_INTENT`; one that moves no
    colour by more than one level (sRGB) leaves the pixels as they are. One that cannot be applied warns
    (`ColourWarning`, naming `name`) and the pixels are taken as sRGB. 16-bit greyscale ("I;16" modes) spans its
    type's 0..65535; 32-bit integer greyscale ("I") is taken as 16-bit when some value is over 255, else as 8-bit;
    float greyscale ("F", e.g. a float TIFF) must be in [0, 1].

    Raises:
        ValueError: a float image with NaN or infinite values, or values outside [0, 1] beyond rounding.
    """
    icc = im.info.get("icc_profile")
    if not icc:
        return _plain_rgb(im)
    try:
        return _apply_profile(im, bytes(icc))
    except _ProfileError as e:
        warnings.warn(ColourWarning(name, str(e)), stacklevel=2)
        return _plain_rgb(im)


class _ProfileError(Exception):
    """Why an embedded profile cannot be applied (one line)."""


_ICC_HEADER = 128  # bytes of an ICC profile's fixed header
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})


def _apply_profile(im: Image.Image, icc: bytes) -> Image.Image:
    """`im` in sRGB through its ICC profile `icc`: RGB profiles on colour images, grey ones on greyscale, CMYK.

    Raises:
        _ProfileError: the profile cannot be read or built into a transform, or its colour space is not the pixels'.
    """
    if len(icc) < _ICC_HEADER or icc[36:40] != b"acsp":  # every ICC profile's header carries this signature
        raise _ProfileError(f"not an ICC profile ({len(icc):,} bytes without the header's 'acsp' signature)")
    space = icc[16:20]  # the ICC header's data colour space signature
    grey = im.mode in _GREY_MODES
    if space == b"RGB " and not grey and im.mode != "CMYK":
        pixels, mode = _plain_rgb(im), "RGB"
    elif space == b"GRAY" and grey:
        pixels, mode = _plain_rgb(im).convert("L"), "L"  # R = G = B: back to L exactly
    elif space == b"CMYK" and im.mode == "CMYK":
        pixels, mode = im, "CMYK"
    else:
        found = space.decode("ascii").strip() if space.isascii() and space.decode("ascii").isprintable() else ""
        found = found or "unknown"
        raise _ProfileError(f"a {found} profile on an image of mode {im.mode}")
    transform = _transform(icc, mode)
    if transform is None:  # an sRGB profile: the pixels stay exactly as they are
        return pixels if mode == "RGB" else pixels.convert("RGB")
    try:
        return transform.apply(pixels)
    except Exception as e:  # littleCMS's own errors (ImageCms.PyCMSError and others) become the warning's reason
        raise _ProfileError(f"littleCMS: {e}") from None


@functools.lru_cache(maxsize=16)
def _transform(icc: bytes, mode: str) -> Any:
    """The ImageCms transform from profile `icc` (pixels of mode RGB, L or CMYK) to sRGB RGB; None for an identity.

    Cached: the photos of one camera share a profile. An RGB or grey profile that moves no colour of a probe (every
    colour with channels in steps of 17, or every grey level) by more than one level is an identity.

    Raises:
        _ProfileError: the profile cannot be read, or littleCMS cannot build the transform.
    """
    try:
        from PIL import ImageCms  # needs Pillow's littleCMS binding, missing from some builds

        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        transform = ImageCms.buildTransform(source, srgb, mode, "RGB", renderingIntent=RENDERING_INTENT)
    except Exception as e:  # an unreadable profile: ImageCms.PyCMSError, OSError, ImportError...
        raise _ProfileError(f"{type(e).__name__}: {str(e).strip() or 'unreadable profile'}") from None
    if mode == "CMYK":
        return transform
    probe = _probe(mode)
    moved = np.abs(np.asarray(transform.apply(probe), np.int16) - np.asarray(probe.convert("RGB"), np.int16))
    return None if moved.max() <= 1 else transform


def _probe(mode: str) -> Image.Image:
    """Probe colours of `mode`: every RGB colour with channels in steps of 17 (16 x 256 pixels), or all 256 greys."""
    if mode == "L":
        return Image.fromarray(np.arange(256, dtype=np.uint8)[None, :], "L")
    levels = np.arange(0, 256, 17, dtype=np.uint8)
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    return Image.fromarray(np.stack([r, g, b], -1).reshape(16, 256, 3), "RGB")


def _plain_rgb(im: Image.Image) -> Image.Image:
    """`im` in RGB by its mode alone (no profile): see `to_rgb`."""
    if im.mode == "RGB":
        return im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode.startswith("I") or im.mode == "F":
        return Image.fromarray(_grey_to_u8(im), "L").convert("RGB")
    return im.convert("RGB")


def _grey_to_u8(im: Image.Image) -> np.ndarray:
    """The (H, W) uint8 pixels of an integer ("I", "I;16"...) or float ("F") greyscale image; see `to_rgb`."""
    a = np.array(im, dtype=np.float32 if im.mode == "F" else np.float64)  # a writable copy: torch shares it
    if im.mode == "F":
        problem = range_problem(torch.from_numpy(a))
        if problem is not None:
            raise ValueError(f"a float (mode F) image {problem}; save it as 8 or 16 bits, or scale it to [0, 1]")
        top = 1.0
    elif im.mode.startswith("I;16"):
        top = 65535.0
    else:
        top = 65535.0 if a.max() > 255 else 255.0
    return np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)


def array_to_image(source: np.ndarray | torch.Tensor) -> Image.Image | torch.Tensor:
    """An in-memory image as `make_crops` takes it, checked and scaled: a PIL RGB image or (3, H, W) float in [0, 1].

    Integer pixels are scaled by their type's range: uint8 by 255, uint16 by 65535. Other integer types (int64,
    int32, uint32, bool...) have no image range and are refused, as are float values outside [0, 1] by more than
    rounding (`models.base.UNIT_TOLERANCE`; within it they are clamped) and NaN or infinity.

    Args:
        source: a numpy array, channels last: uint8 (H, W) or (H, W, 1) grey, (H, W, 3) RGB or (H, W, 4) RGBA, or
            uint16 / float (H, W) or (H, W, 1) grey or (H, W, 3) RGB; or a torch tensor (3, H, W), uint8, uint16 or
            float.

    Returns:
        A PIL RGB image for uint8 arrays, else a (3, H, W) float32 tensor in [0, 1] on the CPU.

    Raises:
        ValueError: the dtype, the shape or the values are not an image's; the message says which and what to pass.
    """
    kind = "numpy" if isinstance(source, np.ndarray) else "tensor"
    if isinstance(source, np.ndarray):
        _check_array_layout(source)
        if source.ndim == 3 and source.shape[2] == 1:  # (H, W, 1): greyscale with its channel axis
            source = source[:, :, 0]
        if source.dtype == np.uint8:
            return to_rgb(Image.fromarray(source))
        if source.ndim == 2:  # greyscale: the same value in R, G and B
            source = np.repeat(source[:, :, None], 3, axis=2)
        t = torch.from_numpy(np.ascontiguousarray(source)).permute(2, 0, 1)
    else:
        if source.dim() != 3 or source.shape[0] != 3:
            raise ValueError(f"an image tensor must be (3, H, W) RGB, got shape {tuple(source.shape)}")
        t = source.detach().cpu()
    return _unit_float(t, kind)


def _check_array_layout(a: np.ndarray) -> None:
    """Refuse a numpy array that is not an image in the (H, W) or (H, W, C) layout `array_to_image` takes.

    Raises:
        ValueError: a channels-first (3, H, W) or (4, H, W) array (naming its shape and the transpose that makes it
            HWC), or any other shape than those `array_to_image` lists.
    """
    shape = tuple(a.shape)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"a numpy image is (H, W, C), channels last; got shape {shape}, which looks channels-first (C, H, W): "
            "pass array.transpose(1, 2, 0)"
        )
    hwc = a.ndim == 2 or (a.ndim == 3 and a.shape[2] in ((1, 3, 4) if a.dtype == np.uint8 else (1, 3)))
    if not hwc:
        allowed = (
            "(H, W), (H, W, 1), (H, W, 3) or (H, W, 4)" if a.dtype == np.uint8 else "(H, W), (H, W, 1) or (H, W, 3)"
        )
        raise ValueError(f"a numpy {a.dtype} image must be {allowed}; got shape {shape}")


def _unit_float(t: torch.Tensor, kind: str) -> torch.Tensor:
    """(3, H, W) pixels of any dtype -> float32 in [0, 1] (see `array_to_image`); `kind` names the input's type."""
    if t.dtype in (torch.uint8, torch.uint16):
        # float32 division, as image_to_tensor: uint16 a * 257 gives the very floats of uint8 a, as files do
        return t.to(torch.float32).div(255.0 if t.dtype == torch.uint8 else 65535.0)
    if not t.is_floating_point():
        dtype = str(t.dtype).removeprefix("torch.")
        raise ValueError(
            f"a {kind} image of dtype {dtype} has no defined range: give uint8 (0..255), uint16 (0..65535) or float "
            "in [0, 1] (integers holding 0..255: convert them to uint8)"
        )
    t = t.float()
    problem = range_problem(t)
    if problem is not None:
        raise ValueError(f"a float image {problem}")
    return t.clamp(0, 1)


def resize_short_side(im: Image.Image, size: int) -> Image.Image:
    """Resize so that the short side is `size` pixels (bilinear, long side truncated, as torchvision's Resize(size)).

    An image whose short side is already `size` is returned as it is.
    """
    w, h = im.size
    if min(w, h) == size:
        return im
    new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    return im.resize(new, Image.Resampling.BILINEAR)


def image_to_uint8(im: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) uint8 pixels (a view of an (H, W, 3) array: `image_to_tensor` before the scaling)."""
    return torch.from_numpy(np.array(im, dtype=np.uint8, copy=True)).permute(2, 0, 1)


def image_to_tensor(im: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [0, 1] (uint8 / 255, as ToTensor)."""
    return image_to_uint8(im).float().div(255)


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


def _as_tensor(image: Image.Image | torch.Tensor, uint8: bool = False) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]; a PIL image's uint8 pixels instead when `uint8`."""
    if isinstance(image, Image.Image):
        return image_to_uint8(image) if uint8 else image_to_tensor(image)
    return image.float()


def _check_view(size: tuple[int, int], enlarged: tuple[int, int] | None, crop: int) -> None:
    """Refuse a view over `MAX_VIEW_PIXELS`: an image of `size` (h, w) `enlarged` to (h, w), or whole when None.

    Raises:
        ValueError: naming the sizes, the budget and how to lift it.
    """
    budget = MAX_VIEW_PIXELS
    (h, w), (eh, ew) = size, enlarged or size
    if eh * ew <= budget:
        return
    lift = "raise gamma_iqa.data.transforms.MAX_VIEW_PIXELS"
    if enlarged is None:
        raise ValueError(
            f"image too large to score whole (crops 'none'): {w} x {h} = {w * h:,} pixels, over the budget of "
            f"{budget:,} pixels per view (use random or 'center' crops, or {lift})"
        )
    raise ValueError(
        f"image too thin: {w} x {h} pixels would be enlarged to {ew} x {eh} = {ew * eh:,} pixels to reach the "
        f"{crop}-pixel crop side, over the budget of {budget:,} pixels per view (pad or crop it to a less extreme "
        f"aspect ratio, or {lift})"
    )


@dataclass(frozen=True)
class Prepared:
    """The test-time views of one image, ready to be scored."""

    crops: torch.Tensor  # (N, 3, S, S), or (1, 3, H, W) for crops="none"; float32 in [0, 1], or uint8 0..255
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


def enlarged_size(height: int, width: int, size: int) -> tuple[int, int] | None:
    """The (height, width) an image with a side under `size` is enlarged to before cropping; None for the others."""
    if min(height, width) >= size:
        return None
    scale = size / min(height, width)
    return max(size, round(height * scale)), max(size, round(width * scale))


def make_crops(
    image: Image.Image | torch.Tensor,
    crops: Crops,
    size: int,
    seed: int = 0,
    generator: torch.Generator | None = None,
    *,
    uint8: bool = False,
) -> Prepared:
    """The test-time views of one RGB image (PIL, or a (3, H, W) tensor in [0, 1]).

    N random crops, one centre crop, or the whole image ("none"). An image with a side under `size` is first
    enlarged (short side to `size`, bicubic, in torch so that files and tensors agree) and flagged. Large images are
    cut in PIL before any float tensor is made, so memory stays at the decoded image plus the crops. Random crops come
    from `generator` when given (training), else from one seeded by `seed` and the image's pixels.

    With `uint8`, the crops of a PIL image that is not enlarged stay its uint8 pixels (0..255, a quarter of the bytes
    to move; the scorer scales them on its device to the very floats of `image_to_tensor`); other views are float.

    Raises:
        ValueError: for a tensor that is not (3, H, W); for an image whose whole view ("none") or enlarged view (a
            side under `size`) is over `MAX_VIEW_PIXELS` (naming the budget and how to lift it).
    """
    if isinstance(image, torch.Tensor) and (image.dim() != 3 or image.shape[0] != 3):
        raise ValueError(f"an image tensor must be (3, H, W) RGB in [0, 1], got shape {tuple(image.shape)}")
    h, w = _size(image)
    if isinstance(crops, int) and generator is None:
        generator = torch.Generator().manual_seed(content_seed(image, seed))
    new = enlarged_size(h, w, size)
    upscaled = new is not None
    if new is not None:
        _check_view((h, w), new, size)
        image = F.interpolate(_as_tensor(image)[None], size=new, mode="bicubic", align_corners=False)[0].clamp(0, 1)
        h, w = new
    if crops == "none":
        if not upscaled:
            _check_view((h, w), None, size)
        return Prepared(_as_tensor(image, uint8)[None], upscaled)
    if crops == "center":
        offsets = [((h - size) // 2, (w - size) // 2)]
    else:
        offsets = crop_offsets(h, w, size, int(crops), generator)
    if isinstance(image, Image.Image):
        views = [_as_tensor(image.crop((left, top, left + size, top + size)), uint8) for top, left in offsets]
        return Prepared(torch.stack(views), upscaled)  # float32, or uint8 when `uint8`
    views = [image[:, top : top + size, left : left + size] for top, left in offsets]
    return Prepared(torch.stack(views).float(), upscaled)
