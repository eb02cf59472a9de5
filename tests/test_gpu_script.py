"""benchmarks/gpu_run.sh in its CPU smoke mode: every step runs and ends with its JSON line, within the budget (a
lent GPU gives one call of it; a broken step there costs a session's only chance). Slow: about 1 to 3 minutes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["tests", "e2e", "tp_eager", "tp_compiled", "train_b64", "tp_graphs", "train_compiled", "e2e_graphs"]
STEPS += ["decode", "tp_sdpa"]


def smoke_run(
    out: Path, budget: int, timeout: float, *, check: bool = True
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`SMOKE=1 bash benchmarks/gpu_run.sh` into `out` with `budget` seconds: the process and summary.txt's lines;
    `check`: every step that ran passed (exit 0)."""
    env = {**os.environ, "SMOKE": "1", "OUT": str(out), "BUDGET": str(budget)}
    done = subprocess.run(
        ["bash", "benchmarks/gpu_run.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0 or not check, done.stderr
    return done, (out / "summary.txt").read_text().splitlines()


@pytest.mark.slow
def test_the_gpu_script_runs_every_step_in_smoke_mode(tmp_path: Path):
    done, summary = smoke_run(tmp_path, 900, 1200)
    assert [line.split()[1].rstrip(":") for line in summary[:-1]] == STEPS
    for name in STEPS:
        assert f"== {name}: exit 0 in" in done.stdout, done.stdout
        last = (tmp_path / f"{name}.log").read_text().strip().splitlines()[-1]
        if name != "tests":  # pytest's summary line; the benchmarks end with one JSON object
            assert isinstance(json.loads(last), dict), (name, last)


@pytest.mark.slow
def test_a_spent_budget_skips_the_remaining_steps(tmp_path: Path):
    """BUDGET 20: the first step gets what there is, every later one is skipped with a line; the run still ends."""
    _, summary = smoke_run(tmp_path, 20, 300, check=False)
    assert summary[1:-1] == [f"== {name}: skipped, budget spent" for name in STEPS[1:]]
    assert json.loads((tmp_path / "e2e.log").read_text()) == {"skipped": "budget spent (20 s)"}


def test_bad_settings_and_a_missing_gpu_stop_before_any_step(tmp_path: Path):
    """A typo in BUDGET or SMOKE, or a GPU run where there is no GPU, is one line and exit 2, not a run of failures."""
    cases = [
        ({"SMOKE": "1", "BUDGET": "1.5"}, "BUDGET must be whole seconds, at least 20 (e.g. 480), got '1.5'"),
        ({"SMOKE": "1", "BUDGET": "08"}, "got '08'"),  # bash would read a leading 0 as octal
        ({"SMOKE": "1", "BUDGET": "19"}, "got '19'"),  # no step could start
        ({"SMOKE": "yes"}, "SMOKE must be 0 (a GPU run) or 1 (the CPU smoke run), got 'yes'"),
        ({"SMOKE": "0"}, "no CUDA device (or no torch) here; on a CPU run the smoke mode: SMOKE=1 bash"),
    ]
    for settings, message in cases:
        if settings.get("SMOKE") == "0" and torch_has_cuda():
            continue
        env = {**os.environ, "OUT": str(tmp_path), **settings}
        done = subprocess.run(
            ["bash", "benchmarks/gpu_run.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
        assert not (tmp_path / "summary.txt").exists()


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
