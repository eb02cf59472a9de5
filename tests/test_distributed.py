"""`model.score` under torchrun is a single-process call: every rank gets every score, and no rank waits for another.

One torchrun job of two gloo processes runs two phases: both ranks score the same images (each must get the full
list, equal to a plain single-process run), then rank 0 alone scores them again while rank 1 leaves (a call that
waited for its peer would hang there, so the job runs under a timeout).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gamma_iqa

from .conftest import images, run_python

TIMEOUT = 120  # seconds for the whole job; it takes about 10 on two busy cores
WORKER = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path

    import torch.distributed as dist

    import gamma_iqa
    from gamma_iqa.engine.runtime import process_group

    out, *paths = sys.argv[1:]
    with process_group("cpu") as group:
        model = gamma_iqa.create_model("gamma-test")
        Path(out, f"both.{group.rank}.json").write_text(json.dumps(model.score(paths, crops=2)))
        dist.barrier()  # both have scored: rank 1 now leaves while rank 0 scores on its own
        if group.rank == 0:
            Path(out, "alone.0.json").write_text(json.dumps(model.score(paths, crops=2)))
        print(f"rank {group.rank} of {group.world} done", flush=True)
    """
)


class Job:
    """What the two-process job left: its result files, its output, and whether it had to be killed."""

    def __init__(self, folder: Path, run: subprocess.CompletedProcess | subprocess.TimeoutExpired):
        self.folder = folder
        self.timed_out = isinstance(run, subprocess.TimeoutExpired)
        self.log = f"{run.stdout or ''}\n{run.stderr or ''}"[-4000:]
        self.returncode = None if self.timed_out else run.returncode

    def scores(self, name: str) -> list[float]:
        """The scores a rank wrote as `name` (e.g. both.1.json); fails, with the job's output, when it wrote none."""
        file = self.folder / name
        if not file.is_file():
            pytest.fail(f"the job wrote no {name} (timed out: {self.timed_out}):\n{self.log}")
        return json.loads(file.read_text())


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> list[str]:
    """Five PNG photos of different sizes."""
    folder = tmp_path_factory.mktemp("photos")
    out = []
    for i in range(5):
        t = images(1, size=70 + 6 * i, seed=i)[0]
        Image.fromarray((t * 255).round().byte().permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
        out.append(str(folder / f"{i}.png"))
    return out


@pytest.fixture(scope="module")
def job(tmp_path_factory, paths) -> Job:
    folder = tmp_path_factory.mktemp("job")
    (folder / "worker.py").write_text(WORKER)
    try:
        run = run_python([str(folder / "worker.py"), str(folder), *paths], processes=2, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        run = e
    return Job(folder, run)


@pytest.fixture(scope="module")
def single(paths) -> list[float]:
    """The scores of a plain single-process call, on one thread as the workers run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return gamma_iqa.create_model("gamma-test").score(paths, crops=2)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.timeout(TIMEOUT + 60)
def test_every_rank_gets_all_the_scores(job, single):
    assert len(single) == 5 and len(set(single)) == 5 and np.isfinite(single).all()
    assert job.scores("both.0.json") == single
    assert job.scores("both.1.json") == single


@pytest.mark.timeout(TIMEOUT + 60)
def test_a_call_on_rank_0_alone_does_not_wait_for_the_others(job, single):
    assert not job.timed_out, f"the job hung for {TIMEOUT} s:\n{job.log}"
    assert job.scores("alone.0.json") == single
    assert job.returncode == 0, job.log
    assert "rank 0 of 2 done" in job.log and "rank 1 of 2 done" in job.log
