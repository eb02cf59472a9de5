"""Full-reference fidelity metrics and the pseudo-MOS built from them.

- MS-SSIM (Wang, Simoncelli and Bovik 2003) on luma: 11-tap Gaussian (sigma 1.5), K1 0.01, K2 0.03, five scales with
  the published weights (fewer, renormalised, when the image is too small for five). Higher is better, 1 = identical.
  Our own torch code: torchmetrics' MS-SSIM needs sides of 160 pixels or more for five scales (with no fallback to
  fewer) and pads its windows, and differs from this one by up to 0.022 (mean 0.0024) on distorted photos; piq's needs
  torchvision. One deliberate simplification of the published formula: the coarsest scale is the product of the
  means of the luminance and contrast-structure maps, not the mean of their product (up to 0.0018 apart, mean 5e-5);
  kept, so that labels stay those the shipped model was trained on.
- GMSD (Xue et al. 2014) on luma: 2x2 average then downsampling, Prewitt gradients, c = 170 (0..255 scale); the
  standard deviation of the gradient-magnitude similarity map. Lower is better, 0 = identical. Our own torch code: no
  maintained implementation without torchvision (piq and piqa both require it).
- VIF, pixel-domain version (Sheikh and Bovik 2006) on luma: torchmetrics' `visual_information_fidelity` (four scales,
  Gaussian windows of 17, 9, 5 and 3 taps, noise variance 2; in float64 it agreed with our former implementation to
  2e-13), computed in float32 since gamma-lite 2, 14 times faster: up to 4.7e-4 from float64 (pseudo-MOS 9.4e-5) on the
  sample photo at 256 px, plain and with a flat grey patch, 25 types at strengths 0.2, 0.6 and 1.0.
  Higher is better, 1 = identical (contrast enhancement can exceed 1).
- PSNR on RGB (dB): scikit-image's `peak_signal_noise_ratio` with a data range of 1. Higher is better, infinite =
  identical.
- Mean CIE76 colour difference Delta E*ab: scikit-image's `rgb2lab` (sRGB, D65, 2-degree observer) and
  `deltaE_cie76`; it differs from our former sRGB -> CIELAB code by at most 9e-4 (mean 1.5e-4) on distorted photos,
  from scikit-image's rounder matrix and CIE constants. Lower is better, 0 = identical; the one metric here that sees
  hue and saturation changes, to which the luma metrics are blind.

`pseudo_mos` maps each to [0, 1] with a fixed curve (`RESCALE`; fixed, so a label never depends on which other photos
are in the corpus) and averages them. Moving PSNR, CIE76 and VIF to the libraries moved the pseudo-MOS, as the scripts
round it to 6 decimals, by at most 4e-6 (on 300 distorted versions of the sample photo, 133 changed in the sixth
decimal); float32 VIF moves it by up to 1e-4 more: corpora built before and after differ by that much.

The top of the scale and the order within a photo. Every curve of `RESCALE` gives 1 for identical images, so
`pseudo_mos` is at most `TOP` = 1.0 and the untouched photo gets exactly that (`corpus.pipeline.untouched`): it is the
best any version of it can be, and its label is the one value no distorted version reaches (a version with pixels equal
to the photo's, e.g. `desaturate` of a grey photo, is the one exception: `label_violations` reports it).
`label_violations` checks, for every (photo, type) group, that the label is non-increasing in strength and below the
untouched photo's. On the sample photo and two photo-like images (256 px long side, 25 types x strengths 0 (untouched),
0.2 .. 1.0; tests/test_labels.py runs the same check at 96 px) the raw pseudo-MOS broke the order once in 375 steps
(none against the untouched photo: the mildest version scored 0.97 at most), with `pixelate` at strength 1.0 on a
synthetic image of 256 x 192 pixels, 0.037 above strength 0.8, as 16-pixel blocks then line up with the image's own
edges so the FR metrics see less change, though the blocks are visibly coarser. The distortion is stronger there; the
metrics' combination is what misorders it. So labels are fitted, per (photo, type) group, by isotonic regression over
strength (`monotone`, pool adjacent violators, least squares): it leaves every ordered group untouched, moves a
misordered run the least (to its mean: a tie, which says only that the metrics cannot tell those levels apart) and needs
no new constants; a re-weighting of the metrics would move every label in the corpus to repair a rare alignment
artefact, and a change of the distortion would change what the corpus shows. The raw value is kept as `fr_mos`. Labels
depend on the other strengths of their group only where the raw order breaks.

Images are (H, W, 3) float arrays in [0, 1]. scikit-image and torchmetrics are the optional extra `corpus`
(`pip install 'gamma-iqa[corpus]'`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

try:
    from skimage.color import deltaE_cie76, rgb2lab
    from skimage.metrics import peak_signal_noise_ratio
    from torchmetrics.functional.image import visual_information_fidelity
except ImportError as e:  # the corpus tooling only: the rest of gamma_iqa runs without these
    raise ImportError(f"gamma_iqa.corpus needs its optional extra: pip install 'gamma-iqa[corpus]' ({e})") from e

__all__ = [
    "RESCALE",
    "TOP",
    "Violation",
    "delta_e",
    "fidelity",
    "gmsd",
    "label_violations",
    "monotone",
    "ms_ssim",
    "pseudo_mos",
    "psnr",
    "vif",
]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
TOP = 1.0  # the pseudo-MOS of identical images, the most `pseudo_mos` gives: the untouched photo's label


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
    """Both images as (1, 3, H, W) float64 tensors; `ValueError` when they are not (H, W, 3) of one shape."""
    if ref.shape != img.shape:
        raise ValueError(f"reference {ref.shape} and image {img.shape} differ in shape")
    return _tensor(ref), _tensor(img)


def ms_ssim(ref: np.ndarray, img: np.ndarray) -> float:
    """MS-SSIM of `img` against `ref` on luma, in [0, 1], 1 = identical.

    Raises:
        ValueError: The images differ in shape, are not (H, W, 3), or are smaller than 11 x 11 pixels.
    """
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
    """GMSD of `img` against `ref` on luma, 0 = identical (about 0.35 for strongly distorted photos)."""
    a, b = (F.avg_pool2d(_luma(t), 2) for t in _check(ref, img))
    px = torch.tensor([[1, 0, -1]] * 3, dtype=a.dtype)[None, None] / 3  # Prewitt, (1, 1, 3, 3)
    py = px.transpose(-1, -2)

    def magnitude(t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(F.conv2d(t, px) ** 2 + F.conv2d(t, py) ** 2)

    ga, gb = magnitude(a), magnitude(b)
    c = 170.0
    gms = (2 * ga * gb + c) / (ga**2 + gb**2 + c)
    return float(gms.std(unbiased=False))


def vif(ref: np.ndarray, img: np.ndarray) -> float:
    """Pixel-domain VIF of `img` against `ref` on luma (torchmetrics), 1 = identical.

    Computed in float32: torchmetrics' dense 17 x 17 windows take 14 times longer in float64 on CPU (2.7 s against
    0.19 s for a 606 x 517 photo), which made VIF nine tenths of a corpus build.
    """
    a, b = (_luma(t).float() for t in _check(ref, img))
    return float(visual_information_fidelity(b, a))


def psnr(ref: np.ndarray, img: np.ndarray) -> float:
    """PSNR of `img` against `ref` on RGB in dB (scikit-image), infinite for identical images."""
    _check(ref, img)
    ref, img = ref.astype(np.float64), img.astype(np.float64)
    if np.array_equal(ref, img):  # scikit-image would divide by a zero error, with a warning
        return math.inf
    return float(peak_signal_noise_ratio(ref, img, data_range=1.0))


def delta_e(ref: np.ndarray, img: np.ndarray) -> float:
    """Mean CIE76 colour difference Delta E*ab of `img` against `ref` (scikit-image), 0 for identical images."""
    _check(ref, img)
    return float(deltaE_cie76(rgb2lab(ref.astype(np.float64)), rgb2lab(img.astype(np.float64))).mean())


def _clip(x: float) -> float:
    """`x` clipped to [0, 1]."""
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
    """Every metric's raw value for `img` against its pristine `ref`: {name: value}, in `RESCALE`'s order.

    Raises:
        ValueError: The images differ in shape or are not (H, W, 3).
    """
    return {name: fn(ref, img) for name, (fn, _) in RESCALE.items()}


def pseudo_mos(values: dict[str, float]) -> float:
    """The mean of the metrics' rescaled values, in [0, 1], higher is better."""
    return sum(RESCALE[name][1](v) for name, v in values.items()) / len(values)


def monotone(strengths: Sequence[float], labels: Sequence[float]) -> list[float]:
    """`labels` fitted to be non-increasing in strength (isotonic regression, pool adjacent violators).

    Args:
        strengths: The versions' strengths, in any order (distinct).
        labels: Their pseudo-MOS, one per strength.

    Returns:
        The fitted labels in the order given: the least-squares non-increasing fit, equal to `labels` where they
        are already ordered; a misordered run becomes its mean.
    """
    order = sorted(range(len(strengths)), key=lambda i: strengths[i])
    blocks: list[list[float]] = []  # [sum, count] of pooled runs, mildest first
    for i in order:
        blocks.append([labels[i], 1])
        while len(blocks) > 1 and blocks[-1][0] / blocks[-1][1] > blocks[-2][0] / blocks[-2][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    fitted = [total / count for total, count in blocks for _ in range(int(count))]
    out = [0.0] * len(order)
    for i, value in zip(order, fitted, strict=True):
        out[i] = value
    return out


@dataclass(frozen=True)
class Violation:
    """A break of the label order within a (photo, type) group.

    Attributes:
        photo: The photo's id.
        distortion: The distortion type.
        weaker: The milder strength (0: the untouched photo).
        stronger: The stronger strength.
        excess: How far the stronger version's label is above the milder one's (>= 0; 0 only for a tie with the
            untouched photo).
    """

    photo: str
    distortion: str
    weaker: float
    stronger: float
    excess: float


def label_violations(rows: Iterable[tuple[str, str, float, float]]) -> list[Violation]:
    """Every break of the label order: a stronger version above the next milder one, or any at or above untouched.

    Args:
        rows: (photo id, distortion type, strength, label) per version; the untouched photo is the row of strength
            0 (type "none"), and `TOP` where a photo has none.

    Returns:
        The violations, by photo and type; the next milder version of the mildest one is the untouched photo.
    """
    top: dict[str, float] = {}
    groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for photo, kind, strength, label in rows:
        if strength == 0:
            top[photo] = label
        else:
            groups.setdefault((photo, kind), []).append((strength, label))
    found = []
    for (photo, kind), versions in sorted(groups.items()):
        previous = (0.0, top.get(photo, TOP))
        for strength, label in sorted(versions):
            if label > previous[1] or (previous[0] == 0 and label >= previous[1]):
                found.append(Violation(photo, kind, previous[0], strength, label - previous[1]))
            previous = (strength, label)
    return found
