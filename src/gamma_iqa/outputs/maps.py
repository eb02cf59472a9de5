"""Quality maps as pictures: a PNG per image, the map over the image with a colour bar (`gamma-iqa score --map`).

The image is shown at most `MAP_SIDE` pixels a side; the window scores (engine/maps.py) are spread over it bilinearly
between the windows' centres (constant beyond the outermost centres) and laid over it, semi-transparent, red (low) to
green (high), with a colour bar spanning the map's own lowest to highest score (beside the picture, or below a
wide one). A map of one window (an image no larger than a window) has no range: it is drawn flat on a fixed 0..1
scale, its one score marked and named on the bar. matplotlib draws it (the optional
`plot` extra), through its object-oriented API on an Agg canvas: no pyplot, no window, no global backend switch.

File names are `<image stem>.map.png` in the folder given, made unique in input order when stems collide (`a.map.png`,
`a-2.map.png`...), and never the path of an image being scored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.inputs import Entry
from ..engine.maps import DEFAULT_STRIDE, ImageReadError, QualityMap, check_pixels, decode_image, quality_map
from ..engine.scoring import ScoreRow, describe_error
from ..models.base import QualityModel, require_model
from .writers import shown_name

__all__ = [
    "MAP_SIDE",
    "MIN_SIDE",
    "SCALES",
    "TINY_RANGE",
    "draw_map",
    "map_paths",
    "render_map",
    "require_matplotlib",
    "upsample",
    "write_maps",
]

MAP_SIDE = 1024  # px, the longest side of the image in a map's PNG
MIN_SIDE = 64  # px, the shortest side a map is drawn at: a thinner image's strip is stretched to it
SCALES = ("auto", "fixed")  # a map's colour scale: its own lowest..highest score, or the nominal 0..1
TINY_RANGE = 0.02  # an auto scale spanning less than this is flagged in the title: small differences look large
_INSTALL = "pip install 'gamma-iqa[plot]'"
_ODD = re.compile(r"[\x00-\x1f\x7f\\/:*?\"<>|]")  # characters a file name had better not hold on any system


def require_matplotlib() -> None:
    """Check that matplotlib, which draws the maps, can be imported.

    Raises:
        ImportError: it cannot; one line naming the extra to install.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(f"quality maps are drawn with matplotlib, which is not installed: {_INSTALL}") from None


def _interpolation(n: int, length: int, centres: np.ndarray) -> np.ndarray:
    """(n, len(centres)) weights taking values at `centres` to the centres of n pixels spanning `length` pixels.

    Linear between neighbouring centres, constant beyond the outermost; each row sums to 1. Interpolation is linear
    in the values, so column j is the interpolation of the j-th unit vector.
    """
    at = (np.arange(n) + 0.5) * (length / n)  # pixel centres in the original's coordinates
    eye = np.eye(len(centres))
    return np.stack([np.interp(at, centres, eye[j]) for j in range(len(centres))], axis=1)


def upsample(qmap: QualityMap, height: int, width: int) -> np.ndarray:
    """The map as a (height, width) float32 image of the whole picture, bilinear between the windows' centres.

    Args:
        qmap: the map.
        height: rows of the result (the picture's height at the size it is shown).
        width: columns of the result.

    Returns:
        (height, width) scores; within [min, max] of `qmap.scores`.
    """
    ys, xs = qmap.centres
    wy = _interpolation(height, qmap.size[0], ys)  # (height, rows)
    wx = _interpolation(width, qmap.size[1], xs)  # (width, cols)
    return (wy @ qmap.scores.astype(np.float64) @ wx.T).astype(np.float32)


def _as_pil(image: Image.Image | torch.Tensor) -> Image.Image:
    """A decoded image (PIL, or (3, H, W) float in [0, 1]) as a PIL RGB image."""
    if isinstance(image, Image.Image):
        return image
    pixels = (image.detach().cpu().float().clamp(0, 1) * 255).round().byte()  # (3, H, W)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy())


def _colour_range(qmap: QualityMap, scale: str = "auto") -> tuple[float, float, str]:
    """(low, high, label) of the colour bar.

    `scale` "fixed": always [0, 1] (widened to hold the scores), so maps compare with one another.

    A map of several windows spans its own lowest to highest score. One window (an image no larger than a window) has
    no range: a fixed scale, [0, 1] (the scores' nominal range, widened to hold the score), says how good it is, and
    the label says it is one score. So does a map whose windows all score the same.
    """
    lo, hi = float(qmap.scores.min()), float(qmap.scores.max())
    windows = f"{qmap.window} px windows, stride {qmap.stride}"
    if qmap.single:
        return min(0.0, lo), max(1.0, hi), f"one window (the image is no larger): score {lo:.3f}"
    if scale == "fixed":
        return min(0.0, lo), max(1.0, hi), f"score of {windows} (fixed scale)"
    if hi - lo < 1e-6:
        return min(0.0, lo), max(1.0, hi), f"every window scores {lo:.3f} ({windows})"
    return lo, hi, f"score of {windows}"


def _figure_size(picture: Image.Image, vertical: bool) -> tuple[float, float, float]:
    """(width, height) of the figure in inches at 100 dpi, and the scale the picture is shown at.

    A small picture is shown larger, up to 400 px tall or MAP_SIDE px wide. Room is added for the colour bar and its
    label: beside the picture (`vertical`) or below it, and above it for the title; the figure is at least 4.8 inches
    wide so that a narrow picture's title and label fit.
    """
    scale = min(max(1.0, 400 / picture.height), max(1.0, MAP_SIDE / picture.width))
    width, height = picture.width * scale / 100, picture.height * scale / 100
    if vertical:
        return max(width + 1.6, 4.8), height + 0.6, scale
    return max(width + 0.4, 4.8), height + 1.3, scale


def render_map(
    qmap: QualityMap, image: Any, path: str | os.PathLike[str], *, title: str | None = None, scale: str = "auto"
) -> Path:
    """Draw `qmap` over `image` into a PNG file.

    The colour bar stands beside the picture, or lies below it when the picture is shown under 300 px tall (a wide
    image), so its label always fits. A map of one window (an image no larger than a window) is drawn flat on a fixed
    0..1 colour scale and labelled with its score.

    Args:
        qmap: the map of `image`.
        image: the image it was made of: a PIL image, a (3, H, W) tensor in [0, 1], or anything `quality_map` takes.
        path: the PNG file written (replaced if it exists).
        title: a line above the picture; default none.
        scale: the colour scale: "auto" (the map's own lowest to highest score: small differences look large) or
            "fixed" (0..1, comparable between maps).

    Returns:
        `path`.

    Raises:
        ImportError: matplotlib is not installed (naming the extra).
        ValueError: `image` cannot be read (an `ImageReadError`) or is not the size the map was made for.
    """
    if scale not in SCALES:
        raise ValueError(f"`map_scale` must be one of {', '.join(SCALES)}, got {scale!r}")
    require_matplotlib()
    picture = _as_pil(decode_image(image))
    if (picture.height, picture.width) != qmap.size:
        raise ValueError(
            f"the map is of a {qmap.size[1]} x {qmap.size[0]} image, not {picture.width} x {picture.height}"
        )
    _map_figure(qmap, picture, title, scale).savefig(path, format="png")
    return Path(path)


def _map_figure(qmap: QualityMap, picture: Image.Image, title: str | None, scale: str = "auto") -> Any:
    """The matplotlib Figure of `render_map` (on an Agg canvas): the map over `picture`, its colour bar and title.

    A side under `MIN_SIDE` pixels (a thin strip) is stretched to it, and the title says so.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    picture = picture.copy()
    picture.thumbnail((MAP_SIDE, MAP_SIDE))
    if min(picture.size) < MIN_SIDE:  # a strip a few pixels thin: stretched across, so it can be seen
        size = (max(picture.width, MIN_SIDE), max(picture.height, MIN_SIDE))
        picture = picture.resize(size, Image.Resampling.NEAREST)
        title = f"{title or ''} · stretched to {size[0]} x {size[1]} px to be seen"
    values = upsample(qmap, picture.height, picture.width)
    lo, hi, label = _colour_range(qmap, scale)
    if scale == "auto" and not qmap.single and 1e-6 <= hi - lo < TINY_RANGE:
        title = (
            f"{title or ''}\nnote: the windows differ by only {hi - lo:.3f}: the colours exaggerate it (fixed scale)"
        )
    vertical = picture.height * _figure_size(picture, True)[2] >= 300  # shown height, px: room for the label
    width, height, _ = _figure_size(picture, vertical)
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself: savefig renders with Agg
    axes = figure.add_subplot()
    axes.imshow(np.asarray(picture), interpolation="none")
    shown = axes.imshow(values, cmap="RdYlGn", vmin=lo, vmax=hi, alpha=0.45, interpolation="none")
    axes.set_axis_off()
    if title:
        figure.suptitle(title, x=0.01, ha="left", fontsize="small")  # the figure's width, not a narrow picture's
    shape = {"orientation": "vertical", "aspect": 20} if vertical else {"orientation": "horizontal", "aspect": 40}
    bar = figure.colorbar(shown, ax=axes, fraction=0.05, pad=0.02, **shape)
    bar.solids.set_alpha(1.0)  # the bar in full colour, not washed out like the overlay
    bar.set_label(label, fontsize="small")
    if qmap.single:  # mark the one score on the fixed scale
        (bar.ax.axhline if vertical else bar.ax.axvline)(float(qmap.scores.flat[0]), color="black", linewidth=2)
    return figure


def _title(name: str, qmap: QualityMap) -> str:
    """A map's title: the image's name and the mean of its windows' scores (not the score's crops)."""
    return f"{shown_name(Path(name).name)} · mean of {qmap.scores.size} windows {qmap.scores.mean():.3f}"


def _stem(name: str) -> str:
    """The file-name stem of an entry's name: its file's stem, `stdin` for "-", `input-N` for `<input N>`."""
    if name == "-":
        return "stdin"
    if name.startswith("<input ") and name.endswith(">"):
        return "input-" + name[7:-1]
    return _ODD.sub("_", Path(name).stem) or "image"


def map_paths(entries: Sequence[Entry], folder: str | os.PathLike[str]) -> list[Path]:
    """The PNG file of each entry's map in `folder`, unique in input order and never one of the images scored.

    Args:
        entries: the run's entries, all of them (so a resumed run names each map as the first run did).
        folder: where the maps go.

    Returns:
        One path per entry, `<stem>.map.png`, or `<stem>-N.map.png` for the N-th use of a stem.
    """
    inputs = {Path(e.source).resolve() for e in entries if isinstance(e.source, (str, os.PathLike))}
    used: set[str] = set()
    out = []
    for entry in entries:
        stem, n = _stem(entry.name), 1
        while True:
            name = f"{stem}.map.png" if n == 1 else f"{stem}-{n}.map.png"
            path = Path(folder) / name
            if name.lower() not in used and path.resolve() not in inputs:  # lower: case-insensitive file systems
                break
            n += 1
        used.add(name.lower())
        out.append(path)
    return out


def write_maps(
    model: QualityModel,
    entries: Sequence[Entry],
    folder: str | os.PathLike[str],
    *,
    draw: Collection[int] | None = None,
    stride: int = DEFAULT_STRIDE,
    dtype: str = "fp32",
    on_error: Callable[[ScoreRow], None] | None = None,
    scale: str = "auto",
) -> dict[str, Path]:
    """Make and draw the map of each entry into `folder` (created), one image at a time.

    Args:
        model: the model scoring, on its device.
        entries: the run's entries; their positions choose the file names (see `map_paths`).
        folder: where the PNG files go.
        draw: positions in `entries` of the maps to make; None: every entry that has a source.
        stride: pixels between windows (see `quality_map`).
        dtype: autocast precision.
        on_error: called with a row naming the entry and why its map was not drawn (its position in `entries` as
            `index`); the other maps are still drawn.
        scale: the colour scale, "auto" or "fixed" (`render_map`).

    Returns:
        {entry name: PNG path} of the maps drawn (an entry name listed twice keeps its first map).

    Raises:
        TypeError: `model` is not a model (before any map is made).
        ValueError: `stride` is not an int >= 1 (before any map is made).
        ImportError: matplotlib is not installed (before any map is made).
    """
    require_model(model)
    check_pixels(stride, "stride")
    require_matplotlib()
    Path(folder).mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    chosen = set(range(len(entries))) if draw is None else set(draw)
    for i, (entry, path) in enumerate(zip(entries, map_paths(entries, folder), strict=True)):
        drawn = i in chosen and draw_map(
            model, entry, path, index=i, stride=stride, dtype=dtype, on_error=on_error, scale=scale
        )
        if drawn:
            written.setdefault(entry.name, path)
    return written


def draw_map(
    model: QualityModel,
    entry: Entry,
    path: str | os.PathLike[str],
    *,
    index: int = 0,
    stride: int = DEFAULT_STRIDE,
    dtype: str = "fp32",
    on_error: Callable[[ScoreRow], None] | None = None,
    scale: str = "auto",
) -> bool:
    """Make and draw one entry's map into `path` (written whole or not at all: a Ctrl-C leaves no half PNG).

    Args:
        model: the model scoring, on its device.
        entry: the image (an entry without a source is skipped).
        path: the PNG file (its folder must exist).
        index: the entry's position in its run, the `index` of the row `on_error` gets.
        stride: pixels between windows (see `quality_map`).
        dtype: autocast precision.
        on_error: called with a row naming the entry and why its map was not drawn.
        scale: the colour scale (`render_map`).

    Returns:
        Whether the map was drawn.
    """
    if entry.source is None:
        return False
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        image = decode_image(entry.source)
        qmap = quality_map(model, image, scene=entry.scene, stride=stride, dtype=dtype)
        render_map(qmap, image, tmp, title=_title(entry.name, qmap), scale=scale)
        os.replace(tmp, path)
    except Exception as e:  # one image's failure is its own: say so on one line, draw the others
        tmp.unlink(missing_ok=True)
        if on_error is not None:
            why = e.reason if isinstance(e, ImageReadError) else describe_error(e)  # the row names the image
            on_error(ScoreRow(index, entry.name, scene=entry.scene, error=f"quality map not drawn: {why}"))
        return False
    return True
