"""25 synthetic distortion types in seven families, after KADID-10k's list, written with numpy, PIL and torch.

Each distortion maps an RGB image (H, W, 3) float32 in [0, 1] and a strength in (0, 1] to an image of the same shape
and dtype; larger strengths are more severe. KADID-style levels 1..5 are strengths 0.2, 0.4, ..., 1.0
(`level_strength`), so strengths between them give the same families at unseen severities. Random parts draw from
the `rng` passed in, so a corpus is reproducible from its seed.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

__all__ = ["DISTORTIONS", "FAMILIES", "distort", "level_strength"]

Array = np.ndarray
Distortion = Callable[[Array, float, np.random.Generator], Array]


def level_strength(level: int, levels: int = 5) -> float:
    """Strength of KADID-style level `level` in 1..`levels`: evenly spaced up to 1."""
    if not 1 <= level <= levels:
        raise ValueError(f"level must be in 1..{levels}, got {level}")
    return level / levels


def _lerp(lo: float, hi: float, s: float) -> float:
    return lo + (hi - lo) * s


def _pil(x: Array) -> Image.Image:
    return Image.fromarray(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8))


def _np(img: Image.Image) -> Array:
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255


def _conv(x: Array, kernel: Array) -> Array:
    """Each channel of (H, W, C) filtered with the 2-D `kernel` (reflect padding)."""
    k = torch.from_numpy(kernel.astype(np.float32))
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[:, None]  # (C, 1, H, W)
    ph, pw = k.shape[0] // 2, k.shape[1] // 2
    t = F.pad(t, (pw, k.shape[1] - 1 - pw, ph, k.shape[0] - 1 - ph), mode="reflect")
    return F.conv2d(t, k[None, None])[:, 0].numpy().transpose(1, 2, 0)


def _gauss(x: Array, sigma: float) -> Array:
    r = max(1, int(3 * sigma + 0.5))
    g = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sigma**2))
    g /= g.sum()
    return _conv(_conv(x, g[None, :]), g[:, None])


# ---- colour spaces (sRGB values treated as linear, as the distortions only need a luma/chroma split) -----------------
_YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float32)


def _to_ycc(x: Array) -> Array:
    return x @ _YCC.T


def _from_ycc(y: Array) -> Array:
    return y @ np.linalg.inv(_YCC).T.astype(np.float32)


# ---- blurs -------------------------------------------------------------------------------------------------------
def gaussian_blur(x: Array, s: float, rng: np.random.Generator) -> Array:
    return _gauss(x, _lerp(0.4, 5.0, s))


def lens_blur(x: Array, s: float, rng: np.random.Generator) -> Array:
    r = _lerp(1.0, 8.0, s)
    n = int(np.ceil(r))
    yy, xx = np.mgrid[-n : n + 1, -n : n + 1]
    disk = (xx**2 + yy**2 <= r**2).astype(np.float32)
    return _conv(x, disk / disk.sum())


def motion_blur(x: Array, s: float, rng: np.random.Generator) -> Array:
    length = round(_lerp(3, 25, s))
    kernel = np.zeros((length, length), dtype=np.float32)
    kernel[length // 2, :] = 1
    angle = rng.uniform(0, 180)
    kernel = np.asarray(Image.fromarray(kernel).rotate(angle, resample=Image.BILINEAR), dtype=np.float32)
    return _conv(x, kernel / kernel.sum())


# ---- colour ------------------------------------------------------------------------------------------------------
def color_diffusion(x: Array, s: float, rng: np.random.Generator) -> Array:
    y = _to_ycc(x)
    y[..., 1:] = _gauss(y[..., 1:], _lerp(1.0, 12.0, s))  # blur only the chroma planes
    return _from_ycc(y)


def color_shift(x: Array, s: float, rng: np.random.Generator) -> Array:
    out = x.copy()
    c = rng.integers(3)
    shift = round(_lerp(1, 12, s) * max(x.shape[:2]) / 512)
    out[..., c] = np.roll(x[..., c], (shift, shift), axis=(0, 1))  # one channel misregistered
    return out


def color_quantization(x: Array, s: float, rng: np.random.Generator) -> Array:
    colors = round(2 ** _lerp(6, 2.3, s))  # 64 .. 5 colours, median cut
    return _np(_pil(x).quantize(colors=colors, dither=Image.Dither.NONE))


def desaturate(x: Array, s: float, rng: np.random.Generator) -> Array:
    y = _to_ycc(x)
    y[..., 1:] *= _lerp(0.75, 0.0, s)  # towards grey
    return _from_ycc(y)


def oversaturate(x: Array, s: float, rng: np.random.Generator) -> Array:
    y = _to_ycc(x)
    y[..., 1:] *= _lerp(1.5, 4.0, s)
    return _from_ycc(y)


# ---- compression -------------------------------------------------------------------------------------------------
def _codec(x: Array, fmt: str, **kw) -> Array:
    buf = io.BytesIO()
    _pil(x).save(buf, format=fmt, **kw)
    return _np(Image.open(io.BytesIO(buf.getvalue())))


def jpeg2000(x: Array, s: float, rng: np.random.Generator) -> Array:
    return _codec(x, "JPEG2000", quality_mode="rates", quality_layers=[_lerp(10, 250, s)])


def jpeg(x: Array, s: float, rng: np.random.Generator) -> Array:
    return _codec(x, "JPEG", quality=round(_lerp(43, 2, s)))


# ---- noise -------------------------------------------------------------------------------------------------------
def white_noise(x: Array, s: float, rng: np.random.Generator) -> Array:
    return x + rng.normal(0, _lerp(0.02, 0.2, s), x.shape).astype(np.float32)


def chroma_noise(x: Array, s: float, rng: np.random.Generator) -> Array:
    y = _to_ycc(x)
    y[..., 1:] += rng.normal(0, _lerp(0.02, 0.2, s), y[..., 1:].shape).astype(np.float32)
    return _from_ycc(y)


def impulse_noise(x: Array, s: float, rng: np.random.Generator) -> Array:
    out = x.copy()
    hit = rng.random(x.shape[:2]) < _lerp(0.01, 0.15, s)
    out[hit] = rng.integers(0, 2, (int(hit.sum()), 1)).astype(np.float32)  # salt and pepper
    return out


def multiplicative_noise(x: Array, s: float, rng: np.random.Generator) -> Array:
    return x * (1 + rng.normal(0, _lerp(0.05, 0.5, s), x.shape).astype(np.float32))


def denoise(x: Array, s: float, rng: np.random.Generator) -> Array:
    noisy = x + rng.normal(0, _lerp(0.03, 0.25, s), x.shape).astype(np.float32)
    return _np(_pil(noisy).filter(ImageFilter.MedianFilter(3)))  # smeared texture and noise residue


# ---- brightness --------------------------------------------------------------------------------------------------
def brighten(x: Array, s: float, rng: np.random.Generator) -> Array:
    return x ** _lerp(0.8, 0.3, s)


def darken(x: Array, s: float, rng: np.random.Generator) -> Array:
    return x ** _lerp(1.3, 4.0, s)


def mean_shift(x: Array, s: float, rng: np.random.Generator) -> Array:
    return x + (1 if rng.random() < 0.5 else -1) * _lerp(0.08, 0.4, s)


# ---- spatial -----------------------------------------------------------------------------------------------------
def jitter(x: Array, s: float, rng: np.random.Generator) -> Array:
    h, w = x.shape[:2]
    amount = _lerp(0.5, 5.0, s)
    dy = np.clip(np.arange(h)[:, None] + rng.normal(0, amount, (h, w)).round().astype(int), 0, h - 1)
    dx = np.clip(np.arange(w)[None, :] + rng.normal(0, amount, (h, w)).round().astype(int), 0, w - 1)
    return x[dy, dx]


def non_eccentricity_patch(x: Array, s: float, rng: np.random.Generator) -> Array:
    out = x.copy()
    h, w = x.shape[:2]
    p = max(4, min(h, w) // 24)
    for _ in range(round(_lerp(20, 400, s) * h * w / (512 * 384))):  # patches moved to a nearby place
        y, x0 = rng.integers(0, h - p), rng.integers(0, w - p)
        ty = int(np.clip(y + rng.integers(-2 * p, 2 * p + 1), 0, h - p))
        tx = int(np.clip(x0 + rng.integers(-2 * p, 2 * p + 1), 0, w - p))
        out[ty : ty + p, tx : tx + p] = x[y : y + p, x0 : x0 + p]
    return out


def pixelate(x: Array, s: float, rng: np.random.Generator) -> Array:
    h, w = x.shape[:2]
    f = _lerp(2, 16, s)
    small = _pil(x).resize((max(1, round(w / f)), max(1, round(h / f))), Image.BOX)
    return _np(small.resize((w, h), Image.NEAREST))


def quantization(x: Array, s: float, rng: np.random.Generator) -> Array:
    q = round(_lerp(24, 3, s))  # grey levels per channel
    return np.round(x * (q - 1)) / (q - 1)


def color_block(x: Array, s: float, rng: np.random.Generator) -> Array:
    out = x.copy()
    h, w = x.shape[:2]
    p = max(4, min(h, w) // 16)
    for _ in range(round(_lerp(2, 30, s))):
        y, x0 = rng.integers(0, h - p), rng.integers(0, w - p)
        out[y : y + p, x0 : x0 + p] = rng.random(3).astype(np.float32)
    return out


# ---- sharpness and contrast --------------------------------------------------------------------------------------
def high_sharpen(x: Array, s: float, rng: np.random.Generator) -> Array:
    return x + _lerp(1.0, 6.0, s) * (x - _gauss(x, 1.5))  # unsharp mask with overshoot


def contrast_change(x: Array, s: float, rng: np.random.Generator) -> Array:
    m = x.mean()
    factor = _lerp(0.7, 0.15, s) if rng.random() < 0.5 else _lerp(1.4, 3.0, s)
    return m + (x - m) * factor


DISTORTIONS: dict[str, Distortion] = {
    f.__name__: f
    for f in (
        gaussian_blur, lens_blur, motion_blur,
        color_diffusion, color_shift, color_quantization, desaturate, oversaturate,
        jpeg2000, jpeg,
        white_noise, chroma_noise, impulse_noise, multiplicative_noise, denoise,
        brighten, darken, mean_shift,
        jitter, non_eccentricity_patch, pixelate, quantization, color_block,
        high_sharpen, contrast_change,
    )
}  # fmt: skip
FAMILIES = {
    "blur": ("gaussian_blur", "lens_blur", "motion_blur"),
    "color": ("color_diffusion", "color_shift", "color_quantization", "desaturate", "oversaturate"),
    "compression": ("jpeg2000", "jpeg"),
    "noise": ("white_noise", "chroma_noise", "impulse_noise", "multiplicative_noise", "denoise"),
    "brightness": ("brighten", "darken", "mean_shift"),
    "spatial": ("jitter", "non_eccentricity_patch", "pixelate", "quantization", "color_block"),
    "sharpness_contrast": ("high_sharpen", "contrast_change"),
}


def distort(image: Array, kind: str, strength: float, rng: np.random.Generator) -> Array:
    """`image` (H, W, 3) float32 in [0, 1] distorted by `kind` at `strength` in (0, 1]: (H, W, 3) float32 in [0, 1]."""
    if kind not in DISTORTIONS:
        raise ValueError(f"unknown distortion {kind!r}; known: {', '.join(DISTORTIONS)}")
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    out = DISTORTIONS[kind](image.astype(np.float32, copy=False), strength, rng)
    return np.clip(out, 0, 1).astype(np.float32)
