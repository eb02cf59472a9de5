"""The command line: list, convert errors, and the console entry point."""

import subprocess
import sys

from PIL import Image

from gamma_iqa.cli import as_flags, main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


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
