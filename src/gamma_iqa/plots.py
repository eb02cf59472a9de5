"""PNG charts of training progress and of predictions against opinion scores, drawn with matplotlib.

matplotlib is an optional extra (`pip install 'gamma-iqa[plot]'`). It is imported when a chart is drawn, not when
this module is, and only its object-oriented API with the Agg canvas is used: no pyplot, so no global backend switch
and no window, whatever the caller's own matplotlib setup. Without matplotlib a chart is skipped with one warning per
process and no file is written: a training run or an evaluation goes on without its plots.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_curves", "plot_scatter"]

Series = Sequence[tuple[float, float]]
_INSTALL = "pip install 'gamma-iqa[plot]'"
_warned = False


def _figure(width: float, height: float) -> Any | None:
    """A matplotlib Figure of `width` x `height` inches on an Agg canvas, or None (warned once) without matplotlib."""
    global _warned
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        if not _warned:
            _warned = True
            warnings.warn(f"matplotlib is not installed, so no plots are drawn: {_INSTALL}", RuntimeWarning, 3)
        return None
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself to the figure: savefig renders with Agg
    return figure


def _finite(points: Series) -> tuple[list[float], list[float]]:
    """The xs and ys of the points whose coordinates are both finite."""
    kept = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    return [x for x, _ in kept], [y for _, y in kept]


def _panel(axes: Any, title: str, series: Mapping[str, Series], *, xlabel: str, lines: bool = True) -> None:
    """One chart on `axes`: each series as a line with markers (or a scatter), a legend when there are several."""
    axes.set_title(title, loc="left", fontsize="medium")
    axes.set_xlabel(xlabel)
    axes.grid(True, alpha=0.3)
    drawn = 0
    for name, points in series.items():
        xs, ys = _finite(points)
        if not xs:
            continue
        if lines:
            axes.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=name)
        else:
            axes.scatter(xs, ys, label=name)  # solid default markers: the colour is exact inside each dot
        drawn += 1
    if not drawn:
        axes.text(0.5, 0.5, "no data yet", ha="center", va="center", color="grey", transform=axes.transAxes)
    elif len(series) > 1 or not lines:
        axes.legend(loc="best", fontsize="small")


def plot_curves(rows: Sequence[Mapping[str, str]], path: Path) -> Path | None:
    """Draw a run's progress: training loss over steps (top), each dataset's test SRCC over steps (bottom).

    Args:
        rows: The rows of a run's metrics.csv, with keys kind ("train" or "eval"), name, step and value.
        path: The PNG to write (900 x 640 pixels).

    Returns:
        `path`, or None when matplotlib is not installed (one warning, no file).
    """
    loss = [(float(r["step"]), float(r["value"])) for r in rows if r["kind"] == "train" and r["name"] == "loss"]
    srcc: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r["kind"] == "eval" and r["name"].endswith("/srcc"):
            srcc.setdefault(r["name"].removesuffix("/srcc"), []).append((float(r["step"]), float(r["value"])))
    figure = _figure(9.0, 6.4)
    if figure is None:
        return None
    top, bottom = figure.subplots(2, 1, sharex=True)
    _panel(top, "training loss (MSE)", {"loss": loss}, xlabel="")
    _panel(bottom, "test SRCC per dataset", srcc, xlabel="step")
    figure.savefig(path)
    return Path(path)


def plot_scatter(points: Series, title: str, path: str | Path, *, xlabel: str, name: str) -> Path | None:
    """Draw a scatter of (x, y) points, e.g. predicted score against normalised MOS.

    Args:
        points: (x, y) pairs; pairs with a non-finite coordinate are left out.
        title: The chart's title.
        path: The PNG to write (640 x 560 pixels).
        xlabel: The x axis' label.
        name: The points' legend entry.

    Returns:
        `path`, or None when matplotlib is not installed (one warning, no file).
    """
    figure = _figure(6.4, 5.6)
    if figure is None:
        return None
    axes = figure.subplots()
    _panel(axes, title, {name: points}, xlabel=xlabel, lines=False)
    figure.savefig(path)
    return Path(path)
