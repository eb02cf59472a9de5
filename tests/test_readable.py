"""Issue 15: how sure a score is (crop spread, level probabilities) and reproducible runs (provenance, --check)."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gamma_iqa
from gamma_iqa.cli import main
from gamma_iqa.data.transforms import load_image, make_crops
from gamma_iqa.engine.scoring import DETAIL_FIELDS, LEVEL_NAMES, ScoreRow
from gamma_iqa.outputs.provenance import TIMES, check_output, sidecar
from gamma_iqa.outputs.writers import read_rows

from .conftest import perturb

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

LEVELS = [f"p_{n}" for n in LEVEL_NAMES]


def save_images(folder: Path, n: int = 4) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        pixels = np.random.default_rng(i).integers(0, 256, (90 + 7 * i, 100, 3), dtype=np.uint8)
        paths.append(folder / f"i{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def score(capsys, *argv: str) -> tuple[int, str, str]:
    crops = [] if "--check" in argv else ["--crops", "3"]  # --check re-scores with the recorded crops
    code = main(["score", *crops, "--workers", "0", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---- how sure --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gamma-test", "gamma-lite"])
def test_spread_and_levels_are_exact(tmp_path, tiny, no_trained_weights, name):
    model = tiny if name == "gamma-test" else gamma_iqa.create_model("gamma-lite", pretrained=False)
    if name == "gamma-lite":
        perturb(model)  # level values away from 0.2..1.0, so the expectation is not a coincidence
    path = save_images(tmp_path, 1)[0]
    (row,) = model.score(path, crops=5, seed=3, details=True)
    crops = make_crops(load_image(path), 5, model.image_size, 3).crops  # (5, 3, S, S): the crops the engine scores
    with torch.no_grad():
        per_crop, probs = model(crops, levels=True)
        assert torch.equal(per_crop, model(crops))  # asking for the levels does not change a score
    assert row["score"] == pytest.approx(float(per_crop.mean()), abs=1e-7)
    assert row["spread"] == pytest.approx(float(torch.std(per_crop, correction=0)), abs=1e-7)  # population std
    assert row["spread"] > 0
    p = torch.tensor([row[k] for k in LEVELS], dtype=torch.float64)
    assert torch.allclose(p, probs.double().mean(0), atol=1e-7)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(p @ model.score_level.detach().double()) == pytest.approx(row["score"], abs=1e-6)
    assert row["score"] == model.score(path, crops=5, seed=3)[0]  # same number with or without details


def test_one_crop_has_no_spread(tiny):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    rows = tiny.score(images, crops="center", details=True)
    assert [r["spread"] for r in rows] == [0.0, 0.0]
    assert [r["score"] for r in rows] == tiny.score(images, crops="center")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
def test_details_add_columns_only_when_asked(capsys, tmp_path, fmt):
    save_images(tmp_path / "imgs", 3)
    plain, detailed = tmp_path / f"plain.{fmt}", tmp_path / f"detailed.{fmt}"
    base = [str(tmp_path / "imgs"), "--model", "gamma-test", "--format", fmt]
    assert score(capsys, *base, "--output", str(plain))[0] == 0
    assert score(capsys, *base, "--output", str(detailed), "--details")[0] == 0

    def rows(path: Path) -> list[dict]:
        return json.loads(path.read_text()) if fmt == "json" else list(read_rows(path, fmt))

    assert [list(r) for r in rows(plain)] == [list(ScoreRow.FIELDS)] * 3  # the columns and order of before
    assert [list(r) for r in rows(detailed)] == [list(ScoreRow.FIELDS + DETAIL_FIELDS)] * 3
    for p, d in zip(rows(plain), rows(detailed), strict=True):
        assert {k: d[k] for k in ScoreRow.FIELDS} == p
        assert sum(float(d[k]) for k in LEVELS) == pytest.approx(1.0, abs=1e-6)


def test_details_on_stdout_and_in_the_report(capsys, tmp_path):
    save_images(tmp_path / "imgs", 2)
    report = tmp_path / "r.html"
    code, out, _ = score(capsys, str(tmp_path / "imgs"), "--model", "gamma-test", "--details", "--html", str(report))
    assert code == 0
    header, *lines = list(csv.reader(out.splitlines()))
    assert header == list(ScoreRow.FIELDS + DETAIL_FIELDS) and len(lines) == 2
    page = report.read_text()
    assert page.count('class="spread"') == 2 and "id='provenance'" in page


def test_resume_refuses_other_columns(capsys, tmp_path):
    save_images(tmp_path / "imgs", 2)
    out = tmp_path / "s.csv"
    base = [str(tmp_path / "imgs"), "--model", "gamma-test", "--output", str(out)]
    assert score(capsys, *base)[0] == 0
    code, _, err = score(capsys, *base, "--resume", "--details")
    assert code == 2 and "--resume" in err and "--details" in err


# ---- reproducible later ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
def test_provenance_of_two_runs_differs_only_in_times(capsys, tmp_path, fmt):
    save_images(tmp_path / "imgs", 2)
    out = tmp_path / f"s.{fmt}"
    argv = [str(tmp_path / "imgs"), "--model", "gamma-test", "--format", fmt, "--output", str(out), "--seed", "4"]
    records = []
    for _ in range(2):
        assert score(capsys, *argv)[0] == 0
        records.append(json.loads(sidecar(out).read_text()))
    first, second = ({k: v for k, v in r.items() if k not in TIMES} for r in records)
    assert first == second
    assert all(r["finished"] for r in records)
    assert first["model"]["name"] == "gamma-test" and first["model"]["files"] == []  # built fresh: no weights file
    assert (first["crops"], first["seed"], first["dtype"], first["device"]) == ("3", 4, "fp32", "cpu")
    assert first["scenes"] == ["natural"] and first["format"] == fmt
    assert first["gamma_iqa"] == gamma_iqa.__version__ and first["versions"]["torch"] == torch.__version__
    assert {"pillow", "jpeg", "libjpeg_turbo"} <= set(first["versions"])


def test_check_passes_unchanged_and_detects_a_changed_checkpoint(capsys, tmp_path):
    save_images(tmp_path / "imgs", 5)
    ckpt = tmp_path / "model"
    model = gamma_iqa.create_model("gamma-test")
    perturb(model, seed=1)
    gamma_iqa.save_checkpoint(model, ckpt)
    out = tmp_path / "s.jsonl"
    code, _, _ = score(capsys, str(tmp_path / "imgs"), "--model", str(ckpt), "--format", "jsonl", "--output", str(out))
    assert code == 0
    record = json.loads(sidecar(out).read_text())
    assert [Path(f["file"]).name for f in record["model"]["files"]] == ["model.safetensors", "config.json"]
    assert all(len(f["sha256"]) == 64 for f in record["model"]["files"])

    code, text, _ = score(capsys, "--check", str(out))
    assert code == 0 and "checked 5 of 5 scored rows" in text and "all match" in text

    perturb(model, seed=2)  # another checkpoint under the same name
    gamma_iqa.save_checkpoint(model, ckpt)
    code, text, _ = score(capsys, "--check", str(out), "--check-rows", "3")
    assert code == 1 and "checked 3 of 5" in text and text.count("mismatch: ") == 3
    assert "note: the model's parameters changed" in text
    result = check_output(out, check_rows=2, seed=1)
    assert not result.ok and len(result.checked) == 2 and result.max_difference > result.tolerance


def test_check_sets_apart_rows_it_cannot_re_read_and_finds_relative_paths_from_the_recorded_cwd(
    capsys, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    save_images(run / "imgs", 3)
    monkeypatch.chdir(run)
    out = tmp_path / "s.csv"
    assert score(capsys, "imgs", "--model", "gamma-test", "--output", str(out))[0] == 0  # relative paths
    assert json.loads(sidecar(out).read_text())["cwd"] == str(run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the rows' relative paths resolve against the recorded working directory
    code, text, _ = score(capsys, "--check", str(out))
    assert code == 0 and "checked 3 of 3 scored rows" in text and "could not be re-read" not in text

    (run / "imgs" / "i1.png").unlink()  # one image gone, and a row read from standard input
    rows = list(csv.DictReader(out.open()))
    rows.append({**rows[0], "path": "-"})
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code, text, err = score(capsys, "--check", str(out))
    assert code == 0 and "mismatch" not in text  # the rows it re-read match: the others are no mismatch
    assert "2 rows could not be re-read (not compared): imgs/i1.png: no such file (and 1 more)" in text
    assert "checked 2 of 4 scored rows" in text and "all match" in text and err == ""

    rows[0]["score"] = str(float(rows[0]["score"]) + 0.1)  # a mismatch beside the unreadable rows: exit 1
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code, text, _ = score(capsys, "--check", str(out))
    assert code == 1 and text.count("mismatch: ") == 1 and "1 do not match" in text

    for f in (run / "imgs").iterdir():  # nothing left to re-read: a clear error, exit 2
        f.unlink()
    code, text, err = score(capsys, "--check", str(out))
    assert code == 2 and "4 rows could not be re-read" in text and "checked" not in text
    assert "none of the 4 sampled rows" in err and "nothing was compared" in err


def test_resume_refuses_a_changed_model(capsys, tmp_path):
    save_images(tmp_path / "imgs", 2)
    ckpt = tmp_path / "model"
    model = gamma_iqa.create_model("gamma-test")
    gamma_iqa.save_checkpoint(model, ckpt)
    out = tmp_path / "s.csv"
    base = [str(tmp_path / "imgs"), "--model", str(ckpt), "--output", str(out)]
    assert score(capsys, *base)[0] == 0
    perturb(model)
    gamma_iqa.save_checkpoint(model, ckpt)
    code, _, err = score(capsys, *base, "--resume")
    assert code == 2 and "--resume" in err and "model" in err


def test_check_usage_errors(capsys, tmp_path):
    save_images(tmp_path / "imgs", 1)
    lone = tmp_path / "lone.csv"
    lone.write_text("path,score,scene,crops,error\n")
    code, _, err = score(capsys, "--check", str(lone))
    assert code == 2 and "no provenance file" in err
    code, _, err = score(capsys, "--check", str(lone), str(tmp_path / "imgs"))
    assert code == 2 and "--check" in err


# ---- options that only mean something with another (a new user's trial) ------------------------------------------
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--map-stride", "8"], "--map-stride only works with --map"),
        (["--html-top", "3"], "--html-top only works with --html"),
        (["--check-rows", "3"], "--check-rows only works with --check"),
        (["--tolerance", "0.1"], "--tolerance only works with --check"),
    ],
)
def test_an_option_without_the_one_it_needs_is_refused(capsys, tmp_path, extra, message):
    save_images(tmp_path / "imgs", 1)
    code, out, err = score(capsys, str(tmp_path / "imgs"), "--model", "gamma-test", *extra)
    assert (code, out, err) == (2, "", f"gamma-iqa score: error: {message}\n")  # was silently ignored


def test_check_refuses_the_settings_it_would_ignore(capsys, tmp_path):
    save_images(tmp_path / "imgs", 1)
    out = tmp_path / "s.csv"
    assert score(capsys, str(tmp_path / "imgs"), "--model", "gamma-test", "--output", str(out))[0] == 0
    code, _, err = score(capsys, "--check", str(out), "--model", "gamma-test", "--details", "--mos-scale", "ava")
    assert code == 2 and err == (
        "gamma-iqa score: error: --check re-scores with the settings it recorded; it takes no --model, --details, "
        "--mos-scale\n"
    )
    assert score(capsys, "--check", str(out), "--check-rows", "1", "--tolerance", "1e-5")[0] == 0


def _example():
    spec = importlib.util.spec_from_file_location("improve_by_gradient", EXAMPLES / "improve_by_gradient.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.jpg"], "error: missing.jpg: no such file"),
        (["--steps", "0"], "error: argument --steps: must be a whole number >= 1, got 0"),
        (["--steps", "x"], "error: argument --steps: must be a whole number >= 1, got 'x'"),
        (["--crops", "-2"], "error: argument --crops: must be a whole number >= 1, got -2"),
        (["--lr", "0"], "error: --lr must be > 0 and --fidelity >= 0, got 0.0 and 0.0"),
    ],
)
def test_gradient_example_refuses_bad_arguments_with_a_usage_line(capsys, argv, message):
    with pytest.raises(SystemExit) as caught:
        _example().main(argv)
    assert caught.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(message)  # argparse's line, not a traceback


def test_gradient_example_unreadable_image_or_unknown_model_is_one_line(capsys, tmp_path):
    example = _example()
    (tmp_path / "notes.jpg").write_text("not an image")
    assert example.main([str(tmp_path / "notes.jpg"), "--model", "gamma-test"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("improve_by_gradient.py: error: ") and "image" in err
    assert example.main(["--model", "no-such-model"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("improve_by_gradient.py: error: unknown model 'no-such-model'")
