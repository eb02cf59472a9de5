"""The command line: list, convert errors, and the console entry point."""

import subprocess
import sys

import pytest
import torch
from PIL import Image

import gamma_iqa
from gamma_iqa.cli import as_flags, main

from .conftest import run_cli as run


def test_list(capsys):
    code, out, _ = run(capsys, "list", "models")
    assert code == 0 and "gamma-vit-b16\t" in out and "gamma-test\t" in out
    code, out, _ = run(capsys, "list", "scenes")
    names = [line.split("\t")[0] for line in out.splitlines()]
    assert names == ["generic", "natural", "aigc", "underwater", "face", "aesthetic"]


def test_library_parameters_become_flags():
    assert as_flags("`batch_size` must be >= 1") == "--batch-size must be >= 1"
    assert as_flags("`resume` works with `fmt` csv") == "--resume works with --format csv"  # renamed flags
    assert as_flags("`overrides` 'lr': expected key=value") == "--set 'lr': expected key=value"
    assert as_flags("build them with `python scripts/x.py`") == "build them with `python scripts/x.py`"
    # a backticked word that is no option of ours (torch's messages have them) stays as it is
    assert as_flags("the `weights_only` argument in `torch.load`") == "the `weights_only` argument in `torch.load`"


def test_convert_errors_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    code, _, err = run(capsys, "convert", str(bad), str(tmp_path / "out"))
    assert code == 2 and str(bad) in err and err.count("\n") == 1
    code, _, err = run(capsys, "score", "x.png", "--model", str(tmp_path / "nowhere"))
    assert code == 2 and "nowhere" in err and err.count("\n") == 1


def test_console_entry_point(tmp_path):
    Image.new("RGB", (80, 80), (90, 140, 200)).save(tmp_path / "a.png")
    argv = ["score", str(tmp_path / "a.png"), "--model", "gamma-test", "--crops", "center"]
    proc = subprocess.run(
        [sys.executable, "-m", "gamma_iqa", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "path,score,scene,crops,error" and lines[1].endswith(",natural,center,")
    assert proc.stderr == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "foo"], "--device 'foo' is not a device"),
        (["--device", "cuda:x"], "--device 'cuda:x' is not a device"),
        (["--bpe", "nope.txt.gz"], "--bpe nope.txt.gz: no such file"),
        (["--workers", "-1"], "--workers must be >= 0"),
        (["--scene", "martian"], "unknown scene 'martian' for model gamma-test"),
        (["--html", "no/such/folder/r.html"], "--html no/such/folder/r.html: folder"),
    ],
)
def test_score_usage_errors_are_one_line_before_any_work(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 64), (90, 120, 30)).save("a.png")
    code, out, err = run(capsys, "score", "a.png", "--model", "gamma-test", "--crops", "center", *argv)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


def test_mps_on_a_machine_without_it_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    code, _, err = run(capsys, "score", "x.png", "--device", "mps")
    assert code == 2 and "--device mps: no MPS device is available" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"gamma-iqa {gamma_iqa.__version__}"


@pytest.mark.parametrize("crops", [0, "abc", -2, "²", "３", True])  # "²" is a digit to str.isdigit, not to int()
def test_python_crops_errors_name_the_parameter(crops):
    model = gamma_iqa.create_model("gamma-test")
    with pytest.raises(ValueError, match=r"^`crops` must be a positive number"):
        model.score(torch.rand(1, 3, 64, 64), crops=crops)
