"""Shared fixtures: the tiny registered model and the golden reference data beside the checkout."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

import gamma_iqa
from gamma_iqa import paths
from gamma_iqa.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared"  # the project's shared/ folder, beside the checkout
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """scripts/NAME.py as module NAME, registered in sys.modules (worker processes and dataclasses look it up)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def in_ci() -> bool:
    """True under CI (CI=true), where missing reference data is a failure rather than a reason to skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def shared_file(relative: str, what: str) -> Path:
    """shared/RELATIVE beside the checkout, for tests against reference data that the repository does not hold.

    Outside CI a missing file skips the test and says where it was looked for. Under CI=true it fails the test: CI
    lays shared/ beside its clone, so a missing file there means the parity checks silently stopped running.
    """
    path = SHARED / relative
    if not path.is_file():
        message = f"{what} not found at {path} (it lives in shared/ beside the checkout)"
        if in_ci():
            pytest.fail(f"{message}; under CI=true this is a failure, not a skip", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def golden() -> Path:
    """The golden reference folder (shared/data/golden): the original implementation's outputs on a tiny model."""
    return shared_file("data/golden/reference.json", "golden reference data").parent


@pytest.fixture(scope="session")
def reference(golden: Path) -> dict:
    return json.loads((golden / "reference.json").read_text())


@pytest.fixture
def no_trained_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No trained weights anywhere (package data pointed at an empty temporary folder, an empty $GAMMA_IQA_HOME), so
    tests of fresh builds hold once gamma-lite's weights ship; returns the package-data folder."""
    monkeypatch.setattr(paths, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setenv("GAMMA_IQA_HOME", str(tmp_path / "home"))
    return tmp_path / "weights"


@pytest.fixture
def tiny() -> gamma_iqa.Gamma:
    """gamma-test with its MoAE scales, experts and routers perturbed, so that every part changes the output."""
    model = gamma_iqa.create_model("gamma-test")
    perturb(model)
    return model


@torch.no_grad()
def perturb(model: gamma_iqa.Gamma, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.requires_grad and name != "score_level":
            p.add_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() == 0 else 0.02))
    model.score_level.copy_(torch.tensor([0.1, 0.3, 0.55, 0.7, 0.95]))


def images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """n RGB images in [0, 1] with structure (gradients plus noise), (n, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    base = ramp[None, None, :, None] * ramp[None, None, None, :]
    return (0.6 * base + 0.4 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago (for a torchrun rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_python(
    args: list[str], *, processes: int = 1, port: int | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    """`python ARGS`, or the same under `torchrun --nproc-per-node processes` (gloo on CPU, one thread a process).

    Raises:
        subprocess.TimeoutExpired: the run took over `timeout` seconds (a hang); all its processes were killed and
            the exception carries what they printed.
    """
    launch = [sys.executable]
    if processes > 1:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
        if torchrun is None:
            pytest.skip("torchrun is not installed beside this Python")
        launch = [torchrun, "--nproc-per-node", str(processes), "--master-port", str(port or free_port())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*launch, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # torchrun puts its workers in sessions of their own and ends them on SIGTERM; SIGKILL on our session is for
        # a launcher that does not stop.
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        raise subprocess.TimeoutExpired(proc.args, timeout, out, err) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_gamma_iqa(argv: list[str], *, processes: int = 1, port: int | None = None) -> subprocess.CompletedProcess:
    """`python -m gamma_iqa ARGV`, or the same under `torchrun --nproc-per-node processes` (see `run_python`)."""
    return run_python(["-m", "gamma_iqa", *argv], processes=processes, port=port)


@pytest.fixture(scope="module")
def gamma_test_model() -> gamma_iqa.Gamma:
    """The tiny random `gamma-test` model, once per test module."""
    return gamma_iqa.create_model("gamma-test")


@pytest.fixture(scope="module")
def perturbed_model() -> gamma_iqa.Gamma:
    """`gamma-test` with its experts, routers and scales perturbed (`perturb`): scores differ from image to image; once
    per test module, so its cached text features serve every test there."""
    built = gamma_iqa.create_model("gamma-test")
    perturb(built)
    return built


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """`gamma-iqa ARGV` in this process: exit code, stdout, stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def score_rows(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, list[dict], str]:
    """`gamma-iqa score` with gamma-test in this process: exit code, the CSV rows on stdout, stderr."""
    code, out, err = run_cli(capsys, "score", "--model", "gamma-test", "--workers", "0", *argv)
    return code, list(csv.DictReader(io.StringIO(out))), err
