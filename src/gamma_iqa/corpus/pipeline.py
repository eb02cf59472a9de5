"""Distort-and-label: every distorted version of a photo, stored, and labelled with its pseudo-MOS.

scripts/build_corpus.py (the training corpus) and scripts/evaluate_default.py (the unseen-photo evaluation) both call
`distort_and_label`, so the two label exactly alike by construction: the same random streams, the same storage round
trip (labels are computed on the pixels a reader of the file gets back) and the same rounding of the pseudo-MOS.

The label of a version is its pseudo-MOS (`corpus.fidelity.pseudo_mos`) made non-increasing in strength within its
(photo, type) group (`corpus.fidelity.monotone`): a stronger distortion of one photo never gets a better label than a
milder one. The untouched photo is labelled `corpus.fidelity.TOP` (`untouched`), the top of the scale.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from ..data.distortions import distort
from ..data.transforms import load_image
from .fidelity import TOP, fidelity, monotone, pseudo_mos

__all__ = ["Version", "distort_and_label", "label_view", "load_photo", "map_in_order", "store", "untouched"]

Job = TypeVar("Job")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Version:
    """One distorted version of a photo.

    Attributes:
        path: Where the image was written.
        distortion: The distortion type (a name of `data.distortions.DISTORTIONS`).
        strength: The distortion's strength in (0, 1]; 0 for the untouched photo.
        mos: The label in [0, 1], higher is better, rounded to 6 decimals: the pseudo-MOS made non-increasing in
            strength within the (photo, type) group (`corpus.fidelity.monotone`); `TOP` for the untouched photo.
        values: Each fidelity metric's raw value ({name: value}, `corpus.fidelity.RESCALE`'s order).
        fr_mos: The pseudo-MOS of `values` itself (`corpus.fidelity.pseudo_mos`), rounded to 6 decimals, before the
            monotone fit; it differs from `mos` only where the metrics rank a stronger version above a milder one.
    """

    path: Path
    distortion: str
    strength: float
    mos: float
    values: dict[str, float]
    fr_mos: float = TOP


def load_photo(source: bytes | str | Path, max_side: int) -> np.ndarray:
    """A photo as scoring decodes it, scaled down so its long side is at most `max_side` (Lanczos).

    Decoded by `data.transforms.load_image`, as `gamma-iqa score` decodes a file: EXIF orientation applied, an
    embedded colour profile converted to sRGB (one that cannot be applied warns a `ColourWarning`), alpha on white.

    Args:
        source: The encoded file's bytes, or its path.
        max_side: The longest side kept, in pixels; smaller photos are not enlarged.

    Returns:
        (H, W, 3) float32 sRGB in [0, 1].

    Raises:
        ValueError: a photo over the pixel budget (`transforms.MAX_PIXELS`).
        OSError: a file that is not an image, or a truncated or corrupt one.
    """
    image = load_image(source)
    image.thumbnail((max_side, max_side), Image.LANCZOS)
    return np.asarray(image, dtype=np.float32) / 255


def store(x: np.ndarray, path: Path) -> np.ndarray:
    """Write (H, W, 3) float32 in [0, 1] as 8-bit PNG (or JPEG of quality 95 for a `.jpg` path).

    Returns:
        What a reader of the file gets back, (H, W, 3) float32 in [0, 1]: labels and scores see the same pixels.
    """
    pixels = np.round(x * 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    if path.suffix == ".jpg":
        image.save(path, quality=95)
        return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    image.save(path, compress_level=1)  # lossless at any level; 1 writes several times faster than the default 6
    return pixels.astype(np.float32) / 255


def distort_and_label(
    reference: np.ndarray,
    kinds: Sequence[str],
    strengths: Sequence[float],
    path: Callable[[str, int, float], Path],
    *,
    seed: int,
    index: int,
    label_side: int | None = None,
    first: int = 0,
) -> list[Version]:
    """Distort a stored reference photo by every type at every strength, store each version and label it.

    One random generator per (photo, type), seeded with (`seed`, `index`, `first` + type's position in `kinds`),
    restarted at every strength: random choices (a shifted channel, a blur angle, a noise field) stay the same across
    strengths, so only the strength changes within a (photo, type) group.

    Args:
        reference: The pristine photo as stored (`store`'s return value), (H, W, 3) float32 in [0, 1].
        kinds: Distortion type names.
        strengths: Strengths in (0, 1], mildest first by convention.
        path: Where a version goes, from (type, strength's position in `strengths`, strength).
        seed: The run's seed.
        index: The photo's position in the run: photos get independent random streams.
        label_side: Label each version as seen at this long side: the fidelity metrics compare the stored reference
            and version both scaled down to it (`label_view`); None (default), or a photo already within it, compares
            them as stored. The fidelity metrics cost time in proportion to pixels, and a large photo is judged whole
            on a screen, not pixel by pixel.
        first: The position of `kinds[0]` among the photo's types: the random stream of `kinds[t]` is that of
            position `first + t`, so that types added to a photo later get the streams they would have had at once.

    Returns:
        The versions, type by type, each type's strengths in order.

    Raises:
        ValueError: An unknown type or a strength outside (0, 1].
    """
    versions = []
    seen = label_view(reference, label_side)
    for t, kind in enumerate(kinds):
        group = []
        for k, strength in enumerate(strengths):
            rng = np.random.default_rng([seed, index, first + t])
            file = path(kind, k, strength)
            image = store(distort(reference, kind, strength, rng), file)
            values = fidelity(seen, label_view(image, label_side))
            group.append((file, strength, values, pseudo_mos(values)))
        labels = monotone([s for _, s, _, _ in group], [m for *_, m in group])
        versions += [Version(file, kind, s, round(label, 6), values, round(m, 6))
                     for (file, s, values, m), label in zip(group, labels, strict=True)]  # fmt: skip
    return versions


def label_view(image: np.ndarray, side: int | None) -> np.ndarray:
    """`image` (H, W, 3) float32 in [0, 1] as labelled: scaled down (Lanczos, 8-bit) to long side `side`.

    Returns `image` itself when `side` is None or the image is already within it.
    """
    h, w = image.shape[:2]
    if side is None or max(h, w) <= side:
        return image
    scale = side / max(h, w)
    pil = Image.fromarray(np.round(image * 255).astype(np.uint8))
    small = pil.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.float32) / 255


def untouched(reference: np.ndarray, path: Path) -> Version:
    """The untouched photo as a version of itself: strength 0, distortion "none", labelled `TOP`.

    Args:
        reference: The pristine photo as stored (`store`'s return value), (H, W, 3) float32 in [0, 1].
        path: Where the stored photo is (it is not written again).

    Returns:
        Its version: the metrics' values of identical images (PSNR infinite), `mos` and `fr_mos` exactly `TOP`.
    """
    return Version(path, "none", 0.0, TOP, fidelity(reference, reference), TOP)


def _one_thread() -> None:
    """One torch thread per worker process: W workers on W cores, not W x cores threads fighting over them."""
    torch.set_num_threads(1)


def map_in_order(fn: Callable[[Job], Result], jobs: Iterable[Job], workers: int) -> Iterator[Result]:
    """`fn` over `jobs`, results in the jobs' order as they finish, in `workers` processes (1: in this process).

    `fn` and the jobs must be picklable when `workers` > 1 (a module-level function and plain data).
    """
    with Pool(workers, initializer=_one_thread) if workers > 1 else contextlib.nullcontext() as pool:
        yield from (pool.imap(fn, jobs) if pool else map(fn, jobs))
