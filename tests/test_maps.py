"""Quality maps: the window grid, its scores, the PNG overlays, `score --map` and the report's links to them."""

from __future__ import annotations

import itertools
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

import gamma_iqa
from gamma_iqa.data.inputs import Entry
from gamma_iqa.engine import maps as engine_maps
from gamma_iqa.engine.maps import QualityMap, grid_offsets, quality_map
from gamma_iqa.models.factory import trained_weights
from gamma_iqa.outputs.maps import map_paths, render_map, upsample

from .conftest import images, run_cli, run_gamma_iqa

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grace_hopper.jpg"


def _covered(qmap: QualityMap) -> np.ndarray:
    """(H, W) count of the windows over each pixel of the image."""
    count = np.zeros(qmap.size, dtype=np.int64)
    for top, left, bottom, right in qmap.boxes.reshape(-1, 4):
        count[top:bottom, left:right] += 1
    return count


@pytest.mark.parametrize(("length", "window", "stride"), [(64, 64, 7), (150, 64, 20), (148, 64, 21), (200, 64, 1)])
def test_grid_offsets_step_by_stride_and_end_at_the_border(length, window, stride):
    offsets = grid_offsets(length, window, stride)
    assert len(offsets) == math.ceil((length - window) / stride) + 1
    assert offsets[0] == 0 and offsets[-1] == length - window
    assert all(b - a == stride for a, b in itertools.pairwise(offsets[:-1]))
    assert 0 < offsets[-1] - offsets[-2] <= stride if len(offsets) > 1 else True


def test_map_grid_geometry_is_exact(gamma_test_model):
    image = images(1, size=160)[0][:, :100]  # (3, 100, 160)
    qmap = quality_map(gamma_test_model, image, stride=20)
    rows, cols = math.ceil((100 - 64) / 20) + 1, math.ceil((160 - 64) / 20) + 1
    assert qmap.scores.shape == (rows, cols) == (3, 6) and qmap.scores.dtype == np.float32
    assert qmap.boxes.shape == (3, 6, 4) and qmap.size == (100, 160) and not qmap.upscaled
    assert qmap.boxes[:, :, 0].tolist() == [[0] * 6, [20] * 6, [36] * 6]  # tops; the last ends at the border
    assert qmap.boxes[0, :, 1].tolist() == [0, 20, 40, 60, 80, 96]  # lefts
    assert (qmap.boxes[..., 2] - qmap.boxes[..., 0] == 64).all() and (
        qmap.boxes[..., 3] - qmap.boxes[..., 1] == 64
    ).all()
    assert _covered(qmap).min() >= 1
    ys, xs = qmap.centres
    assert ys.tolist() == [32, 52, 68] and xs.tolist() == [32, 52, 72, 92, 112, 128]


def test_small_image_is_enlarged_and_boxes_are_in_its_own_pixels(gamma_test_model):
    image = images(1, size=50)[0][:, :30]  # (3, 30, 50): enlarged to 64 x 107, as make_crops does
    qmap = quality_map(gamma_test_model, image, stride=16)
    assert qmap.upscaled and qmap.size == (30, 50)
    assert qmap.scores.shape == (1, math.ceil((107 - 64) / 16) + 1)
    assert qmap.boxes[..., :2].min() == 0 and qmap.boxes[0, -1, 3] == 50 and qmap.boxes[0, 0, 2] == 30
    assert _covered(qmap).min() >= 1


def test_window_scores_are_the_scorers_scores_of_the_window_crops(gamma_test_model, tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray((images(1, size=128, seed=3)[0].permute(1, 2, 0) * 255).round().byte().numpy()).save(path)
    qmap = quality_map(gamma_test_model, path, stride=40)  # from the file, decoded as the Scorer decodes it
    again = quality_map(gamma_test_model, path, stride=40)
    assert np.array_equal(qmap.scores, again.scores)  # deterministic
    pil = Image.open(path).convert("RGB")
    crops = [pil.crop((left, top, right, bottom)) for top, left, bottom, right in qmap.boxes.reshape(-1, 4)]
    expected = gamma_test_model.score(crops, crops="center")
    assert qmap.scores.reshape(-1).tolist() == pytest.approx(expected, abs=1e-6)
    assert len(set(expected)) == len(expected)  # the windows differ: a wrong box would give another score


def test_other_window_sizes_are_scored_at_the_crop_size(gamma_test_model):
    image = images(1, size=128, seed=4)[0]
    qmap = quality_map(gamma_test_model, image, stride=64, window=128)
    assert qmap.scores.shape == (1, 1) and qmap.boxes[0, 0].tolist() == [0, 0, 128, 128]
    small = torch.nn.functional.interpolate(image[None], size=(64, 64), mode="bilinear", antialias=True)[0]
    assert float(qmap.scores[0, 0]) == pytest.approx(gamma_test_model.score(small, crops="center")[0], abs=1e-6)


def test_bad_stride_window_and_too_many_windows_are_refused(gamma_test_model, monkeypatch):
    image = images(1, size=96)[0]
    with pytest.raises(ValueError, match=r"`stride` must be a whole number of pixels >= 1, got 0"):
        quality_map(gamma_test_model, image, stride=0)
    with pytest.raises(ValueError, match=r"`window` must be a whole number of pixels >= 1, got -3"):
        quality_map(gamma_test_model, image, window=-3)
    monkeypatch.setattr(engine_maps, "MAX_MAP_WINDOWS", 8)
    with pytest.raises(ValueError, match=r"3 x 3 = 9 windows .* budget of 8 windows per map .*MAX_MAP_WINDOWS"):
        quality_map(gamma_test_model, image, stride=16)
    assert quality_map(gamma_test_model, image, stride=32).scores.shape == (2, 2)  # 4 windows fit


def test_upsampled_map_passes_through_the_window_scores():
    boxes = np.array([[[0, 0, 64, 64], [0, 36, 64, 100]], [[36, 0, 100, 64], [36, 36, 100, 100]]])
    qmap = QualityMap(np.array([[0.2, 0.4], [0.6, 1.0]], np.float32), boxes, (100, 100), 64, 36, "x")
    up = upsample(qmap, 100, 100)  # pixel centres at 0.5, 1.5...; window centres at 32 and 68
    assert np.allclose(up[:32, :32], 0.2) and np.allclose(up[68:, 68:], 1.0)  # constant beyond the outer centres
    assert np.allclose(up[:32, 68:], 0.4) and np.allclose(up[68:, :32], 0.6)
    assert up[50, 0] == pytest.approx(0.4, abs=0.01)  # halfway between 0.2 and 0.6
    assert up.min() >= 0.2 - 1e-6 and up.max() <= 1.0 + 1e-6


def test_map_png_is_drawn_at_a_bounded_size(gamma_test_model, tmp_path):
    image = Image.new("RGB", (2100, 700), (120, 80, 40))
    qmap = QualityMap(
        np.array([[0.3, 0.7]], np.float32),
        np.array([[[0, 0, 700, 700], [0, 1400, 700, 2100]]]),
        (700, 2100),
        700,
        1400,
        "x",
    )
    out = render_map(qmap, image, tmp_path / "m.png", title="t")
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width <= 1024 + 200 and png.height <= 342 + 100
    with pytest.raises(ValueError, match="the map is of a 2100 x 700 image, not 10 x 10"):
        render_map(qmap, Image.new("RGB", (10, 10)), tmp_path / "n.png")


def test_map_names_are_unique_and_never_an_input(tmp_path):
    taken = tmp_path / "out" / "y.map.png"  # an image being scored, where y.jpg's map would go
    entries = [
        Entry("a/x.jpg", "a/x.jpg"),
        Entry("b/x.png", "b/x.png"),
        Entry("<input 2>", None),
        Entry("-", b""),
        Entry("c/y.jpg", "c/y.jpg"),
        Entry(str(taken), str(taken)),
        Entry("d/X.jpg", "d/X.jpg"),
    ]
    names = [p.name for p in map_paths(entries, tmp_path / "out")]
    assert names == [
        "x.map.png",
        "x-2.map.png",
        "input-2.map.png",
        "stdin.map.png",
        "y-2.map.png",
        "y.map.map.png",
        "X-3.map.png",  # a case-insensitive file system would mix X and x
    ]


def _blurred_left(image: Image.Image) -> Image.Image:
    half = image.width // 2
    out = image.copy()
    out.paste(image.crop((0, 0, half, image.height)).filter(ImageFilter.GaussianBlur(3)), (0, 0))
    return out


def test_shipped_model_maps_a_blurred_left_half_lower_on_the_left():
    """The issue's check, with the shipped gamma-lite: a photo's left half blurred scores lower there."""
    if trained_weights("gamma-lite") is None:
        pytest.skip("gamma-lite's trained weights are not in this install")
    model = gamma_iqa.create_model("gamma-lite")
    # Grace Hopper at 448 x 224 (her face across the middle): two 224-pixel windows, left and right, two forwards.
    photo = Image.open(EXAMPLE).convert("RGB").resize((448, 525), Image.Resampling.BICUBIC).crop((0, 60, 448, 284))
    sharp = quality_map(model, photo, stride=224)
    blurred = quality_map(model, _blurred_left(photo), stride=224)
    assert blurred.scores.shape == (1, 2) and blurred.boxes[0, :, 1].tolist() == [0, 224]
    assert blurred.scores[0, 0] < blurred.scores[0, 1]  # lower on the left
    assert blurred.scores[0, 0] < sharp.scores[0, 0] - 0.05  # because of the blur: the left window lost quality
    assert blurred.scores[0, 1] == sharp.scores[0, 1]  # the untouched right window kept its score exactly


def score_maps(capsys, maps, *args: str) -> tuple[int, str, str]:
    """`gamma-iqa score` of gamma-test, centre crops, drawing maps at stride 16 into `maps`; (code, stdout, stderr)."""
    argv = ["score", "--model", "gamma-test", "--workers", "0", "--crops", "center", "--map-stride", "16"]
    return run_cli(capsys, *argv, "--map", str(maps), *args)


def test_score_map_writes_pngs_and_the_report_links_them(gamma_test_model, tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        pixels = (images(1, size=96, seed=ord(folder))[0].permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(pixels).save(tmp_path / folder / "x.png")
    (tmp_path / "b" / "broken.png").write_bytes(b"not an image")
    out, page = tmp_path / "maps", tmp_path / "report.html"
    code, _, err = score_maps(
        capsys, out, "--html", str(page), "--output", str(tmp_path / "s.csv"), str(tmp_path / "a"), str(tmp_path / "b")
    )
    assert code == 1  # the broken image
    assert sorted(p.name for p in out.iterdir()) == ["x-2.map.png", "x.map.png"]  # the broken image has no map
    assert err.count("error:") == 1 and "broken.png" in err
    for name in ("x.map.png", "x-2.map.png"):
        with Image.open(out / name) as png:
            assert png.format == "PNG"
    html = page.read_text()
    links = re.findall(r'<a class="map" href="([^"]+)">', html)
    assert sorted(links) == ["maps/x-2.map.png", "maps/x.map.png"]
    assert "base64,iVBOR" not in html  # linked, not embedded


def _colour_limits(monkeypatch) -> dict[str, tuple[float, float]]:
    """{map title's image name: (vmin, vmax) of its overlay}, filled as `score --map` draws the maps in this process."""
    from gamma_iqa.outputs import maps

    drawn: dict[str, tuple[float, float]] = {}
    figure_of = maps._map_figure

    def spy(qmap, picture, title, scale="auto"):
        figure = figure_of(qmap, picture, title, scale)
        overlay = figure.axes[0].images[1]  # [0] is the picture, [1] the map coloured by its colour scale
        drawn[title.split(" ")[0]] = overlay.get_clim()
        return figure

    monkeypatch.setattr(maps, "_map_figure", spy)
    return drawn


@pytest.mark.parametrize(
    ("extra", "shared"),
    [(["--html", "page.html"], True), ([], False), (["--html", "page.html", "--map-scale", "auto"], False)],
)
def test_the_reports_maps_share_one_colour_scale_unless_told_otherwise(tmp_path, capsys, monkeypatch, extra, shared):
    pytest.importorskip("matplotlib", reason="maps are drawn with matplotlib (the plot extra)")
    for i, name in enumerate(("p.png", "q.png")):  # two unlike images: their windows' ranges differ
        pixels = (images(1, size=128, seed=i)[0].permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(pixels if i == 0 else np.ascontiguousarray(pixels[::-1, :, ::-1])).save(tmp_path / name)
    drawn = _colour_limits(monkeypatch)
    argv = ["--output", str(tmp_path / "s.csv"), str(tmp_path / "p.png"), str(tmp_path / "q.png")]
    extra = [str(tmp_path / a) if a.endswith(".html") else a for a in extra]
    assert score_maps(capsys, tmp_path / "maps", *argv, *extra)[0] == 0
    assert sorted(drawn) == ["p.png", "q.png"]
    if shared:  # one 0..1 scale: a colour is one score on every map of the page
        assert drawn["p.png"] == drawn["q.png"] == (0.0, 1.0)
        legend = re.search(r"<p class='legend' id='map-legend'>(.*?)</p>", (tmp_path / "page.html").read_text())
        assert "one colour scale for every map" in legend[1] and "#a50026" in legend[1] and "#006837" in legend[1]
    else:  # each map its own lowest..highest window score
        assert drawn["p.png"] != drawn["q.png"] and all(hi - lo < 0.5 for lo, hi in drawn.values())
        if extra:
            assert "each on its own colour scale" in (tmp_path / "page.html").read_text()


def test_the_reports_colour_ramp_is_the_maps_colour_map():
    matplotlib = pytest.importorskip("matplotlib", reason="maps are drawn with matplotlib (the plot extra)")
    from gamma_iqa.outputs.report import MAP_COLOURS

    stops = np.linspace(0, 1, len(MAP_COLOURS))  # RdYlGn interpolates linearly between these 11 colours
    drawn = matplotlib.colormaps["RdYlGn"](stops)[:, :3] * 255  # (11, 3); its 256-entry table rounds by a unit
    named = np.array([matplotlib.colors.to_rgb(c) for c in MAP_COLOURS]) * 255
    assert np.abs(drawn - named).max() <= 1.5


def test_score_map_failures_are_one_line_and_the_run_goes_on(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(engine_maps, "MAX_MAP_WINDOWS", 4)
    for name, side in (("big", 160), ("small", 64)):
        pixels = (images(1, size=side)[0].permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
    code, out, err = score_maps(capsys, tmp_path / "maps", str(tmp_path / "big.png"), str(tmp_path / "small.png"))
    assert code == 1 and out.count("\n") == 3  # header and both scores: the rows are unchanged
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.match(r"error: .*big\.png: quality map not drawn: too many windows", lines[0])
    assert [p.name for p in (tmp_path / "maps").iterdir()] == ["small.map.png"]


def test_score_map_stride_below_one_is_a_usage_error(tmp_path, capsys):
    Image.new("RGB", (64, 64)).save(tmp_path / "x.png")
    code, _, err = run_cli(
        capsys,
        "score",
        "--model",
        "gamma-test",
        "--map",
        str(tmp_path / "m"),
        "--map-stride",
        "0",
        str(tmp_path / "x.png"),
    )
    assert code == 2 and "--map-stride must be a whole number of pixels >= 1, got 0" in err
    assert not (tmp_path / "m").exists()
    code, _, err = run_cli(
        capsys, "score", "--model", "gamma-test", "--map", str(tmp_path / "x.png"), str(tmp_path / "x.png")
    )
    assert code == 2 and re.search(r"--map \S+x\.png is a file, not a folder", err)


@pytest.mark.slow
def test_torchrun_ranks_share_the_maps_and_draw_what_one_process_draws(tmp_path):
    for i in range(3):
        pixels = (images(1, size=80, seed=i)[0].permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(pixels).save(tmp_path / f"p{i}.png")
    (tmp_path / "p9.png").write_bytes(b"broken")
    common = ["score", *(str(tmp_path / f"p{i}.png") for i in (0, 1, 9, 2)), "--model", "gamma-test", "--workers", "0"]
    common += ["--crops", "center", "--map-stride", "8"]
    one = run_gamma_iqa([*common, "--map", str(tmp_path / "one"), "--html", str(tmp_path / "one.html")])
    two = run_gamma_iqa([*common, "--map", str(tmp_path / "two"), "--html", str(tmp_path / "two.html")], processes=2)
    assert one.returncode == 1 and two.returncode != 0, two.stderr  # the broken image, on both
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == ["p0.map.png", "p1.map.png", "p2.map.png"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == names
    for name in names:  # rank 1 drew some of them: the same pixels and bytes
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    links = re.findall(r'<a class="map" href="([^"]+)">', (tmp_path / "two.html").read_text())
    assert sorted(links) == [f"two/{n}" for n in names]


def _screenshot(chromium: str, page: Path, shot: Path) -> np.ndarray:
    profile = f"--user-data-dir={shot.parent / 'profile'}"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    subprocess.run(
        [chromium, *flags, profile, "--window-size=800,400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)


def test_report_shows_the_linked_map_in_chromium(tmp_path, capsys):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian chromium is not installed (.ci/run installs it)")
    Image.new("RGB", (96, 96), (128, 128, 128)).save(tmp_path / "grey.png")  # a flat image: its thumbnail is one colour
    page = tmp_path / "report.html"
    argv = ["score", "--model", "gamma-test", "--workers", "0", "--crops", "center", str(tmp_path / "grey.png")]
    assert run_cli(capsys, *argv, "--map", str(tmp_path / "maps"), "--map-stride", "8", "--html", str(page))[0] == 0
    shown = _screenshot(chromium, page, tmp_path / "with.png")
    (tmp_path / "maps" / "grey.map.png").unlink()
    missing = _screenshot(chromium, page, tmp_path / "without.png")
    # The page is the same but for the map's picture, where the browser drew the PNG (else a broken-image icon).
    assert (shown != missing).any(axis=1).sum() > 20_000  # pixels; the map is shown 300 px wide
    # The legend's colour ramp, drawn by the page itself (the map's file is gone): its two ends' colours are there.
    for end in ((0xA5, 0x00, 0x26), (0x00, 0x68, 0x37)):
        assert (np.abs(missing.astype(int) - end).max(axis=1) <= 8).sum() > 20  # pixels


# ---- a new user's trial: wide and one-window images, unreadable images, bad strides, a name for a model -------------
def _label_fits(qmap, image):
    """Whether the colour bar's label and the title lie inside the figure, drawn."""
    from gamma_iqa.outputs.maps import _map_figure

    figure = _map_figure(qmap, image, "a title")
    renderer = figure.canvas.get_renderer()
    figure.canvas.draw()
    bar = figure.axes[-1]
    label = bar.yaxis.label if bar.yaxis.label.get_text() else bar.xaxis.label
    box, frame = label.get_window_extent(renderer), figure.bbox
    inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
    return inside, label.get_text()


@pytest.mark.parametrize("size", [(80, 1400), (900, 80), (300, 300)])
def test_map_colour_bar_label_fits_on_wide_and_tall_images(gamma_test_model, size):
    pytest.importorskip("matplotlib", reason="maps are drawn with matplotlib (the plot extra)")
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(0))
    qmap = quality_map(gamma_test_model, image, stride=32)
    picture = Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy())
    inside, text = _label_fits(qmap, picture)
    assert inside and text == "score of 64 px windows, stride 32"  # the wide one was cut off at the right


def test_one_window_map_is_drawn_flat_on_a_fixed_scale(gamma_test_model, tmp_path):
    pytest.importorskip("matplotlib", reason="maps are drawn with matplotlib (the plot extra)")
    from gamma_iqa.outputs.maps import _map_figure

    image = images(1, size=64, seed=2)[0]  # exactly one 64-pixel window
    qmap = quality_map(gamma_test_model, image, stride=16)
    assert qmap.single and qmap.scores.shape == (1, 1)
    picture = Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy())
    figure = _map_figure(qmap, picture, None)
    bar = figure.axes[-1]
    assert bar.get_ylim() == (0.0, 1.0)  # not the score +- 5e-4, which made a meaningless range
    assert bar.yaxis.label.get_text() == f"one window (the image is no larger): score {qmap.scores[0, 0]:.3f}"
    assert render_map(qmap, image, tmp_path / "one.png").is_file()
    several = quality_map(gamma_test_model, images(1, size=96)[0], stride=32)
    shown = Image.fromarray((images(1, size=96)[0] * 255).round().byte().permute(1, 2, 0).numpy())
    assert not several.single and _map_figure(several, shown, None).axes[-1].get_ylim() == (
        pytest.approx(float(several.scores.min())),
        pytest.approx(float(several.scores.max())),
    )


def test_unreadable_image_is_one_line_as_scoring_says_it(gamma_test_model, tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image\n" * 20)
    cases = {
        "missing.jpg": "missing.jpg: no such file",
        str(tmp_path / "notes.jpg"): f"{tmp_path / 'notes.jpg'}: not an image, or an unsupported format",
        str(tmp_path): f"{tmp_path}: is a folder, not an image",
    }
    for source, message in cases.items():
        with pytest.raises(ValueError) as caught:
            quality_map(gamma_test_model, source)
        assert str(caught.value) == message and isinstance(caught.value, engine_maps.ImageReadError)
    with pytest.raises(ValueError, match=r"^`image`: "):  # in memory: named as the parameter
        quality_map(gamma_test_model, torch.full((3, 70, 70), 2.0))


@pytest.mark.parametrize("stride", [2.5, 8.0, "8", None, True, -1, 0])
def test_a_stride_that_is_no_whole_number_of_pixels_is_refused(gamma_test_model, stride):
    expected = rf"^`stride` must be a whole number of pixels >= 1, got {re.escape(repr(stride))}$"
    with pytest.raises(ValueError, match=expected):
        quality_map(gamma_test_model, images(1, size=96)[0], stride=stride)
    assert quality_map(gamma_test_model, images(1, size=96)[0], stride=np.int64(32)).stride == 32


def test_a_model_name_instead_of_a_model_is_a_type_error(gamma_test_model, tmp_path):
    from gamma_iqa.engine.calibration import score_columns
    from gamma_iqa.engine.scoring import Scorer
    from gamma_iqa.outputs.maps import write_maps
    from gamma_iqa.outputs.runs import run_calibrate

    message = r"^`model` must be a model, got the str 'gamma-test': pass gamma_iqa\.create_model\('gamma-test'\)$"
    calls = [
        lambda: gamma_iqa.QualityLoss("gamma-test"),
        lambda: quality_map("gamma-test", images(1)[0]),
        lambda: Scorer("gamma-test"),
        lambda: score_columns("gamma-test", mos_scale="live"),
        lambda: write_maps("gamma-test", [], tmp_path),
        lambda: run_calibrate("gamma-test", tmp_path / "labels.csv"),
    ]
    for call in calls:
        with pytest.raises(TypeError, match=message):
            call()
    with pytest.raises(TypeError, match=r"got the Tensor tensor\(\[1\.\]\): pass gamma_iqa\.create_model\(NAME_OR"):
        gamma_iqa.QualityLoss(torch.ones(1))
