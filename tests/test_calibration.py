"""Scores on a scale people know: the MOS mapping of each registered dataset, calibrate, and score's new columns."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gamma_iqa import metrics
from gamma_iqa.data.datasets import FOLDER_CSV, get_dataset, list_datasets
from gamma_iqa.engine.calibration import (
    CalibrationError,
    _pool_adjacent_violators,
    fit_calibration,
    load_calibration,
    score_columns,
)
from gamma_iqa.models.state import state_sha256
from tests.conftest import images, run_cli

REGISTERED = [n for n in list_datasets() if n != FOLDER_CSV]


def distort(s):
    """The known monotone distortion of the scores that the labels are made with: a logistic onto 1..5."""
    return 1 + 4 / (1 + np.exp(-10 * (np.asarray(s, dtype=np.float64) - 0.5)))


# ---- the MOS scale of a registered dataset ---------------------------------------------------------------------
@pytest.mark.parametrize("name", REGISTERED)
def test_denormalise_inverts_normalise(name):
    spec = get_dataset(name)
    lo, hi = spec.mos_range
    grid = np.linspace(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), 2001)  # also outside the nominal range
    ulps = 4 * np.finfo(np.float64).eps * max(abs(lo), abs(hi), hi - lo)
    for mos in grid.tolist():
        assert abs(spec.denormalise(spec.normalise(mos)) - mos) <= ulps
        y = mos / (hi - lo)  # any normalised value: the other composition is the identity too
        assert abs(spec.normalise(spec.denormalise(y)) - y) <= 4 * np.finfo(np.float64).eps * (1 + abs(y))
    # The ends map exactly, in the dataset's direction: DMOS (LIVE, CSIQ) runs the other way.
    best, worst = (lo, hi) if spec.lower_better else (hi, lo)
    assert spec.denormalise(1.0) == best and spec.denormalise(0.0) == worst
    assert spec.normalise(best) == 1.0 and spec.normalise(worst) == 0.0


def test_dmos_direction_and_known_scales():
    assert [n for n in REGISTERED if get_dataset(n).lower_better] == ["live", "csiq"]
    live, csiq, koniq, ava = (get_dataset(n) for n in ("live", "csiq", "koniq10k", "ava"))
    assert live.denormalise(0.75) == 1 + 0.25 * 99 == 25.75  # a higher score, a lower DMOS
    assert live.denormalise(0.8) < live.denormalise(0.7)
    assert csiq.denormalise(0.75) == 0.25
    assert koniq.denormalise(0.75) == 75.0 and ava.denormalise(0.75) == 7.5


def test_mos_scale_through_the_api(gamma_test_model):
    rows = gamma_test_model.score(images(2), crops="center", mos_scale="LIVE")
    plain = gamma_test_model.score(images(2), crops="center")
    assert [list(r) for r in rows] == [["path", "score", "scene", "crops", "mos"]] * 2
    assert [r["score"] for r in rows] == plain  # the scores do not change
    assert [r["mos"] for r in rows] == [get_dataset("live").denormalise(s) for s in plain]
    with pytest.raises(ValueError, match=r"^`mos_scale` 'folder\+csv' is not a registered dataset; known: live, "):
        gamma_test_model.score(images(1), mos_scale="folder+csv")


# ---- fitting -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scores(gamma_test_model) -> np.ndarray:
    """gamma-test's scores of 30 generated images of different contrast (centre crops)."""
    batch = images(30, seed=3) * torch_ramp(30)
    return np.array(gamma_test_model.score(batch, crops="center"))


def torch_ramp(n):
    import torch

    return torch.linspace(0.1, 1.0, n)[:, None, None, None]  # darker to brighter: a spread of scores


def test_logistic_calibration_recovers_a_known_distortion(scores, gamma_test_model):
    assert np.ptp(scores) > 0.05  # the images' scores differ enough to fit
    mos = distort(scores)
    about = {"model": {"name": "gamma-test", "parameters_sha256": state_sha256(gamma_test_model)}}
    cal = fit_calibration(scores, mos, method="logistic4", holdout=0.2, seed=0, **about)
    p = cal.parameters
    assert [p["b1"], p["b2"], p["b3"], p["b4"]] == pytest.approx([5.0, 1.0, 0.5, 0.1], abs=1e-6)
    report = cal.report
    assert report["holdout"] == 0.2 and report["fit"]["rows"] == 24 and report["held_out"]["rows"] == 6
    for part in ("fit", "held_out"):
        before, after = report[part]["before"], report[part]["after"]
        assert after["srcc"] == pytest.approx(before["srcc"], abs=1e-12) and before["srcc"] == pytest.approx(1.0)
        assert before["rmse"] > 1.0 and after["rmse"] < 1e-6  # from the 0..1 scale onto 1..5, exactly
        assert after["plcc"] == pytest.approx(1.0, abs=1e-12)
    assert cal.apply(scores) == pytest.approx(mos, abs=1e-6)


def test_isotonic_calibration_and_dmos_labels(scores):
    about = {"model": {"name": "gamma-test", "parameters_sha256": "0" * 64}}
    for labels, sign in ((distort(scores), 1), (100 - 20 * distort(scores), -1)):  # MOS, then a DMOS-like scale
        cal = fit_calibration(scores, labels, method="isotonic", holdout=0.2, seed=1, **about)
        knots = np.array(cal.parameters["mos"])
        assert (sign * np.diff(knots) > 0).all()  # strictly monotone here: the labels are
        fit, held = cal.report["fit"], cal.report["held_out"]
        assert fit["after"]["rmse"] == pytest.approx(0.0, abs=1e-9)  # the fit rows are the knots (to 12 digits)
        # The rank order is kept: the calibrated values lie on the labels' own scale, DMOS-like ones included.
        assert held["before"]["srcc"] == pytest.approx(sign * 1.0) and held["after"]["srcc"] == pytest.approx(1.0)
        assert held["after"]["rmse"] < held["before"]["rmse"] / 10
        assert held["rows"] == 6


def test_pool_adjacent_violators_matches_scipy():
    optimize = pytest.importorskip("scipy.optimize", reason="the reference isotonic fit is scipy's (the data extra)")
    if not hasattr(optimize, "isotonic_regression"):
        pytest.skip("scipy < 1.12 has no isotonic_regression")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 40, 200).astype(float)  # with ties
    y = x / 10 + rng.normal(0, 1, 200)
    kx, ky = _pool_adjacent_violators(x, y)
    ux = np.unique(x)
    means = np.array([y[x == u].mean() for u in ux])
    expect = optimize.isotonic_regression(means, weights=np.array([(x == u).sum() for u in ux])).x
    assert np.interp(ux, kx, ky) == pytest.approx(expect, abs=1e-12)
    assert (np.diff(kx) > 0).all() and (np.diff(ky) >= 0).all() and len(kx) < len(ux)


def test_logistic4_parameters_give_logistic_fit_values():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, 50)
    y = 3 - 2 / (1 + np.exp(-(x - 0.4) / 0.2)) + rng.normal(0, 0.05, 50)  # decreasing: b1 < b2
    b = metrics.logistic4_parameters(x, y)
    assert metrics.logistic4(x, b) == pytest.approx(metrics.logistic_fit(x, y), abs=1e-9)
    assert b[3] > 0 and b[0] < b[1]
    with pytest.raises(ValueError, match="at least 4 pairs"):
        metrics.logistic4_parameters([1, 2, 3], [1, 2, 3])


def test_fit_refuses_bad_arguments(scores):
    about = {"model": {"name": "m", "parameters_sha256": "0" * 64}}
    with pytest.raises(ValueError, match=r"`holdout` must be a fraction in \[0, 1\), got 1"):
        fit_calibration(scores, distort(scores), holdout=1, **about)
    with pytest.raises(ValueError, match="`method` must be one of logistic4, isotonic"):
        fit_calibration(scores, distort(scores), method="linear", **about)
    with pytest.raises(ValueError, match="too few for `method` logistic4"):
        fit_calibration(scores[:5], distort(scores[:5]), holdout=0.2, **about)
    cal = fit_calibration(scores, distort(scores), holdout=0, **about)
    assert cal.report["held_out"] is None and cal.report["fit"]["rows"] == 30


# ---- the command line --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def labelled(tmp_path_factory, gamma_test_model) -> Path:
    """A folder of 12 PNGs in a sub-folder and labels.csv (columns file, rating) with distorted gamma-test scores."""
    root = tmp_path_factory.mktemp("labelled")
    (root / "img").mkdir()
    batch = images(12, seed=5) * torch_ramp(12)
    names = [f"img/{i:02d}.png" for i in range(12)]
    for name, image in zip(names, batch, strict=True):
        Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy()).save(root / name)
    scores = gamma_test_model.score([str(root / n) for n in names], crops="center")
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "rating"])
        w.writerows(zip(names, distort(scores).tolist(), strict=True))
    return root


def calibrate(capsys, root, *extra):
    return run_cli(
        capsys, "calibrate", "--model", "gamma-test", "--csv", str(root / "labels.csv"), "--image-column", "file",
        "--mos-column", "rating", "--crops", "center", "--workers", "0", *extra,
    )  # fmt: skip


def score_csv(capsys, *argv):
    code, out, err = run_cli(capsys, "score", "--workers", "0", "--crops", "center", *argv)
    return code, list(csv.reader(io.StringIO(out))), err


def test_calibrate_and_apply(capsys, labelled, gamma_test_model, tmp_path):
    out = tmp_path / "cal.json"
    code, stdout, err = calibrate(capsys, labelled, "--holdout", "0.25", "--out", str(out))
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0] == "logistic4 calibration of gamma-test (natural, crops center) on 12 images"
    assert lines[1].startswith("fit (9 rows): SRCC 1.0000 -> 1.0000, PLCC ")
    assert lines[2].startswith("held-out (3 rows): SRCC 1.0000 -> 1.0000, PLCC ") and lines[2].endswith("-> 0.0000")
    assert f"wrote {out}" in err
    saved = json.loads(out.read_text())
    assert saved["format"] == "gamma-iqa-calibration" and saved["version"] == 1
    assert saved["model"]["parameters_sha256"] == state_sha256(gamma_test_model)
    assert saved["labels"]["rows"] == saved["labels"]["scored"] == 12 and saved["labels"]["mos_column"] == "rating"
    assert (saved["scene"], saved["crops"], saved["method"]) == ("natural", "center", "logistic4")

    files = [str(labelled / f"img/{i:02d}.png") for i in range(3)]
    scales = ("--mos-scale", "kadid10k", "--calibration", str(out))
    code, rows, err = score_csv(capsys, *files, "--model", "gamma-test", *scales)
    assert code == 0, err
    assert rows[0] == ["path", "score", "scene", "crops", "error", "mos", "calibrated"]  # new columns last
    cal = load_calibration(out)
    for row in rows[1:]:
        score = float(row[1])
        assert float(row[5]) == pytest.approx(1 + 4 * score, abs=1e-12)  # KADID's 1..5
        assert float(row[6]) == pytest.approx(cal(score), abs=1e-12)
        assert float(row[6]) == pytest.approx(float(distort(score)), abs=1e-5)  # the labels' own scale, recovered
    assert score_csv(capsys, *files, "--model", "gamma-test")[1][0] == ["path", "score", "scene", "crops", "error"]

    api = gamma_test_model.score(files, crops="center", calibration=out)
    assert [r["calibrated"] for r in api] == [float(r[6]) for r in rows[1:]]


def test_resume_refuses_another_scale_or_calibration(capsys, labelled, tmp_path):
    first = tmp_path / "cal.json"
    assert calibrate(capsys, labelled, "--out", str(first))[0] == 0
    second = tmp_path / "cal2.json"  # the same fit with another method: other content, same columns
    assert calibrate(capsys, labelled, "--method", "isotonic", "--out", str(second))[0] == 0
    files = [str(labelled / f"img/{i:02d}.png") for i in range(3)]
    out = tmp_path / "rows.csv"
    base = ("--model", "gamma-test", "--output", str(out))
    assert score_csv(capsys, files[0], *base, "--mos-scale", "koniq10k", "--calibration", str(first))[0] == 0
    record = json.loads(out.with_name("rows.csv.provenance.json").read_text())
    assert record["columns"]["mos"] == "mos scale koniq10k"
    assert record["columns"]["calibrated"].startswith("calibration sha256:")
    for scale, cal in (("ava", first), ("koniq10k", second)):
        code, _, err = score_csv(capsys, *files[:2], *base, "--resume", "--mos-scale", scale, "--calibration", str(cal))
        assert code == 2 and "other settings (columns;" in err, err
    same = ("--mos-scale", "koniq10k", "--calibration", str(first))
    code, _, err = score_csv(capsys, *files[:2], *base, "--resume", *same)
    assert code == 0, err
    assert len(out.read_text().splitlines()) == 3  # the header, the first row and the resumed one


def test_calibration_for_another_model_is_refused(capsys, labelled, tmp_path, tiny):
    out = tmp_path / "cal.json"
    assert calibrate(capsys, labelled, "--method", "isotonic", "--out", str(out))[0] == 0
    image = str(labelled / "img/00.png")
    code, rows, err = score_csv(
        capsys, image, "--model", "gamma-test", "--calibration", str(out), "--scene", "aesthetic"
    )
    assert code == 0 and rows[0][-1] == "calibrated"  # applied, with one line saying the scenes differ
    assert err == f"warning: --calibration {out} was fitted on scores with scene natural; these have scene aesthetic\n"
    saved = json.loads(out.read_text())
    saved["model"]["parameters_sha256"] = "ab" * 32
    out.write_text(json.dumps(saved))
    code, rows, err = score_csv(capsys, image, "--model", "gamma-test", "--calibration", str(out))
    assert code == 2 and rows == []
    assert err.count("\n") == 1 and err.startswith(
        f"gamma-iqa score: error: --calibration {out}: made for model gamma-test (parameters SHA-256 abababababab), "
        "not for gamma-test ("
    )
    with pytest.raises(CalibrationError, match="made for model gamma-test"):
        score_columns(tiny, calibration=out)  # the Python API refuses it too (a perturbed gamma-test)


BAD_FILES = [
    ("{not json", "not JSON (Expecting property name enclosed in double quotes, line 1)"),
    ('{"format": "other"}', 'not a gamma-iqa calibration file (no "format": "gamma-iqa-calibration")'),
    ('{"format": "gamma-iqa-calibration", "version": 2}', "version 2; this gamma-iqa reads version 1"),
    ("no sha", '"model" must give the model\'s "parameters_sha256" (64 hex digits)'),
    ("logistic4 b4=0", 'logistic4 "parameters" must be finite numbers b1, b2, b3 and b4 > 0'),
    ("isotonic unsorted", 'isotonic knots must have strictly increasing "scores" and monotone "mos"'),
    ("isotonic uneven", 'isotonic "parameters" must be lists "scores" and "mos" of finite numbers, as many of each'),
    ("method", "\"method\" must be one of logistic4, isotonic, got 'spline'"),
    (b"\xff\xfe", "not JSON (not UTF-8 text)"),
]


def _bad_file(text: str) -> str:
    base = {"format": "gamma-iqa-calibration", "version": 1, "model": {"parameters_sha256": "0" * 64}}
    variants = {
        "logistic4 b4=0": {"method": "logistic4", "parameters": {"b1": 5, "b2": 1, "b3": 0.5, "b4": 0}},
        "isotonic unsorted": {"method": "isotonic", "parameters": {"scores": [0.5, 0.4], "mos": [1, 2]}},
        "isotonic uneven": {"method": "isotonic", "parameters": {"scores": [0.4, 0.5], "mos": [1]}},
        "method": {"method": "spline", "parameters": {}},
        "no sha": {"model": {"name": "gamma-test"}},
    }
    return json.dumps({**base, **variants[text]}) if text in variants else text


@pytest.mark.parametrize(("text", "problem"), BAD_FILES)
def test_malformed_calibration_files(capsys, tmp_path, text, problem):
    path = tmp_path / "cal.json"
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(_bad_file(text))
    with pytest.raises(CalibrationError) as caught:
        load_calibration(path)
    assert str(caught.value).startswith(f"`calibration` {path}: {problem}")
    code, out, err = run_cli(capsys, "score", "x.png", "--model", "gamma-test", "--calibration", str(path))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"gamma-iqa score: error: --calibration {path}: {problem}")


def test_score_usage_errors(capsys):
    code, out, err = run_cli(capsys, "score", "x.png", "--model", "gamma-test", "--mos-scale", "koniq")
    known = ", ".join(REGISTERED)
    assert (code, out) == (2, "")
    assert err == f"gamma-iqa score: error: --mos-scale 'koniq' is not a registered dataset; known: {known}\n"
    code, _, err = run_cli(capsys, "score", "x.png", "--model", "gamma-test", "--calibration", "missing.json")
    assert code == 2 and err == "gamma-iqa score: error: --calibration missing.json: no such file\n"


def test_help_says_what_the_scales_mean(capsys):
    with pytest.raises(SystemExit):
        run_cli(capsys, "score", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "a higher score gives a lower mos" in text and "--calibration CAL.json" in text


def test_calibrate_reports_unreadable_images_and_bad_options(capsys, labelled, tmp_path):
    labels = tmp_path / "labels.csv"
    rows = (labelled / "labels.csv").read_text().splitlines()
    labels.write_text("\n".join([*rows, "img/missing.png,3.0"]) + "\n")
    out = tmp_path / "cal.json"
    base = ["calibrate", "--model", "gamma-test", "--csv", str(labels), "--images", str(labelled), "--image-column"]
    base += ["file", "--mos-column", "rating", "--crops", "center", "--workers", "0", "--out", str(out)]
    code, stdout, err = run_cli(capsys, *base)
    assert code == 1  # fitted on the 12 it could read, and says which one it could not
    assert err.startswith("error: img/missing.png: no such file\n")  # named as in the CSV
    assert err.endswith("gamma-iqa calibrate: 1 of 13 images failed\n")
    saved = json.loads(out.read_text())["labels"]
    assert (saved["rows"], saved["scored"], saved["failed"]) == (13, 12, 1)
    assert saved["file"] == str(labels) and len(saved["sha256"]) == 64
    code, stdout, err = run_cli(capsys, *base, "--holdout", "1.5")
    assert (code, stdout) == (2, "")
    assert err == "gamma-iqa calibrate: error: --holdout must be a fraction in [0, 1), got 1.5\n"


# ---- a new user's trial: few labels, constant labels, holdout, folders ------------------------------------------
def test_logistic_on_few_labels_is_held_in_range_with_a_warning():
    rng = np.random.default_rng(4)  # 8 noisy labels: the free logistic put b1 at 168,271 on this 2..5 scale
    n = int(rng.integers(5, 10))
    s = rng.uniform(0.4, 0.6, n)
    y = 1 + 4 * (s - 0.4) / 0.2 + rng.normal(0, 0.5, n)
    about = {"model": {"name": "m", "parameters_sha256": "0" * 64}}
    with pytest.warns(UserWarning) as caught:
        cal = fit_calibration(s, y, holdout=0, **about)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert text.startswith("`method` logistic4: fitted on 8 rows, fewer than 10: label more images")
    assert "put an asymptote at 1.683e+05, far outside the labels' range" in text and "\n" not in text
    lo, hi = y.min(), y.max()
    low, high = lo - 10 * (hi - lo), hi + 10 * (hi - lo)
    p = cal.parameters
    assert sorted([p["b1"], p["b2"]]) == pytest.approx([low, high])  # held 10 times the labels' range beyond them
    assert (cal.apply(np.linspace(-1, 2, 31)) >= low).all() and (cal.apply(np.linspace(-1, 2, 31)) <= high).all()
    assert np.diff(cal.apply(np.sort(s))).min() > 0  # still increasing: the rank order is kept
    fit = cal.report["fit"]
    assert fit["after"]["srcc"] == pytest.approx(fit["before"]["srcc"]) and fit["after"]["rmse"] < 0.5
    assert cal.report["notes"] == text.removeprefix("`method` logistic4: ").split("; ")


def test_enough_labels_fit_freely_without_a_warning(scores, recwarn):
    about = {"model": {"name": "m", "parameters_sha256": "0" * 64}}
    cal = fit_calibration(scores, distort(scores), holdout=0.2, **about)
    assert cal.report["notes"] == [] and not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_constant_labels_or_scores_are_refused_in_words():
    about = {"model": {"name": "m", "parameters_sha256": "0" * 64}}
    with pytest.raises(ValueError) as caught:
        fit_calibration(np.linspace(0, 1, 7), [3.0] * 7, holdout=0, **about)
    assert str(caught.value) == "all 7 labels have the same MOS (3.0): a calibration needs labels that vary"
    with pytest.raises(ValueError, match=r"^all 7 labelled images have the same score \(0\.5\): the model does not"):
        fit_calibration([0.5] * 7, np.arange(7), method="isotonic", holdout=0, **about)


def _write_labels(folder: Path, rows: list[tuple[str, float]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "labels.csv"
    path.write_text("image,mos\n" + "".join(f"{n},{m}\n" for n, m in rows))
    return path


def test_calibrate_checks_holdout_and_constant_labels_before_scoring(capsys, tmp_path):
    labels = _write_labels(tmp_path, [(f"missing{i}.png", 1 + i % 4) for i in range(12)])  # none exists
    base = ["calibrate", "--model", "gamma-test", "--csv", str(labels), "--workers", "0", "--out", str(tmp_path / "c")]
    code, out, err = run_cli(capsys, *base, "--holdout", "0.99")
    assert (code, out) == (2, "")
    assert err == (  # one line, and no image was scored (each would have said "no such file")
        "gamma-iqa calibrate: error: 12 rows in the label CSV are too few for --method logistic4 with --holdout 0.99: "
        "it would fit on 0 and hold out 12; it needs at least 5 to fit and 2 held out\n"
    )
    code, _, err = run_cli(capsys, *base, "--holdout", "0.05")
    assert code == 2 and "it would fit on 11 and hold out 1; it needs at least 5 to fit and 2 held out" in err


def test_calibrate_on_constant_mos_says_so(capsys, labelled, tmp_path):
    rows = [(f"img/{i:02d}.png", 3.0) for i in range(7)]
    labels = _write_labels(tmp_path, rows)
    code, _, err = run_cli(
        capsys, "calibrate", "--model", "gamma-test", "--csv", str(labels), "--images", str(labelled),
        "--crops", "center", "--workers", "0", "--holdout", "0", "--out", str(tmp_path / "c.json"),
    )  # fmt: skip
    assert code == 2
    assert (
        err
        == "gamma-iqa calibrate: error: all 7 labels have the same MOS (3.0): a calibration needs labels that vary\n"
    )


def test_a_folder_as_calibration(capsys, labelled, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    code, _, err = calibrate(capsys, labelled, "--out", str(run))  # a folder: its calibration.json
    assert code == 0 and f"wrote {run / 'calibration.json'}" in err
    image = str(labelled / "img/00.png")
    code, rows, err = score_csv(capsys, image, "--model", "gamma-test", "--calibration", str(run))
    assert code == 0 and rows[0][-1] == "calibrated", err
    assert load_calibration(run) == load_calibration(run / "calibration.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = score_csv(capsys, image, "--model", "gamma-test", "--calibration", str(empty))
    assert code == 2 and err == (
        f"gamma-iqa score: error: --calibration {empty}: is a folder without a calibration.json; give the "
        "calibration file that gamma-iqa calibrate --out wrote, or a folder holding it as calibration.json\n"
    )
    code, _, err = run_cli(capsys, "calibrate", "--model", "gamma-test", "--csv", str(labelled), "--out", "x.json")
    assert code == 2 and err == f"gamma-iqa calibrate: error: --csv {labelled}: is a folder; give the label CSV file\n"
    code, _, err = calibrate(capsys, labelled, "--out", str(tmp_path / "no" / "cal.json"))
    assert code == 2 and err == (
        f"gamma-iqa calibrate: error: --out {tmp_path / 'no' / 'cal.json'}: folder {tmp_path / 'no'} does not exist\n"
    )
