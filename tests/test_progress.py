"""Progress of `train`, `eval` and `score`: a bar on a terminal, a periodic count/loss/ETA line otherwise and a summary
after a long run, on stderr only, outputs unchanged; the default worker count follows the CPUs."""

import dataclasses
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gamma_iqa.cli import build_parser, main
from gamma_iqa.engine import progress as progress_module
from gamma_iqa.engine.progress import Progress, duration
from gamma_iqa.engine.runtime import default_workers
from gamma_iqa.engine.train import train
from gamma_iqa.engine.trainconfig import TrainConfig

from .conftest import run_cli
from .test_train import toy_config, weights


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as stderr is in an interactive shell."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def every_update(monkeypatch):
    """A progress line after every unit (the real interval is a minute)."""
    monkeypatch.setattr(progress_module, "LINE_SECONDS", 0.0)


# ---- the meter -----------------------------------------------------------------------------------------------------
def test_duration_reads_as_seconds_minutes_or_hours():
    assert [duration(s) for s in (0, 44.6, 60, 725, 3600, 11250)] == ["0s", "45s", "1m00s", "12m05s", "1h00m", "3h07m"]


def test_lines_on_a_stream_that_is_not_a_terminal(every_update):
    stream = io.StringIO()
    p = Progress(10, desc="train", unit="step", done=2, stream=stream)
    p.update(1, "epoch 1/2, loss 0.5")
    p.update(2)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("train: step 3/10 (30%), epoch 1/2, loss 0.5; ") and lines[0].endswith(" left")
    assert lines[1].startswith("train: step 5/10 (50%), epoch 1/2, loss 0.5; ")  # the status stays until replaced
    assert "steps/s" in lines[1]


def test_lines_wait_for_the_interval_and_a_disabled_meter_is_silent():
    stream = io.StringIO()
    p = Progress(10, desc="train", unit="step", stream=stream)  # the real minute: nothing yet
    for _ in range(5):
        p.update()
    off = Progress(10, desc="train", unit="step", stream=Terminal(), enabled=False)  # e.g. a torchrun rank > 0
    off.update(3)
    assert stream.getvalue() == "" and off.bar is None and off.stream.getvalue() == ""


class Clock:
    """A stand-in for `time` in engine/progress.py: `monotonic` reads `now`, which a test moves on."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_a_line_a_minute_with_thousands_and_a_summary_after_a_long_run(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_module, "time", clock)
    stream = io.StringIO()
    p = Progress(5000, desc="score", unit="image", stream=stream)
    for _ in range(1199):
        clock.now += 0.025  # 40 images/s
        p.update()
    assert stream.getvalue() == ""  # 29.975 s: no line due yet
    clock.now += 30.025
    p.update()  # image 1,200 at 60 s: the first line
    for _ in range(10):
        p.update()  # no second line within the minute
    assert stream.getvalue() == "score: image 1,200/5,000 (24%); 20 images/s, 3m10s left\n"
    clock.now += 60
    p.update(3790)
    p.finish()
    lines = stream.getvalue().splitlines()
    assert lines[1] == "score: image 5,000/5,000 (100%); 41.7 images/s, 0s left"
    assert lines[2] == "score: 5,000 images in 2m00s (41.7 images/s)" and len(lines) == 3


def test_a_resumed_runs_summary_names_the_units_done_before(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_module, "time", clock)
    stream = io.StringIO()
    p = Progress(5000, desc="score", unit="image", done=2000, stream=stream)
    clock.now += 75
    p.update(3000)
    p.finish()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "score: image 5,000/5,000 (100%); 40 images/s, 0s left"
    assert lines[1] == "score: 3,000 images in 1m15s (40 images/s); 5,000/5,000 with the 2,000 done before"


def test_a_short_run_ends_without_a_summary_and_a_disabled_meter_never_writes_one(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_module, "time", clock)
    stream = io.StringIO()
    short = Progress(3, desc="score", unit="image", stream=stream)
    clock.now += 59
    short.update(3)
    short.finish()
    off = Progress(3, desc="score", unit="image", stream=stream, enabled=False)
    clock.now += 600
    off.update(3)
    off.finish()
    assert stream.getvalue() == ""


def test_a_bar_on_a_terminal_and_messages_above_it():
    stream = Terminal()
    p = Progress(4, desc="eval toy", unit="image", stream=stream)
    p.update(2)
    p.write("epoch 1 step 2: toy SRCC 0.9")
    p.close()
    text = stream.getvalue()
    assert "eval toy" in text and "2/4" in text and "epoch 1 step 2: toy SRCC 0.9\n" in text


# ---- training ------------------------------------------------------------------------------------------------------
def run_files(out: Path) -> tuple[str, dict[str, torch.Tensor]]:
    return (out / "metrics.csv").read_text(), weights(out / "last")


def test_training_shows_progress_and_its_outputs_do_not_change(tmp_path, capsys, monkeypatch):
    cfg = lambda name: toy_config(tmp_path / name, epochs=2, max_steps=8, eval_epochs=(1,))  # noqa: E731
    quiet = train(cfg("quiet"))  # stderr is not a terminal and the run is shorter than a minute: no progress lines
    assert "train: step" not in capsys.readouterr().err
    monkeypatch.setattr(progress_module, "LINE_SECONDS", 0.0)
    lines = train(cfg("lines"))
    err = capsys.readouterr().err.splitlines()
    steps = [line for line in err if line.startswith("train: step ")]
    assert [s.split(",")[0] for s in steps] == [f"train: step {k}/8 ({100 * k / 8:.0f}%)" for k in range(1, 9)]
    assert all(" left" in s and ", loss " in s for s in steps) and "epoch 2/2" in steps[-1]
    assert any(line.startswith("epoch 1 step 4: toy SRCC") for line in err)  # the evaluation's line is kept
    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = train(cfg("bar"))
    assert "train: " in sys.stderr.getvalue() and "8/8" in sys.stderr.getvalue()
    reference_csv, reference_weights = run_files(quiet)
    for out in (lines, bar):
        csv_text, w = run_files(out)
        assert csv_text == reference_csv
        assert all(torch.equal(w[k], reference_weights[k]) for k in reference_weights)


def test_resumed_training_counts_from_where_it_stopped(tmp_path, capsys, every_update):
    cfg = toy_config(tmp_path, epochs=2, max_steps=3)  # 4 steps an epoch: stops in epoch 1
    train(cfg)
    capsys.readouterr()
    train(dataclasses.replace(cfg, max_steps=0), resume=True)
    steps = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train: step ")]
    assert steps[0].startswith("train: step 4/8 (50%), epoch 1/2") and steps[-1].startswith("train: step 8/8 (100%)")


# ---- evaluation ----------------------------------------------------------------------------------------------------
def own_data(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    rows = ["image,mos"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / f"{i}.png")
        rows.append(f"{i}.png,{1 + i * 0.5}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def test_eval_shows_progress_per_image(tmp_path, capsys, every_update):
    labels = own_data(tmp_path)
    argv = ["eval", "--model", "gamma-test", "--dataset", "folder+csv", "--data-root", str(tmp_path), "--csv",
            str(labels), "--mos-range", "1", "5", "--scene", "natural", "--crops", "1", "--workers", "0"]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    images = [line for line in err.splitlines() if line.startswith("eval folder+csv: image ")]
    assert [line.split(";")[0] for line in images] == [
        f"eval folder+csv: image {k}/6 ({100 * k / 6:.0f}%)" for k in range(1, 7)
    ]
    assert '"srcc"' in out  # the results still go to stdout, progress to stderr only


# ---- scoring -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
def test_score_shows_progress_on_stderr_and_stdout_keeps_only_rows(tmp_path, capsys, every_update, fmt):
    own_data(tmp_path, n=4)
    code, out, err = run_cli(capsys, "score", str(tmp_path), "--model", "gamma-test", "--workers", "0", "--crops", "1",
                             "--format", fmt)  # fmt: skip
    assert code == 0
    lines = err.splitlines()
    assert [line.split(";")[0] for line in lines[:4]] == [f"score: image {k}/4 ({25 * k}%)" for k in range(1, 5)]
    assert all("images/s" in line and line.endswith(" left") for line in lines[:4])
    assert len(lines) == 5 and lines[4].startswith("score: 4 images in ")  # the summary
    if fmt == "csv":
        assert out.splitlines()[0] == "path,score,scene,crops,error" and len(out.splitlines()) == 5
    elif fmt == "jsonl":
        assert [json.loads(line)["path"] for line in out.splitlines()] == [str(tmp_path / f"{i}.png") for i in range(4)]
    else:
        assert len(json.loads(out)) == 4
    assert "score:" not in out


def test_score_progress_counts_the_rows_a_resumed_output_keeps(tmp_path, capsys, every_update):
    own_data(tmp_path, n=4)
    scores = tmp_path / "out" / "scores.csv"
    scores.parent.mkdir()
    argv = ["score", str(tmp_path / "0.png"), str(tmp_path / "1.png"), "--model", "gamma-test", "--workers", "0",
            "--crops", "1", "--output", str(scores)]  # fmt: skip
    assert run_cli(capsys, *argv)[0] == 0
    argv[3:3] = [str(tmp_path / "2.png"), str(tmp_path / "3.png")]
    code, out, err = run_cli(capsys, *argv, "--resume")
    assert code == 0 and out == ""
    lines = err.splitlines()
    assert [line.split(";")[0] for line in lines[:2]] == ["score: image 3/4 (75%)", "score: image 4/4 (100%)"]
    assert lines[2].startswith("score: 2 images in ") and len(lines) == 3  # this call's images
    assert len(scores.read_text().splitlines()) == 5


def test_a_short_score_run_prints_no_progress(tmp_path, capsys):
    own_data(tmp_path, n=2)
    code, out, err = run_cli(capsys, "score", str(tmp_path), "--model", "gamma-test", "--workers", "0", "--crops", "1")
    assert code == 0 and err == "" and len(out.splitlines()) == 3


# ---- the default worker count --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cpus", "workers"), [(1, 0), (2, 0), (3, 2), (5, 4), (64, 4)])
def test_default_workers_follow_the_cpus_for_score_eval_and_train(monkeypatch, cpus, workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    monkeypatch.setattr(torch, "get_num_threads", lambda: min(cpus, 2))  # torch's usual: one thread per core
    assert default_workers() == workers
    assert TrainConfig(datasets=("koniq10k",)).workers == workers
    parser = build_parser()
    for command in (["score", "a.png"], ["eval", "--model", "m", "--dataset", "d", "--data-root", "r"]):
        assert parser.parse_args(command).workers == workers
