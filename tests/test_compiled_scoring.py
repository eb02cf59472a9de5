"""`Scorer(compile=...)` / `gamma-iqa score --compile`: the image tower compiled with torch.compile, equal to the
eager scores to float rounding; what it refuses; the CUDA-graph mode on a GPU (skipped without one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import gamma_iqa
from gamma_iqa.engine import scoring
from gamma_iqa.engine.runtime import COMPILE_MODES, compile_mode
from gamma_iqa.engine.scoring import Scorer

from .conftest import run_cli, score_rows
from .test_pipeline import photo

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grace_hopper.jpg"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture
def recorded(monkeypatch) -> list[dict]:
    """The keyword arguments of every Gamma.compile_towers call; the towers stay eager (no compile time)."""
    calls: list[dict] = []

    def compile_towers(self, **options):
        calls.append(options)
        self.compiled = options.get("mode") or "default"
        return self

    monkeypatch.setattr(gamma_iqa.Gamma, "compile_towers", compile_towers)
    return calls


def test_compile_modes_reach_the_image_tower_once(recorded):
    model = gamma_iqa.create_model("gamma-test")
    assert Scorer(model).compile is None and not recorded  # eager unless asked for
    scorer = Scorer(model, compile="reduce-overhead")
    # The text tower is left eager: its features are cached, and a CUDA graph's output would be replayed over.
    assert recorded == [{"text": False, "mode": "reduce-overhead"}]
    assert scorer.backend == {"name": "torch", "compile": "reduce-overhead"}
    Scorer(model, compile="reduce-overhead")  # the model is compiled in that mode already
    Scorer(model, compile="default")  # another mode compiles again, torch.compile's default taking no `mode`
    assert recorded[1:] == [{"text": False}]
    # As training's `compile: true`: True is the default mode (compiled already).
    assert Scorer(model, compile=True).compile == "default" and len(recorded) == 2
    # The model stays compiled: a Scorer not asking for it runs (and records, and marks CUDA-graph steps for) the mode
    # the model is in; on a model never compiled, None and False are eager.
    assert Scorer(model).compile == Scorer(model, compile=False).compile == "default"
    assert Scorer(model).backend == {"name": "torch", "compile": "default"}
    assert Scorer(gamma_iqa.create_model("gamma-test"), compile=False).compile is None and len(recorded) == 2


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"compile": "fast"}, ["`compile` must be one of", ", ".join(COMPILE_MODES), "'fast'"]),
        ({"compile": "default", "backend": "onnxruntime"}, ["`compile` is for the torch backend"]),
    ],
)
def test_bad_compile_options_are_refused(recorded, options, words):
    model = gamma_iqa.create_model("gamma-test")
    if options.get("backend") == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the onnx extra (pip install gamma-iqa[onnx])")
    with pytest.raises(ValueError) as e:
        Scorer(model, **options)
    assert all(w in str(e.value) for w in words) and not recorded


def test_a_model_without_compiled_towers_is_refused_and_pointed_to_onnxruntime():
    with pytest.raises(ValueError, match=r"model gamma-lite has no compiled path .*`backend` onnxruntime"):
        Scorer(gamma_iqa.create_model("gamma-lite"), compile="default")


def test_cli_compile_options(capsys, recorded, tmp_path: Path):
    image = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(photo(0)).save(image)
    out = tmp_path / "s.csv"
    code, _, err = score_rows(capsys, str(image), "--compile-mode", "max-autotune", "--output", str(out))
    assert code == 0 and recorded == [{"text": False, "mode": "max-autotune"}], err
    assert "compiling the image tower (torch.compile, mode max-autotune): this first forward takes" in err
    record = json.loads(out.with_name("s.csv.provenance.json").read_text())
    assert record["backend"] == {"name": "torch", "compile": "max-autotune"}  # the scores are eager's to rounding
    code, _, err = run_cli(capsys, "score", str(image), "--compile", "--backend", "onnxruntime")
    assert (
        code == 2
        and err.strip().endswith(
            "--compile is for the torch backend; drop it with --backend onnxruntime (its graph is built)"
        )
        and err.count("\n") == 1
    )
    code, _, err = run_cli(capsys, "score", "--check", str(out), "--compile")
    assert code == 2 and "--check re-scores with the settings it recorded; it takes no --compile" in err
    code, _, err = run_cli(capsys, "score", str(image), "--model", "gamma-lite", "--compile")
    # One line: the refusal, with no "compiling ..." announced before it.
    assert code == 2 and err.count("\n") == 1 and "--backend onnxruntime" in err and "compiling" not in err


def test_compiled_scores_equal_the_eager_ones(perturbed_model, monkeypatch):
    """A real compile on the CPU (inductor; about 20 s): rows within 1e-6 of eager, the same at every position."""
    monkeypatch.setattr(scoring, "IMAGES_PER_FORWARD", {**scoring.IMAGES_PER_FORWARD, "cpu": 3})
    model = gamma_iqa.create_model("gamma-test")
    model.load_state_dict(perturbed_model.state_dict())
    inputs = [photo(i, 80, 100) for i in range(7)]
    eager = model.score(inputs, crops=2)
    compiled = model.score(inputs, crops=2, compile="default")
    assert model.compiled == "default"
    np.testing.assert_allclose(compiled, eager, atol=1e-6, rtol=0)
    # Fixed-size forwards: an image's score does not depend on its neighbours, compiled too.
    assert model.score(inputs[::-1], crops=2, batch_size=2, compile="default")[::-1] == compiled


@cuda
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_cuda_compiled_scoring_equals_eager(perturbed_model, mode):
    """On CUDA, bf16: compiled (with CUDA graphs for reduce-overhead) within bf16 rounding of eager, the same rows
    whatever the batch size and the queue of forwards (outputs are never read after a later replay)."""
    gpu = gamma_iqa.create_model("gamma-test")
    gpu.load_state_dict(perturbed_model.state_dict())
    gpu = gpu.cuda().eval()
    inputs = [photo(i, 200, 260) for i in range(70)]  # 3 forwards of 32, the last padded
    eager = gpu.score(inputs, crops=10, dtype="bf16")
    compiled = gpu.score(inputs, crops=10, dtype="bf16", compile=mode)
    again = gpu.score(inputs, crops=10, dtype="bf16", batch_size=5, compile=mode)
    assert compiled == again
    np.testing.assert_allclose(compiled, eager, atol=2e-2, rtol=0)


def test_resume_refuses_another_forward(capsys, recorded, tmp_path: Path):
    """Compiled and eager scores differ in their last bits: a resumed file must not mix them (nor torch's with
    onnxruntime's), and nothing is appended when it is refused."""
    from PIL import Image

    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(photo(i)).save(paths[-1])
    out = tmp_path / "s.csv"
    code, _, err = score_rows(capsys, *paths[:2], "--output", str(out))
    assert code == 0, err
    before = out.read_text()
    code, _, err = score_rows(capsys, *paths, "--output", str(out), "--resume", "--compile")
    assert code == 2 and err.strip() == (
        f"gamma-iqa score: error: --resume: the rows in {out} were scored with backend torch, this call scores with "
        "backend torch compiled (default); resume with the first run's --backend and --compile, or write a new "
        "--output"
    )
    assert out.read_text() == before  # (the tower was wrapped, lazily: torch.compile compiles on the first call)
    code, _, err = score_rows(capsys, *paths, "--output", str(out), "--resume")  # the same forward: resumes
    assert code == 0 and len(out.read_text().splitlines()) == 4, err


def test_a_missing_vocabulary_is_one_line_before_any_output_or_announcement(capsys, monkeypatch, tmp_path: Path):
    def no_vocab(self, key):
        raise FileNotFoundError("CLIP BPE vocabulary not found: pass --bpe PATH")

    monkeypatch.setattr(gamma_iqa.Gamma, "tokens", no_vocab)
    out = tmp_path / "s.csv"
    code, _, err = score_rows(capsys, str(EXAMPLE), "--compile", "--output", str(out))
    assert code == 2 and err.count("\n") == 1 and "vocabulary not found" in err and "compiling" not in err
    assert list(tmp_path.iterdir()) == []  # no header-only output, no provenance


def test_a_huge_crop_count_is_refused_at_once(capsys):
    code, _, err = run_cli(capsys, "score", str(EXAMPLE), "--crops", "99999999999999999999999")
    assert (
        code == 2 and err.strip() == "gamma-iqa score: error: --crops must be at most 1000 per image, got " + "9" * 23
    )


@pytest.mark.parametrize(
    ("value", "mode"), [(None, None), (False, None), (True, "default"), *((m, m) for m in COMPILE_MODES)]
)
def test_one_reading_of_compile_for_scoring_and_training(value, mode):
    assert compile_mode(value) == mode


@pytest.mark.parametrize("value", ["fast", "", "Default", 1])
def test_an_unknown_compile_mode_names_the_setting_and_the_modes(value):
    with pytest.raises(ValueError, match=f"`compile` must be one of {', '.join(COMPILE_MODES)}, got {value!r}"):
        compile_mode(value)
