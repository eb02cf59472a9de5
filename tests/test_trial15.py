"""A new user's trial of the readable-scores features: outputs that never clobber inputs, output folders checked before
any scoring, maps that survive an interrupt, and the other points of that trial."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gamma_iqa.engine.scoring import Scorer
from gamma_iqa.outputs import runs

from .conftest import run_cli


def _photos(folder: Path, n: int = 4, size: int = 72) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"p{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size + 8 * i, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _labels(tmp_path: Path, n: int = 8) -> Path:
    paths = _photos(tmp_path / "img", n)
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "stars"])
        w.writerows((f"img/{p.name}", 1 + 0.5 * i) for i, p in enumerate(paths))
    return tmp_path / "labels.csv"


def _calibrate(capsys, labels: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(
        capsys, "calibrate", "--model", "gamma-test", "--csv", str(labels), "--mos-column", "stars", "--crops",
        "center", "--workers", "0", "--holdout", "0", "--method", "isotonic", *extra,
    )  # fmt: skip


def _score(capsys, *argv: str) -> tuple[int, str, str]:
    return run_cli(capsys, "score", "--model", "gamma-test", "--workers", "0", "--crops", "center", *argv)


# ---- 1: an output never replaces an input, nor a file that is not a previous output of the same kind ---------------
def test_calibrate_out_never_overwrites_the_labels_or_a_file_not_a_calibration(capsys, tmp_path):
    labels = _labels(tmp_path)
    before = labels.read_bytes()
    code, _, err = _calibrate(capsys, labels, "--out", str(labels))
    assert code == 2 and err.count("\n") == 1 and "--out" in err and "inputs" in err, err
    assert labels.read_bytes() == before
    report = tmp_path / "report.html"
    report.write_text("<html>someone's page</html>")
    code, _, err = _calibrate(capsys, labels, "--out", str(report))
    assert code == 2 and "is not a calibration file" in err and err.count("\n") == 1, err
    assert report.read_text() == "<html>someone's page</html>"
    image = tmp_path / "img" / "p0.png"
    pixels = image.read_bytes()
    assert _calibrate(capsys, labels, "--out", str(image))[0] == 2 and image.read_bytes() == pixels
    out = tmp_path / "cal.json"
    code, _, err = _calibrate(capsys, labels, "--out", str(out))
    assert code == 0 and err.splitlines()[-1].endswith(f"score --calibration {out}")
    assert _calibrate(capsys, labels, "--out", str(out))[0] == 0  # a calibration file of ours is replaced


def test_score_html_and_output_never_overwrite_an_input_or_a_foreign_page(capsys, tmp_path):
    (image,) = _photos(tmp_path / "photos", 1)
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,scene\n{image},\n")
    page = tmp_path / "mine.html"
    page.write_text("<html>not a report</html>")
    for extra, flag in (
        (["--html", str(page)], "--html"),
        (["--html", str(manifest)], "--html"),
        (["--output", str(manifest)], "--output"),
        (["--html", str(tmp_path)], "--html"),
    ):
        code, _, err = _score(capsys, "--manifest", str(manifest), *extra)
        assert code == 2 and err.count("\n") == 1 and flag in err, (extra, err)
    assert page.read_text() == "<html>not a report</html>" and manifest.read_text().startswith("path,scene")
    report = tmp_path / "r.html"
    assert _score(capsys, str(image), "--html", str(report))[0] == 0
    assert _score(capsys, str(image), "--html", str(report))[0] == 0  # a report of ours is replaced


def test_calibrate_images_folder_without_the_labelled_images_says_so_in_one_line(capsys, tmp_path):
    labels = _labels(tmp_path)
    (tmp_path / "wrong").mkdir()
    code, _, err = _calibrate(capsys, labels, "--images", str(tmp_path / "wrong"), "--out", str(tmp_path / "c.json"))
    assert code == 2 and err.count("\n") == 1 and "no labelled image found" in err, err


# ---- 2: the map folder is checked before any scoring -------------------------------------------------------------
@pytest.mark.parametrize("where", ["file/sub", "file"])
def test_a_map_folder_that_cannot_be_made_fails_before_scoring(capsys, tmp_path, where, monkeypatch):
    (image,) = _photos(tmp_path / "photos", 1)
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(Scorer, "run", lambda *a, **k: pytest.fail("scored before the map folder was checked"))
    code, out, err = _score(capsys, str(image), "--map", str(tmp_path / where))
    assert code == 2 and out == "" and err.count("\n") == 1 and "--map" in err, err


# ---- 3: maps are drawn as rows finish, and a resumed run draws those an interrupt left missing -------------------
def test_an_interrupted_run_keeps_its_maps_and_resume_draws_the_missing_ones(capsys, tmp_path, monkeypatch):
    paths = _photos(tmp_path / "photos", 4)
    out, maps = tmp_path / "s.csv", tmp_path / "maps"
    real = Scorer.run

    def interrupted(self, entries, **kw):
        for n, row in enumerate(real(self, entries, **kw)):
            if n == 2:
                raise KeyboardInterrupt
            yield row

    monkeypatch.setattr(Scorer, "run", interrupted)
    argv = [str(tmp_path / "photos"), "--output", str(out), "--map", str(maps), "--map-stride", "16"]
    assert _score(capsys, *argv)[0] == 130
    assert sorted(p.name for p in maps.iterdir()) == ["p0.map.png", "p1.map.png"]  # the maps of the written rows
    (maps / "p1.map.png").unlink()  # as if the interrupt had come while it was drawn
    monkeypatch.setattr(Scorer, "run", real)
    code, _, err = _score(capsys, *argv, "--resume")
    assert code == 0, err
    assert sorted(p.name for p in maps.iterdir()) == [f"{p.stem}.map.png" for p in paths]


def test_check_file_target_refuses_a_folder_and_a_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        runs.check_file_target("out", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        runs.check_file_target("out", tmp_path / "no" / "x.json")
    (tmp_path / "c.json").write_text(json.dumps({"format": "gamma-iqa-calibration"}))
    runs.check_file_target("out", tmp_path / "c.json", ours=runs._is_calibration)


# ---- 4: the loss has scoring's pixel budget, and refuses empty images and arrays in one line ---------------------
def test_quality_loss_refuses_huge_empty_and_non_tensor_images(gamma_test_model, monkeypatch):
    import torch

    import gamma_iqa
    from gamma_iqa.models import loss

    size = gamma_test_model.image_size
    thin = torch.rand(1, 3, 1, 4000)  # enlarged to size x (4000 size): over a budget of 64 x 64 x 100
    monkeypatch.setattr(loss, "MAX_LOSS_PIXELS", size * size * 100)
    for crops in ("grid", "center"):
        with pytest.raises(ValueError, match=r"1 x 4000 pixels .* over the budget of 409,600 pixels"):
            gamma_iqa.QualityLoss(gamma_test_model, crops=crops)(thin)
    with pytest.raises(ValueError, match=r"`crops` 101 makes 101 crops"):
        gamma_iqa.QualityLoss(gamma_test_model, crops=101)(torch.rand(1, 3, size, size))
    assert gamma_iqa.QualityLoss(gamma_test_model, crops=100)(torch.rand(1, 3, size, size)).isfinite()
    with pytest.raises(ValueError, match=r"B, H, W >= 1, got shape \(1, 3, 0, 8\)"):
        gamma_iqa.QualityLoss(gamma_test_model)(torch.rand(1, 3, 0, 8))
    with pytest.raises(TypeError, match=r"torch tensor .* got ndarray .*torch.from_numpy"):
        gamma_iqa.QualityLoss(gamma_test_model)(np.zeros((1, 3, 8, 8), np.float32))


# ---- 6, 7, 11: --check checks the extra columns, its options, and names itself --------------------------------------
def test_check_finds_a_calibration_changed_in_place(capsys, tmp_path):
    labels = _labels(tmp_path)
    cal = tmp_path / "cal.json"
    assert _calibrate(capsys, labels, "--out", str(cal))[0] == 0
    out = tmp_path / "c.csv"
    extra = ["--calibration", str(cal), "--mos-scale", "koniq10k"]
    assert _score(capsys, str(tmp_path / "img"), "--output", str(out), *extra)[0] == 0
    code, stdout, _ = run_cli(capsys, "score", "--check", str(out))
    assert code == 0 and "all match" in stdout, stdout
    ratings = labels.read_text().splitlines()
    labels.write_text(
        "\n".join([ratings[0]] + [f"{r.split(',')[0]},{9 - float(r.split(',')[1])}" for r in ratings[1:]])
    )
    assert _calibrate(capsys, labels, "--out", str(cal))[0] == 0  # recalibrated in place: now a decreasing map
    code, stdout, _ = run_cli(capsys, "score", "--check", str(out))
    assert code == 1, stdout
    assert "note: the calibration file" in stdout and "changed (SHA-256" in stdout
    assert "calibrated recorded" in stdout and "8 do not match" in stdout
    rows = out.read_text().splitlines()  # a hand-edited mos column is found too
    head = rows[0].split(",")
    cells = rows[1].split(",")
    cells[head.index("mos")] = "1.5"
    out.write_text("\n".join([rows[0], ",".join(cells), *rows[2:]]) + "\n")
    assert "mos recorded 1.5" in run_cli(capsys, "score", "--check", str(out))[1]


def test_check_options_are_checked_and_named(capsys, tmp_path):
    (image,) = _photos(tmp_path / "photos", 1)
    out = tmp_path / "s.csv"
    assert _score(capsys, str(image), "--output", str(out))[0] == 0
    for extra, message in (
        (["--tolerance", "-1"], "--tolerance must be a finite number >= 0, got -1.0"),
        (["--tolerance", "nan"], "--tolerance must be a finite number >= 0, got nan"),
        (["--check-rows", "0"], "--check-rows must be >= 1, got 0"),
    ):
        code, stdout, err = run_cli(capsys, "score", "--check", str(out), *extra)
        assert (code, stdout, err) == (2, "", f"gamma-iqa score: error: {message}\n")
    garbage = tmp_path / "g.json"
    garbage.write_text("garbage")
    (tmp_path / "g.json.provenance.json").write_text((tmp_path / "s.csv.provenance.json").read_text())
    code, _, err = run_cli(capsys, "score", "--check", str(garbage))
    assert (
        code == 2
        and err
        == f"gamma-iqa score: error: --check {garbage}: not a file of score rows (as gamma-iqa score --output writes)\n"
    )


# ---- 5: the example reads images as scoring does -----------------------------------------------------------------
def test_example_reads_16_bit_and_alpha_images_as_scoring_does(tmp_path, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "improve_by_gradient.py"
    spec = importlib.util.spec_from_file_location("improve_by_gradient", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    gray = tmp_path / "gray16.png"
    Image.fromarray(np.full((64, 80), 20000, dtype=np.uint16)).save(gray)  # mode I;16
    clean, _ = example.degraded(gray, 64, "blur", seed=0)
    assert clean.mean().item() == pytest.approx(20000 / 65535, abs=2 / 255)  # not all white, as convert("RGB") gave
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.zeros((64, 80, 4), dtype=np.uint8)).save(rgba)  # black, fully transparent: white composited
    clean, _ = example.degraded(rgba, 64, "noise", seed=0)
    assert clean.min().item() == 1.0
    with pytest.raises(SystemExit):
        example.parse_args(["--help"])
    shown = capsys.readouterr().out
    for helped in ("the photo (default", "registered model or checkpoint", "Adam steps on the pixels", "Gaussian blur"):
        assert helped in " ".join(shown.split()), shown  # every argument has a help text
    assert "CLIP BPE vocabulary" in shown


# ---- 10: the report's cards show the extra columns asked for -----------------------------------------------------
def test_report_cards_show_mos_calibrated_and_the_level_mix(capsys, tmp_path):
    labels = _labels(tmp_path)
    cal = tmp_path / "cal.json"
    assert _calibrate(capsys, labels, "--out", str(cal))[0] == 0
    page = tmp_path / "r.html"
    extra = ["--mos-scale", "koniq10k", "--calibration", str(cal), "--details", "--html", str(page)]
    code, out, _ = _score(capsys, str(tmp_path / "img" / "p0.png"), *extra)
    assert code == 0
    row = dict(zip(*[line.split(",") for line in out.splitlines()[:2]], strict=True))
    text = page.read_text()
    assert f"mos {float(row['mos']):.4g}" in text and f"calibrated {float(row['calibrated']):.4g}" in text
    assert f"bad {100 * float(row['p_bad']):.0f}%" in text and "perfect " in text


# ---- 8: a logistic that is nearly a step is warned about ---------------------------------------------------------
def test_a_step_like_logistic_fit_is_warned_about():
    import warnings

    from gamma_iqa.engine.calibration import fit_calibration

    scores = np.linspace(0.4, 0.6, 12)
    stars = np.where(scores < 0.5, 1.9, 4.6) + np.linspace(0, 0.01, 12)  # two levels: the best logistic is a step
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cal = fit_calibration(scores, stars, holdout=0, model={"parameters_sha256": "0" * 64})
    assert any("nearly a step" in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert any("nearly a step" in n for n in cal.report["notes"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a smooth fit: no warning
        fit_calibration(scores, 1 + 4 * scores**2, holdout=0, model={"parameters_sha256": "0" * 64})


# ---- 9: maps on a fixed scale, a tiny range flagged, thin strips drawn readable ----------------------------------
def test_map_scale_tiny_range_and_thin_strips(gamma_test_model, tmp_path):
    from gamma_iqa.engine.maps import QualityMap
    from gamma_iqa.outputs import maps

    boxes = np.array([[[0, 0, 64, 64], [0, 36, 64, 100]]])
    qmap = QualityMap(np.array([[0.409, 0.419]], np.float32), boxes, (64, 100), 64, 36, None, False)
    assert maps._colour_range(qmap, "auto")[:2] == pytest.approx((0.409, 0.419))
    assert maps._colour_range(qmap, "fixed")[:2] == (0.0, 1.0)
    picture = Image.new("RGB", (100, 64))
    figure = maps._map_figure(qmap, picture, "t", "auto")
    assert "differ by only 0.010" in figure._suptitle.get_text()
    assert "differ by only" not in maps._map_figure(qmap, picture, "t", "fixed")._suptitle.get_text()
    strip = QualityMap(
        np.array([[0.3, 0.6]], np.float32), np.array([[[0, 0, 3, 60], [0, 40, 3, 100]]]), (3, 100), 60, 40, None, True
    )
    figure = maps._map_figure(strip, Image.new("RGB", (100, 3)), "t", "auto")
    assert "stretched to 100 x 64 px" in figure._suptitle.get_text()
    with pytest.raises(ValueError, match="map_scale"):
        maps.render_map(qmap, picture, tmp_path / "x.png", scale="wide")


# ---- 11: the small points --------------------------------------------------------------------------------------------
def test_small_points_of_the_trial(gamma_test_model, tmp_path):
    import warnings

    import torch

    from gamma_iqa.engine.calibration import fit_calibration

    (image,) = _photos(tmp_path / "photos", 1)
    with pytest.raises(TypeError, match=r"`mos_scale` must be a registered dataset's name, got int 3"):
        gamma_test_model.score([str(image)], mos_scale=3)
    with pytest.raises(TypeError, match=r"`calibration` must be a calibration file's path .* got dict"):
        gamma_test_model.score([str(image)], calibration={"method": "isotonic"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gamma_test_model.score([str(image)], mos_scale="gfiqa20k", crops="center")  # faces; these are natural
    (w,) = [w for w in caught if "mos_scale" in str(w.message)]
    assert "gfiqa20k is a dataset of face images" in str(w.message) and w.filename == __file__  # the caller's line
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = fit_calibration(
            s, [4.4, 4.47, 4.4, 4.5, 4.6, 4.7], method="isotonic", holdout=0, model={"parameters_sha256": "0" * 64}
        )
    assert all(len(repr(v)) <= 14 for v in cal.parameters["mos"]), cal.parameters["mos"]  # 4.435, no float noise
    from gamma_iqa.engine.scoring import _spread

    assert _spread(torch.full((10,), 0.7, dtype=torch.float32)) == 0.0  # torch's std of these is 6e-8
