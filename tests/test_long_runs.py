"""Nothing lost in long runs: odd file names, resume with a report, Ctrl-C, a bounded report, the failure summary."""

import csv
import io
import json
import os
import subprocess
import sys
import tracemalloc
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gamma_iqa import cli
from gamma_iqa.cli import main
from gamma_iqa.engine.scoring import Scorer, ScoreRow
from gamma_iqa.outputs.report import ERRORS_SHOWN, Report
from gamma_iqa.outputs.writers import read_rows, shown_name

ODD = os.fsdecode(b"b_\xe9.png")  # not UTF-8: Python holds the byte as the surrogate escape \udce9


def save_image(path: Path | str, seed: int, size: int = 48) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size + seed % 5, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "PNG")


def make_folder(root: Path, names: list[str]) -> Path:
    """A folder of small random PNGs with these names; skips the test where the file system refuses a name."""
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        try:
            save_image(root / name, seed=i)
        except (OSError, UnicodeEncodeError) as e:
            pytest.skip(f"the file system refuses the name {name!r} ({e})")
    return root


def score(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["score", "--model", "gamma-test", "--crops", "center", "--workers", "0", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def cut_after_rows(path: Path, fmt: str, keep: int, extra: int = 9) -> bytes:
    """Cut `path` after its first `keep` rows plus `extra` bytes of the next (a kill mid-row); returns the whole file.

    A csv row ends at a newline outside quotes (a quoted name may hold one), after the header; a jsonl row is a line.
    """
    whole = path.read_bytes()
    ends, pos, inside = [0], 0, False
    for line in whole.split(b"\n")[:-1]:
        pos += len(line) + 1
        inside ^= fmt == "csv" and line.count(b'"') % 2 == 1
        if not inside:
            ends.append(pos)
    cut = ends[keep + (fmt == "csv")] + extra
    assert cut < len(whole)
    path.write_bytes(whole[:cut])
    return whole


# ---- 1. names that are not UTF-8 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_undecodable_names_are_scored_written_exactly_and_resumed(capsys, tmp_path, fmt):
    folder = make_folder(tmp_path / "imgs", ["a.png", ODD, "c.png"])
    out, report = tmp_path / f"scores.{fmt}", tmp_path / "report.html"
    code, _, err = score(capsys, str(folder), "--output", str(out), "--format", fmt, "--html", str(report))
    assert (code, err) == (0, "")
    rows = list(read_rows(out, fmt))
    assert [Path(r["path"]).name for r in rows] == ["a.png", ODD, "c.png"] and all(r["score"] for r in rows)
    raw = out.read_bytes()
    if fmt == "csv":
        assert b"/b_\xe9.png," in raw  # the file name's own bytes: the column names the very file
    else:
        raw.decode("ascii")  # JSON Lines stay ASCII, the byte as a \udce9 escape
        assert json.loads(raw.splitlines()[1])["path"] == str(folder / ODD)
    page = report.read_bytes().decode("utf-8")  # the page is valid UTF-8 and shows the byte escaped
    assert "b_\\xe9.png" in page and page.count('class="card"') == 3
    whole = cut_after_rows(out, fmt, keep=1)  # killed while writing the odd name's row
    assert score(capsys, str(folder), "--output", str(out), "--format", fmt, "--resume")[0] == 0
    assert out.read_bytes() == whole
    assert score(capsys, str(folder), "--output", str(out), "--format", fmt, "--resume")[0] == 0  # nothing left
    assert out.read_bytes() == whole


def test_undecodable_names_on_stdout_and_as_a_manifest(tmp_path):
    folder = make_folder(tmp_path / "imgs", ["a.png", ODD])
    argv = [sys.executable, "-m", "gamma_iqa", "score", "--model", "gamma-test", "--crops", "center", "--workers", "0"]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}  # a strict stdout, as on a UTF-8 terminal
    proc = subprocess.run([*argv, str(folder)], capture_output=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[2].startswith(os.fsencode(folder) + b"/b_\xe9.png,")
    (tmp_path / "again.csv").write_bytes(proc.stdout)  # the output serves as a manifest of the same files
    manifest = ["--manifest", str(tmp_path / "again.csv")]
    again = subprocess.run([*argv, *manifest], capture_output=True, env=env, check=False)
    assert (again.returncode, again.stdout) == (0, proc.stdout)


# ---- 2. resume with a report -----------------------------------------------------------------------------------------
class Page(HTMLParser):
    """The cards (score, thumbnail present) and error rows of a report page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.cards: list[float] = []
        self.thumbs = self.error_rows = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and a.get("class") == "card":
            self.cards.append(float(a["data-score"]))
        if tag == "img" and (a.get("src") or "").startswith("data:image/jpeg;base64,"):
            self.thumbs += 1
        if tag == "tr":
            self.error_rows += 1


def test_resume_with_html_reports_every_row_of_the_output(capsys, tmp_path):
    folder = make_folder(tmp_path / "imgs", [f"{i}.png" for i in range(6)])
    args = [str(folder), str(tmp_path / "gone.png"), "--output", str(tmp_path / "s.csv")]
    assert score(capsys, *args)[0] == 1
    whole = cut_after_rows(tmp_path / "s.csv", "csv", keep=4)
    report = tmp_path / "report.html"
    code = score(capsys, *args, "--resume", "--html", str(report))[0]
    assert code == 1 and (tmp_path / "s.csv").read_bytes() == whole
    rows = list(csv.DictReader(io.StringIO(whole.decode())))
    page = Page(report.read_text())
    assert page.cards == pytest.approx(sorted((float(r["score"]) for r in rows if r["score"]), reverse=True), abs=1e-6)
    assert len(page.cards) == 6 and page.thumbs == 6 and page.error_rows == 1  # 4 rows kept, 3 scored now
    assert "6 scored · 1 failed" in report.read_text()


# ---- 3. newlines and quotes in names ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_names_with_newlines_and_quotes_are_resumed_not_scored_again(capsys, tmp_path, fmt):
    folder = make_folder(tmp_path / "imgs", ["a.png", "new\nline.png", 'q"uote, comma.png', "z.png"])
    (folder / "em\npty.png").write_bytes(b"")  # fails: its stderr line stays one line
    out = tmp_path / f"s.{fmt}"
    code, _, err = score(capsys, str(folder), "--output", str(out), "--format", fmt)
    assert code == 1 and err.splitlines()[0] == f"error: {folder}/em\\npty.png: empty file (0 bytes)"
    names = [Path(r["path"]).name for r in read_rows(out, fmt)]
    assert names == ["a.png", "em\npty.png", "new\nline.png", 'q"uote, comma.png', "z.png"]
    whole = out.read_bytes()
    for keep, extra in [(2, 9), (2, 40), (3, 3)]:  # cut inside the newline name's row, before and after its newline
        cut_after_rows(out, fmt, keep=keep, extra=extra)
        # the empty file's error row counts in every resumed run's status, whether it came before the cut or not
        assert score(capsys, str(folder), "--output", str(out), "--format", fmt, "--resume")[0] == 1
        assert out.read_bytes() == whole
    code, _, err = score(capsys, str(folder), "--output", str(out), "--format", fmt, "--resume")  # all there
    assert code == 1 and out.read_bytes() == whole
    assert err.splitlines()[-1] == "gamma-iqa score: 1 of 5 images failed" and "nothing left to score" in err


def test_shown_name_is_one_printable_line():
    assert shown_name("a\nb\t.png") == "a\\nb\\t.png"
    assert shown_name(ODD) == "b_\\xe9.png" and shown_name("é ü.png") == "é ü.png"


# ---- 4. Ctrl-C -------------------------------------------------------------------------------------------------------
def interrupt_after(monkeypatch, n: int) -> None:
    """Scorer.run raises KeyboardInterrupt (a Ctrl-C) after yielding `n` rows."""
    real = Scorer.run

    def run(self, entries, **options):
        for i, row in enumerate(real(self, entries, **options)):
            if i == n:
                raise KeyboardInterrupt
            yield row

    monkeypatch.setattr(Scorer, "run", run)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
def test_ctrl_c_is_one_line_exit_130_and_a_consistent_file(capsys, tmp_path, monkeypatch, fmt):
    folder = make_folder(tmp_path / "imgs", [f"{i}.png" for i in range(5)])
    full, part = tmp_path / f"full.{fmt}", tmp_path / f"part.{fmt}"
    assert score(capsys, str(folder), "--output", str(full), "--format", fmt)[0] == 0
    with monkeypatch.context() as patch:
        interrupt_after(patch, 3)
        code, out, err = score(capsys, str(folder), "--output", str(part), "--format", fmt, "--html", "r.html")
    assert code == 130 and out == "" and err.count("\n") == 1
    assert err.startswith("gamma-iqa score: interrupted after 3 rows")
    if fmt == "json":  # the array is closed: valid JSON of the rows so far
        assert json.loads(part.read_text()) == json.loads(full.read_text())[:3]
        return
    assert f"(complete in {part}); rerun the same command with --resume" in err
    assert full.read_text().startswith(part.read_text()) and len(list(read_rows(part, fmt))) == 3
    assert score(capsys, str(folder), "--output", str(part), "--format", fmt, "--resume")[0] == 0
    assert part.read_bytes() == full.read_bytes()


def test_an_interrupted_resume_names_the_rows_in_the_file_in_all(capsys, tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "imgs", [f"{i}.png" for i in range(6)])
    part = tmp_path / "part.csv"
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        assert score(capsys, str(folder), "--output", str(part))[0] == 130
        code, _, err = score(capsys, str(folder), "--output", str(part), "--resume")
    assert code == 130
    assert err == (
        f"gamma-iqa score: interrupted after 2 rows (complete in {part}, 4 rows in all); rerun the same command with "
        "--resume to score the rest\n"
    )


def test_a_resume_counts_the_rows_of_these_inputs_and_notes_the_others(capsys, tmp_path):
    folder = make_folder(tmp_path / "imgs", ["a.png", "b.png", "c.png"])
    (folder / "bad.png").write_bytes(b"")
    out = tmp_path / "s.csv"
    assert score(capsys, str(folder), "--output", str(out))[0] == 1
    (folder / "bad.png").unlink()  # fixed by removing it: the file keeps its row, which no longer counts
    save_image(folder / "d.png", seed=9)
    code, _, err = score(capsys, str(folder), "--output", str(out), "--resume")
    assert code == 0
    assert err == (
        f"gamma-iqa score: note: {out} also holds 1 row of inputs not given this time; they are kept and not counted\n"
    )
    assert [Path(r["path"]).name for r in read_rows(out, "csv")] == ["a.png", "b.png", "bad.png", "c.png", "d.png"]


def test_ctrl_c_to_stdout_and_outside_the_scoring(capsys, tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "imgs", ["a.png", "b.png"])
    interrupt_after(monkeypatch, 1)
    code, out, err = score(capsys, str(folder))
    assert code == 130 and err == "gamma-iqa score: interrupted after 1 row\n" and len(out.splitlines()) == 2

    def refuse(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "create_model", refuse)  # Ctrl-C while the model loads
    assert score(capsys, str(folder))[::2] == (130, "gamma-iqa score: interrupted\n")


# ---- 5. a bounded report ---------------------------------------------------------------------------------------------
def synthetic(n: int, failed_every: int = 0):
    """n rows made lazily: row i scores a fixed pseudo-random value; every `failed_every`-th one failed."""
    rng = np.random.default_rng(0)
    for i in range(n):
        if failed_every and i % failed_every == 0:
            yield {"path": f"bad{i}.png", "score": "", "scene": "natural", "crops": "", "error": "no such file"}
        else:
            yield ScoreRow(i, f"img{i}.png", score=float(rng.random()), scene="natural", crops="center")


def test_report_memory_and_page_do_not_grow_with_the_run(tmp_path):
    sizes, peaks = [], []
    for n in (2_000, 20_000):
        tracemalloc.start()
        report = Report(top=3)
        for row in synthetic(n):
            report.add(row)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        page = report.write(tmp_path / f"r{n}.html", model="m", score_range=(0.0, 1.0)).read_text()
        sizes.append(len(page))
        scores = sorted((r.score for r in synthetic(n)), reverse=True)
        assert Page(page).cards == pytest.approx(scores[:3] + scores[-3:], abs=1e-6)  # the 3 best, the 3 worst
        assert f"The 3 best and the 3 worst of {n:,} scored images" in page
    assert abs(sizes[1] - sizes[0]) < 20 and peaks[1] < peaks[0] + 20_000  # ten times the rows, the same page


def test_report_lists_a_bounded_number_of_failures(tmp_path):
    report = Report(top=2)
    for row in synthetic(3 * ERRORS_SHOWN, failed_every=2):
        report.add(row)
    page = Page(report.write(tmp_path / "r.html", model="m", score_range=(0.0, 1.0)).read_text())
    assert page.error_rows == ERRORS_SHOWN and len(page.cards) == 4
    text = (tmp_path / "r.html").read_text()
    assert f"and {int(1.5 * ERRORS_SHOWN) - ERRORS_SHOWN:,} more: see the output file" in text


def test_html_top_on_the_command_line(capsys, tmp_path):
    folder = make_folder(tmp_path / "imgs", [f"{i}.png" for i in range(7)])
    report = tmp_path / "r.html"
    code, out, _ = score(capsys, str(folder), "--html", str(report), "--html-top", "2")
    assert code == 0
    scores = sorted((float(r["score"]) for r in csv.DictReader(io.StringIO(out))), reverse=True)
    page = Page(report.read_text())
    assert page.cards == pytest.approx(scores[:2] + scores[-2:], abs=1e-6) and page.thumbs == 4
    assert "The 2 best and the 2 worst of 7 scored images (set the number with --html-top)" in report.read_text()
    code, _, err = score(capsys, str(folder), "--html", str(report), "--html-top", "0")
    assert code == 2 and err == "gamma-iqa score: error: --html-top must be >= 1, got 0\n"


# ---- the failure summary ---------------------------------------------------------------------------------------------
def test_failures_end_with_one_summary_line_and_exit_1(capsys, tmp_path):
    folder = make_folder(tmp_path / "imgs", ["a.png", "b.png", "c.png"])
    (folder / "d.png").write_text("not an image")
    code, out, err = score(capsys, str(folder), str(tmp_path / "gone.png"))
    assert code == 1 and len(out.splitlines()) == 6
    assert err.splitlines()[-1] == "gamma-iqa score: 2 of 5 images failed" and err.count("\n") == 3
    code, _, err = score(capsys, str(folder / "a.png"))
    assert (code, err) == (0, "")


def test_an_output_or_report_that_is_an_input_image_or_the_other_file_is_refused(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / "a.png")
    original = (folder / "a.png").read_bytes()
    argv = ["score", "--model", "gamma-test", "--workers", "0", str(folder)]
    for extra, what in (
        (["--output", str(folder / "a.png")], "--output"),
        (["--html", str(folder / "a.png")], "--html"),
        (["--output", str(tmp_path / "o.csv"), "--html", str(tmp_path / "o.csv")], "--output and --html are one"),
    ):
        assert main(argv + extra) == 2
        err = capsys.readouterr().err
        assert what in err and len(err.strip().splitlines()) == 1, err
        assert (folder / "a.png").read_bytes() == original  # the image is untouched
    assert not (tmp_path / "o.csv").exists()


def test_resume_of_the_other_format_or_an_implied_json_array_is_one_line_naming_the_fix(capsys, tmp_path):
    folder = make_folder(tmp_path / "imgs", ["a.png"])
    lines, table = tmp_path / "s.jsonl", tmp_path / "t.csv"
    assert score(capsys, str(folder), "--output", str(lines))[0] == 0
    assert score(capsys, str(folder), "--output", str(table))[0] == 0
    for out, fmt, hint in [
        (lines, "csv", "it holds JSON lines: use --format jsonl"),
        (table, "jsonl", "it is a CSV file: use --format csv"),
    ]:
        code, _, err = score(capsys, str(folder), "--output", str(out), "--format", fmt, "--resume")
        assert code == 2 and err.count("\n") == 1 and err.rstrip().endswith(hint), err
    code, _, err = score(capsys, str(folder), "--output", str(tmp_path / "new.JSON"), "--resume")
    assert code == 2 and "implies --format json" in err and "give --format jsonl or csv" in err
    assert not (tmp_path / "new.JSON").exists()
