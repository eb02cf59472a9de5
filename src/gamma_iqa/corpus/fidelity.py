"""Full-reference fidelity metrics and the pseudo-MOS built from them (torch, written from the published formulas).

- MS-SSIM (Wang, Simoncelli and Bovik 2003) on luma: 11-tap Gaussian (sigma 1.5), K1 0.01, K2 0.03, five scales with
  the published weights (fewer, renormalised, when the image is too small for five). Higher is better, 1 = identical.
- GMSD (Xue et al. 2014) on luma: 2x2 average then downsampling, Prewitt gradients, c = 170 (0..255 scale); the
  standard deviation of the gradient-magnitude similarity map. Lower is better, 0 = identical.
- VIF, pixel-domain version (Sheikh and Bovik 2006) on luma: four scales with Gaussian windows of 17, 9, 5 and 3 taps
  (sigma N / 5), noise variance 2. Higher is better, 1 = identical (contrast enhancement can exceed 1).
- PSNR on RGB (dB). Higher is better, infinite = identical.
- Mean CIE76 colour difference Delta E*ab (sRGB D65 -> CIELAB). Lower is better, 0 = identical; the one metric here
  that sees hue and saturation changes, to which the luma metrics are blind.

`pseudo_mos` maps each to [0, 1] with a fixed curve (`RESCALE`; fixed, so a label never depends on which other
images are in the corpus) and averages them. Images are (H, W, 3) float arrays in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["RESCALE", "delta_e", "fidelity", "gmsd", "ms_ssim", "pseudo_mos", "psnr", "vif"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _tensor(x: np.ndarray) -> torch.Tensor:
    """(H, W, 3) in [0, 1] -> (1, 3, H, W) float64 in [0, 1]."""
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"images must be (H, W, 3), got shape {x.shape}")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).permute(2, 0, 1)[None]


def _luma(t: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) RGB in [0, 1] -> (1, 1, H, W) BT.601 luma on the 0..255 scale."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=t.dtype).view(1, 3, 1, 1)
    return 255 * (t * w).sum(1, keepdim=True)


def _check(ref: np.ndarray, img: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    if ref.shape != img.shape:
        raise ValueError(f"reference {ref.shape} and image {img.shape} differ in shape")
    return _tensor(ref), _tensor(img)


def ms_ssim(ref: np.ndarray, img: np.ndarray) -> float:
    a, b = (_luma(t) for t in _check(ref, img))
    scales = min(5, 1 + int(math.log2(min(a.shape[-2:]) / 11)))
    if scales < 1:
        raise ValueError("MS-SSIM needs images of at least 11 x 11 pixels")
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=a.dtype)
    weights = weights / weights.sum()
    g = torch.exp(-((torch.arange(11, dtype=a.dtype) - 5) ** 2) / (2 * 1.5**2))
    g = (g / g.sum()).view(1, 1, 1, 11)  # the window is separable: a row pass, then a column pass
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for j in range(scales):
        moments = F.conv2d(F.conv2d(torch.cat([a, b, a * a, b * b, a * b]), g), g.transpose(-1, -2))  # (5, 1, h, w)
        mu_a, mu_b = moments[0], moments[1]
        var_a, var_b, cov = moments[2] - mu_a**2, moments[3] - mu_b**2, moments[4] - mu_a * mu_b
        cs = ((2 * cov + c2) / (var_a + var_b + c2)).mean()
        if j == scales - 1:
            lum = ((2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)).mean()
            values.append(lum * cs)
        else:
            values.append(cs)
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    # negative structure terms (anti-correlated content) count as 0, as a fractional power of them is undefined
    return float(torch.prod(torch.stack(values).clamp(min=0) ** weights))


def gmsd(ref: np.ndarray, img: np.ndarray) -> float:
    a, b = (F.avg_pool2d(_luma(t), 2) for t in _check(ref, img))
    px = torch.tensor([[1, 0, -1]] * 3, dtype=a.dtype)[None, None] / 3  # Prewitt, (1, 1, 3, 3)
    py = px.transpose(-1, -2)

    def magnitude(t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(F.conv2d(t, px) ** 2 + F.conv2d(t, py) ** 2)

    ga, gb = magnitude(a), magnitude(b)
    c = 170.0
    gms = (2 * ga * gb + c) / (ga**2 + gb**2 + c)
    return float(gms.std(unbiased=False))


def _gaussian_filter(t: torch.Tensor, taps: int) -> torch.Tensor:
    """'valid' Gaussian filtering (sigma taps / 5) of (N, 1, H, W), separably."""
    g = torch.exp(-((torch.arange(taps, dtype=t.dtype) - taps // 2) ** 2) / (2 * (taps / 5) ** 2))
    g = (g / g.sum()).view(1, 1, 1, taps)
    return F.conv2d(F.conv2d(t, g), g.transpose(-1, -2))


def vif(ref: np.ndarray, img: np.ndarray) -> float:
    a, b = (_luma(t) for t in _check(ref, img))
    noise, eps = 2.0, 1e-10
    num = den = 0.0
    for scale in range(4):
        taps = 2 ** (4 - scale) + 1
        if scale:
            a, b = _gaussian_filter(a, taps)[..., ::2, ::2], _gaussian_filter(b, taps)[..., ::2, ::2]
        m = _gaussian_filter(torch.cat([a, b, a * a, b * b, a * b]), taps)  # (5, 1, h, w) local moments
        var_a = (m[2] - m[0] ** 2).clamp(min=0)
        var_b = (m[3] - m[1] ** 2).clamp(min=0)
        cov = m[4] - m[0] * m[1]
        # the distorted image as a gain g on the reference plus additive noise of variance sv (the GSM channel)
        g = cov / (var_a + eps)
        sv = var_b - g * cov
        flat_a, flat_b = var_a < eps, var_b < eps
        g = torch.where(flat_a | flat_b, torch.zeros_like(g), g)
        sv = torch.where(flat_a, var_b, torch.where(flat_b, torch.zeros_like(sv), sv))
        var_a = torch.where(flat_a, torch.zeros_like(var_a), var_a)
        sv = torch.where(g < 0, var_b, sv)
        g = g.clamp(min=0)
        sv = sv.clamp(min=eps)
        num += float(torch.log10(1 + g**2 * var_a / (sv + noise)).sum())
        den += float(torch.log10(1 + var_a / noise).sum())
    return 1.0 if den == 0 else num / den


def psnr(ref: np.ndarray, img: np.ndarray) -> float:
    a, b = _check(ref, img)
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def _lab(t: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) sRGB in [0, 1] -> CIELAB (D65), (1, 3, H, W)."""
    linear = torch.where(t <= 0.04045, t / 12.92, ((t + 0.055) / 1.055) ** 2.4)
    m = torch.tensor(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]],
        dtype=t.dtype,
    )
    xyz = torch.einsum("ij,bjhw->bihw", m, linear) / torch.tensor([0.95047, 1.0, 1.08883], dtype=t.dtype).view(3, 1, 1)
    eps = 216 / 24389
    f = torch.where(xyz > eps, xyz.clamp(min=eps) ** (1 / 3), (24389 / 27 * xyz + 16) / 116)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


def delta_e(ref: np.ndarray, img: np.ndarray) -> float:
    a, b = _check(ref, img)
    return float(torch.linalg.vector_norm(_lab(a) - _lab(b), dim=1).mean())


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


# metric -> (function, map of its value to [0, 1] with 1 = identical)
RESCALE: dict[str, tuple[Callable[[np.ndarray, np.ndarray], float], Callable[[float], float]]] = {
    "ms_ssim": (ms_ssim, _clip),
    "gmsd": (gmsd, lambda v: _clip(1 - v / 0.35)),  # 0.35: about the worst GMSD of strongly distorted photos
    "vif": (vif, _clip),
    "psnr": (psnr, lambda v: _clip((v - 10) / 30)),  # 10 dB -> 0, 40 dB and above -> 1
    "delta_e": (delta_e, lambda v: _clip(1 - v / 25)),  # a mean Delta E of 25 is a gross colour change
}


def fidelity(ref: np.ndarray, img: np.ndarray) -> dict[str, float]:
    """Every metric's raw value: {name: value}."""
    return {name: fn(ref, img) for name, (fn, _) in RESCALE.items()}


def pseudo_mos(values: dict[str, float]) -> float:
    """The mean of the metrics' rescaled values, in [0, 1], higher is better."""
    return sum(RESCALE[name][1](v) for name, v in values.items()) / len(values)
