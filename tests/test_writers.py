"""Row writers with resume, used from Python without the command line: formats, flushing, resume after a kill."""

import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

import gamma_iqa
from gamma_iqa.data.inputs import Entry, expand_paths
from gamma_iqa.engine.scoring import Scorer, ScoreRow
from gamma_iqa.outputs import open_rows, run_score
from gamma_iqa.outputs.writers import read_done, skip_done

from .conftest import images, run_cli


def rows_for(names: list[str]) -> list[ScoreRow]:
    """Score rows without a model: the i-th scores i / 10, a name starting with 'bad' has an error instead."""
    out = []
    for i, name in enumerate(names):
        if name.startswith("bad"):
            out.append(ScoreRow(i, name, scene="natural", error="no such file or folder"))
        else:
            out.append(ScoreRow(i, name, score=i / 10, scene="natural", crops="center"))
    return out


NAMES = ["a.png", "b, with comma.png", "bad.png", "a.png", "c.png"]  # a repeated input is scored twice


def write_all(path: Path, fmt: str, names: list[str] = NAMES) -> str:
    with open_rows(path, fmt) as rows:
        for row in rows_for(names):
            rows.write(row)
    return path.read_text()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("cut", [0, 1, 3, 4])
def test_resume_after_a_partial_line_gives_the_uninterrupted_file(tmp_path, fmt, cut):
    whole = write_all(tmp_path / f"whole.{fmt}", fmt)
    entries = [Entry(n, Path(n)) for n in NAMES]
    target = tmp_path / f"part.{fmt}"
    header = 1 if fmt == "csv" else 0
    lines = whole.splitlines(keepends=True)
    target.write_text("".join(lines[: header + cut]) + lines[header + cut][:7])  # killed halfway through a row
    with open_rows(target, fmt, resume=True) as rows:
        todo = rows.remaining(entries)
        assert [e.name for e in todo] == NAMES[cut:]
        done = len(NAMES) - len(todo)
        for row in rows_for(NAMES)[done:]:
            rows.write(row)
    assert target.read_text() == whole
    with open_rows(target, fmt, resume=True) as rows:  # all done: nothing left, nothing written
        assert rows.remaining(entries) == []
    assert target.read_text() == whole


def test_rows_are_on_disk_as_they_finish(tmp_path):
    target = tmp_path / "rows.jsonl"
    with open_rows(target, "jsonl") as rows:
        for n, row in enumerate(rows_for(NAMES), 1):
            rows.write(row)
            assert len(target.read_text().splitlines()) == n  # flushed before the next row is scored
    first = json.loads(target.read_text().splitlines()[0])
    assert first == {"path": "a.png", "score": 0.0, "scene": "natural", "crops": "center", "error": None}
    with open_rows(tmp_path / "rows.csv", "csv") as rows:
        rows.write(rows_for(NAMES)[2])
        text = (tmp_path / "rows.csv").read_text()
        assert text == "path,score,scene,crops,error\nbad.png,,natural,,no such file or folder\n"


def test_json_is_one_array_written_at_the_end_and_stdout_stays_open(tmp_path, capsys):
    target = tmp_path / "rows.json"
    with open_rows(target, "json") as rows:
        for row in rows_for(NAMES):
            rows.write(row)
        assert target.read_text() == ""  # an array cannot be valid before its last row
    data = json.loads(target.read_text())
    assert [r["path"] for r in data] == NAMES and data[2]["error"] == "no such file or folder"
    with open_rows(None, "csv") as rows:
        rows.write({"path": "x.png", "score": 0.5})  # a mapping works too; missing fields are empty
    assert capsys.readouterr().out == "path,score,scene,crops,error\nx.png,0.5,,,\n"
    print("still open")
    assert capsys.readouterr().out == "still open\n"


def test_resume_of_a_missing_or_empty_file_starts_it(tmp_path):
    entries = [Entry(n, Path(n)) for n in NAMES]
    for target in (tmp_path / "new.csv", tmp_path / "empty.csv"):
        if target.name == "empty.csv":
            target.write_text("path,sco")  # killed while writing the header
        with open_rows(target, "csv", resume=True) as rows:
            assert rows.remaining(entries) == entries
            for row in rows_for(NAMES):
                rows.write(row)
        assert target.read_text() == write_all(tmp_path / "whole.csv", "csv")


def test_done_rows_cancel_entries_one_for_one(tmp_path):
    write_all(tmp_path / "part.csv", "csv", NAMES[:4])
    done = read_done(tmp_path / "part.csv", "csv")
    assert done == {"a.png": 2, "b, with comma.png": 1, "bad.png": 1}
    more = [Entry(n) for n in ["a.png", "a.png", "a.png", "c.png", "bad.png", "d.png"]]
    assert [e.name for e in skip_done(more, done)] == ["a.png", "c.png", "d.png"]


def test_errors_name_the_parameters(tmp_path):
    with pytest.raises(ValueError, match="`resume` needs `output`"):
        open_rows(None, "csv", resume=True)
    with pytest.raises(ValueError, match="`resume` works with `fmt` csv or jsonl"):
        open_rows(tmp_path / "x.json", "json", resume=True)
    with pytest.raises(ValueError, match="`fmt` must be one of csv, jsonl, json, got 'xml'"):
        open_rows(tmp_path / "x.xml", "xml")
    rows = open_rows(tmp_path / "x.csv")
    with pytest.raises(RuntimeError, match="outside its `with` block"):
        rows.write(rows_for(NAMES)[0])
    assert not (tmp_path / "x.csv").exists()  # nothing is opened before the block


def test_run_score_from_python_resumes_like_the_command_line(tmp_path):
    """A Python caller scores into a file, is killed midway, and resumes: the file equals an uninterrupted run's."""
    for i, image in enumerate(images(4, size=72, seed=3)):
        Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
    model = gamma_iqa.create_model("gamma-test")
    entries = expand_paths([str(tmp_path / "*.png"), str(tmp_path / "gone.png")])
    options = {"crops": 2, "seed": 1, "workers": 0}
    full, part = tmp_path / "full.csv", tmp_path / "part.csv"
    failures: list[str] = []
    assert run_score(model, entries, open_rows(full), on_error=lambda r: failures.append(r.path), **options)
    assert failures == [str(tmp_path / "gone.png")]
    whole = full.read_text()
    lines = whole.splitlines(keepends=True)
    part.write_text("".join(lines[:3]) + lines[3][:12])  # header, two rows, and a third cut short
    report = tmp_path / "report.html"
    assert run_score(model, entries, open_rows(part, resume=True), html=report, **options)
    assert part.read_text() == whole
    assert report.read_text().count('class="card"') == 4  # the report covers the whole file, not only this run's rows
    scores = [float(r["score"]) for r in csv.DictReader(io.StringIO(whole)) if r["score"]]
    assert scores == model.score(sorted(tmp_path.glob("*.png")), crops=2, seed=1)
    rows = list(Scorer(model, **options).run(open_rows(part, resume=True).remaining(entries)))
    assert rows == []  # nothing left to do


# ---- the crops field: a JSON number when it is one -----------------------------------------------------------------
def test_crops_is_a_json_number_when_numeric_and_text_in_csv(tmp_path):
    rows = [ScoreRow(0, "a.png", score=0.5, scene="natural", crops="10"),
            ScoreRow(1, "b.png", score=0.4, scene="natural", crops="10 (upscaled)"),
            ScoreRow(2, "c.png", score=0.3, scene="natural", crops="center"),
            ScoreRow(3, "d.png", scene="natural", error="no such file")]  # fmt: skip
    for fmt in ("jsonl", "json", "csv"):
        with open_rows(tmp_path / f"out.{fmt}", fmt) as w:
            for row in rows:
                w.write(row)
    text = (tmp_path / "out.jsonl").read_text()
    expected = [10, "10 (upscaled)", "center", None]
    assert [json.loads(line)["crops"] for line in text.splitlines()] == expected
    assert [r["crops"] for r in json.loads((tmp_path / "out.json").read_text())] == expected
    assert [r["crops"] for r in csv.DictReader((tmp_path / "out.csv").open())] == ["10", "10 (upscaled)", "center", ""]


def test_older_outputs_with_text_crops_resume_and_check(tmp_path, capsys):
    for i in range(3):
        Image.new("RGB", (240, 240), (40 * i, 90, 200)).save(tmp_path / f"{i}.png")
    out = tmp_path / "scores.jsonl"
    argv = ["score", "--model", "gamma-test", "--workers", "0", "--crops", "2", "--format", "jsonl",
            "--output", str(out)]  # fmt: skip
    assert run_cli(capsys, *argv, str(tmp_path / "0.png"), str(tmp_path / "1.png"))[0] == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["crops"] for r in rows] == [2, 2]
    out.write_text("".join(json.dumps({**r, "crops": str(r["crops"])}) + "\n" for r in rows))  # as written before
    code, _, err = run_cli(capsys, *argv, *(str(tmp_path / f"{i}.png") for i in range(3)), "--resume")
    assert code == 0, err
    assert [json.loads(line)["crops"] for line in out.read_text().splitlines()] == ["2", "2", 2]  # kept; appended
    code, report, err = run_cli(capsys, "score", "--check", str(out))
    assert code == 0, err
    assert "checked 3 of 3 scored rows" in report and "all match" in report
