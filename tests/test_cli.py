"""The command line: list, convert, and first scoring with per-file errors and exit codes."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from gamma_iqa.cli import main
from gamma_iqa.transforms import load_image, make_crops


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name, size in [("a.png", (80, 96)), ("sub/b.JPG", (120, 70)), ("c.webp", (64, 64))]:
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list(capsys):
    code, out, _ = run(capsys, "list", "models")
    assert code == 0 and "gamma-vit-b16\t" in out and "gamma-test\t" in out
    code, out, _ = run(capsys, "list", "scenes")
    assert [line.split("\t")[0] for line in out.splitlines()] == [
        "generic",
        "natural",
        "aigc",
        "underwater",
        "face",
        "aesthetic",
    ]


def test_score_folder_in_order_with_per_file_errors(capsys, photos, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes((photos / "a.png").read_bytes()[:60])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    code, out, err = run(
        capsys,
        "score",
        str(photos),
        str(corrupt),
        str(tmp_path / "missing.png"),
        str(empty),
        "--model",
        "gamma-test",
        "--format",
        "json",
    )
    rows = json.loads(out)
    assert code == 1
    names = [r["path"].rsplit("/", 1)[-1] for r in rows]
    assert names == ["a.png", "c.webp", "b.JPG", "corrupt.jpg", "missing.png", "empty.png"]
    assert all(r["error"] is None and 0 < r["score"] < 1 for r in rows[:3])
    assert rows[2]["crops"] == "10" and rows[1]["crops"] == "10"
    assert all(r["score"] is None and r["error"] for r in rows[3:])
    assert "missing.png: no such file or folder" in err
    assert all(len(line.split("\n")) == 1 for line in err.splitlines())


def test_seeded_crops_are_per_image(capsys, photos):
    a = str(photos / "a.png")
    _, alone, _ = run(capsys, "score", a, "--model", "gamma-test", "--format", "jsonl")
    _, among, _ = run(capsys, "score", str(photos / "c.webp"), a, "--model", "gamma-test", "--format", "jsonl")
    _, reseeded, _ = run(capsys, "score", a, "--model", "gamma-test", "--format", "jsonl", "--seed", "7")
    score = json.loads(alone)["score"]
    assert json.loads(among.splitlines()[1])["score"] == score
    assert json.loads(reseeded)["score"] != score


def test_score_matches_the_model(capsys, photos):
    from gamma_iqa import create_model

    model = create_model("gamma-test")
    prepared = make_crops(load_image(photos / "a.png"), 4, 64, seed=3)
    with torch.no_grad():
        want = float(model(prepared.crops, "face").mean())
    _, out, _ = run(
        capsys,
        "score",
        str(photos / "a.png"),
        "--model",
        "gamma-test",
        "--scene",
        "face",
        "--crops",
        "4",
        "--seed",
        "3",
        "--format",
        "json",
    )
    assert json.loads(out)[0]["score"] == want


def test_small_images_are_upscaled_and_flagged(capsys, tmp_path):
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "tiny.png")
    code, out, _ = run(capsys, "score", str(tmp_path / "tiny.png"), "--model", "gamma-test", "--crops", "center")
    assert code == 0 and out.splitlines()[1].split(",")[3] == "center (upscaled)"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scene", "space"], "unknown scene 'space'"),
        (["--crops", "0"], "--crops must be"),
        (["--crops", "many"], "--crops must be"),
    ],
)
def test_usage_errors_exit_2(capsys, photos, argv, message):
    code, out, err = run(capsys, "score", str(photos), "--model", "gamma-test", *argv)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


def test_convert_errors_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    code, _, err = run(capsys, "convert", str(bad), str(tmp_path / "out"))
    assert code == 2 and str(bad) in err and err.count("\n") == 1
    code, _, err = run(capsys, "score", "x.png", "--model", str(tmp_path / "nowhere"))
    assert code == 2 and "nowhere" in err


def test_console_entry_point(photos):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gamma_iqa",
            "score",
            str(photos / "a.png"),
            "--model",
            "gamma-test",
            "--crops",
            "center",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "path,score,scene,crops,error"
