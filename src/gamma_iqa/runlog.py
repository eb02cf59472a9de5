"""Run records: a metrics CSV (TensorBoard too when installed) and a PNG plot of loss and per-dataset SRCC.

The plot is drawn with PIL alone, so every run folder gets one without a plotting library.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw

__all__ = ["MetricsLog", "plot_curves"]

FIELDS = ("step", "epoch", "kind", "name", "value")
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]


class MetricsLog:
    """Appends (step, epoch, kind, name, value) rows to `metrics.csv`; kind `train` (loss, lr) or `eval` (srcc...)."""

    def __init__(self, folder: Path, *, enabled: bool = True) -> None:
        self.path = folder / "metrics.csv"
        self.enabled = enabled
        self.tb = None
        if enabled:
            new = not self.path.exists()
            self.file = self.path.open("a", newline="")
            self.writer = csv.writer(self.file, lineterminator="\n")
            if new:
                self.writer.writerow(FIELDS)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(folder / "tensorboard"))
            except ImportError:  # TensorBoard is optional
                self.tb = None

    def log(self, step: int, epoch: int, kind: str, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            self.writer.writerow([step, epoch, kind, name, repr(float(value))])
            if self.tb is not None:
                self.tb.add_scalar(f"{kind}/{name}", value, step)
        self.file.flush()

    def truncate_after(self, step: int) -> None:
        """Drop rows past `step` (a resumed run redoes them), keeping the file's history consistent."""
        if not self.enabled or not self.path.exists():
            return
        self.file.close()
        with self.path.open(newline="") as f:
            rows = list(csv.reader(f))
        with self.path.open("w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerows([rows[0], *[r for r in rows[1:] if int(r[0]) <= step]])
        self.file = self.path.open("a", newline="")
        self.writer = csv.writer(self.file, lineterminator="\n")

    def read(self) -> list[dict[str, str]]:
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def _panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
) -> None:
    """One line chart in `box` (left, top, right, bottom) with axes, ticks and a legend."""
    left, top, right, bottom = box
    draw.text((left, top - 18), title, fill="black")
    draw.rectangle(box, outline="#888")
    points = [p for s in series.values() for p in s if math.isfinite(p[1])]
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
    draw.text((left, bottom + 4), f"step {x0:g}", fill="#444")
    draw.text((right - 70, bottom + 4), f"step {x1:g}", fill="#444")
    for i, (name, pts) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        px = [to_px(x, y) for x, y in pts if math.isfinite(y)]
        if len(px) > 1:
            draw.line(px, fill=colour, width=2)
        for x, y in px:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        draw.text((right + 10, top + 14 * i), name, fill=colour)


def plot_curves(rows: Sequence[Mapping[str, str]], path: Path) -> Path:
    """PNG with the training loss over steps (top) and each dataset's test SRCC over steps (bottom)."""
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
