"""PNG charts drawn with PIL alone, so that runs and evaluations get their plots without a plotting library."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw

__all__ = ["plot_curves", "plot_scatter"]

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
Series = Sequence[tuple[float, float]]


def _panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    title: str,
    series: Mapping[str, Series],
    *,
    xlabel: str = "step",
    lines: bool = True,
) -> None:
    """One chart in `box` (left, top, right, bottom) with axes, ticks and a legend: lines or a scatter."""
    left, top, right, bottom = box
    draw.text((left, top - 18), title, fill="black")
    draw.rectangle(box, outline="#888")
    points = [p for s in series.values() for p in s if math.isfinite(p[0]) and math.isfinite(p[1])]
    if not points:
        draw.text((left + 10, top + 10), "no data yet", fill="#888")
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.05 or 0.05
    y0, y1 = y0 - pad, y1 + pad

    def to_px(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    for k in range(5):
        y = y0 + (y1 - y0) * k / 4
        _, py = to_px(x0, y)
        draw.line([(left, py), (right, py)], fill="#eee")
        draw.text((left - 48, py - 6), f"{y:.3g}", fill="#444")
    draw.text((left, bottom + 4), f"{xlabel} {x0:g}", fill="#444")
    draw.text((right - 90, bottom + 4), f"{xlabel} {x1:g}", fill="#444")
    for i, (name, pts) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        px = [to_px(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
        if lines and len(px) > 1:
            draw.line(px, fill=colour, width=2)
        for x, y in px:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        draw.text((right + 10, top + 14 * i), name, fill=colour)


def plot_curves(rows: Sequence[Mapping[str, str]], path: Path) -> Path:
    """PNG with the training loss over steps (top) and each dataset's test SRCC over steps (bottom), from the rows of
    a run's metrics.csv."""
    loss = [(float(r["step"]), float(r["value"])) for r in rows if r["kind"] == "train" and r["name"] == "loss"]
    srcc: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r["kind"] == "eval" and r["name"].endswith("/srcc"):
            srcc.setdefault(r["name"].removesuffix("/srcc"), []).append((float(r["step"]), float(r["value"])))
    image = Image.new("RGB", (900, 640), "white")
    draw = ImageDraw.Draw(image)
    _panel(draw, (70, 40, 740, 290), "training loss (MSE)", {"loss": loss})
    _panel(draw, (70, 360, 740, 600), "test SRCC per dataset", srcc)
    image.save(path)
    return path


def plot_scatter(points: Series, title: str, path: str | Path, *, xlabel: str, name: str) -> Path:
    """PNG scatter of (x, y) points, e.g. predicted score against normalised MOS."""
    image = Image.new("RGB", (640, 560), "white")
    draw = ImageDraw.Draw(image)
    _panel(draw, (70, 40, 540, 500), title, {name: points}, xlabel=xlabel, lines=False)
    image.save(path)
    return Path(path)
