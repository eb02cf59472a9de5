"""The PNG charts: real images with matplotlib, and one warning and no file without it."""

import builtins
import math
import warnings

import numpy as np
import pytest
from PIL import Image

from gamma_iqa import plots

ROWS = [
    {"kind": "train", "name": "loss", "step": str(s), "value": str(1 / (1 + s))} for s in range(0, 50, 5)
] + [
    {"kind": "eval", "name": f"{d}/srcc", "step": str(s), "value": str(v + s / 100)}
    for d, v in (("kadid10k", 0.3), ("koniq10k", 0.5))
    for s in (10, 20, 30)
] + [{"kind": "eval", "name": "kadid10k/plcc", "step": "10", "value": "0.4"}]  # fmt: skip


def _colourful_pixels(path) -> int:
    """Pixels that are clearly coloured (not white, grey or black): the drawn lines and points."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum())


def test_curves_are_a_png_of_the_expected_size_with_lines(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need matplotlib (gamma-iqa[plot] or [test])")
    out = plots.plot_curves(ROWS, tmp_path / "progress.png")
    assert out == tmp_path / "progress.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (900, 640)
    assert _colourful_pixels(out) > 500
    empty = plots.plot_curves([], tmp_path / "empty.png")  # a run before its first step: axes, "no data yet"
    assert empty.is_file() and _colourful_pixels(empty) < _colourful_pixels(out) // 10


def test_scatter_is_a_png_and_skips_non_finite_points(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need matplotlib (gamma-iqa[plot] or [test])")
    rng = np.random.default_rng(0)
    points = [(float(x), float(x + 0.1 * rng.normal())) for x in rng.uniform(0, 1, 200)] + [(math.nan, 1.0)]
    out = plots.plot_scatter(points, "kadid10k (n=200)", tmp_path / "s.png", xlabel="normalised MOS", name="images")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (640, 560)
    assert _colourful_pixels(out) > 500


def test_without_matplotlib_one_warning_and_no_file(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    monkeypatch.setattr(plots, "_warned", False)
    with pytest.warns(RuntimeWarning, match=r"pip install 'gamma-iqa\[plot\]'") as caught:
        assert plots.plot_curves(ROWS, tmp_path / "progress.png") is None
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second chart is skipped silently
        assert plots.plot_scatter([(0, 1)], "t", tmp_path / "s.png", xlabel="x", name="n") is None
    assert list(tmp_path.iterdir()) == []
