"""Messages a new user meets: model and scene lists, unknown scenes, command-line advice (no Python arguments), a
non-checkpoint given to `convert`, a training run folder as --model, and what the test suite skips."""

import argparse
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

import gamma_iqa
from gamma_iqa.models.checkpoint import save_checkpoint

from .conftest import perturb
from .conftest import run_cli as run

ROOT = Path(__file__).resolve().parents[1]


def test_list_models_says_gamma_lite_is_shipped(capsys):
    code, out, _ = run(capsys, "list", "models")
    (lite,) = [line for line in out.splitlines() if line.startswith("gamma-lite\t")]
    assert code == 0 and "shipped in the package" in lite and "not shipped" not in lite


# ---- scenes --------------------------------------------------------------------------------------------------------
def test_an_unknown_scene_is_called_unknown_and_the_known_ones_are_listed(capsys, tmp_path):
    Image.new("RGB", (240, 240), (90, 140, 200)).save(tmp_path / "a.png")
    code, out, err = run(capsys, "score", str(tmp_path / "a.png"), "--model", "gamma-lite", "--scene", "bogus")
    known = ", ".join(gamma_iqa.list_scenes())
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err == (
        f"gamma-iqa score: error: unknown scene 'bogus': the known scenes are {known}; model gamma-lite takes natural\n"
    )
    # a known scene the model has no training data for keeps its own message
    code, _, err = run(capsys, "score", str(tmp_path / "a.png"), "--model", "gamma-lite", "--scene", "aigc")
    assert code == 2 and "scene 'aigc' is not supported by model gamma-lite (no training data for it)" in err


# ---- advice in command-line terms ----------------------------------------------------------------------------------
def test_missing_weights_advice_is_python_for_python_and_a_command_for_the_command_line(capsys, no_trained_weights):
    with pytest.raises(gamma_iqa.CheckpointError, match=r"`gamma-iqa convert .*, or pass pretrained=False"):
        gamma_iqa.create_model("gamma-vit-b16")
    code, _, err = run(capsys, "score", "x.png", "--model", "gamma-vit-b16")
    assert code == 2 and "gamma-iqa convert WEIGHTS.pth" in err and "pretrained" not in err and err.count("\n") == 1
    code, _, err = run(capsys, "train", "--set", "model=gamma-vit-b16", "--set", "datasets=[koniq10k]")
    assert code == 1 and "set backbone=PATH" in err and "pretrained" not in err


# ---- convert on what is not a checkpoint ---------------------------------------------------------------------------
def test_convert_of_a_non_checkpoint_is_our_own_line_never_torchs_unsafe_advice(capsys, tmp_path):
    torch.save({"params": argparse.Namespace(a=1)}, tmp_path / "objects.pth")  # refused by the safe loader
    (tmp_path / "notes.pth").write_text("not a checkpoint\n")
    expected = {
        "objects.pth": "not a plain PyTorch weights file (it holds Python objects beyond tensors",
        "notes.pth": "not a PyTorch checkpoint, or a truncated one (17 bytes)",
        "": "a folder, not a PyTorch checkpoint file",
    }
    for name, message in expected.items():
        code, _, err = run(capsys, "convert", str(tmp_path / name), str(tmp_path / "out"))
        assert code == 2 and err.count("\n") == 1 and message in err, err
        assert "weights_only" not in err and "\x1b" not in err  # no torch advice, no terminal escapes
    assert not (tmp_path / "out").exists()


# ---- a training run folder as --model ------------------------------------------------------------------------------
def scores(capsys, *argv) -> tuple[list[str], str]:
    code, out, err = run(capsys, "score", *argv, "--crops", "center", "--workers", "0")
    assert code == 0, err
    return [line.split(",")[1] for line in out.splitlines()[1:]], err


def test_a_run_folder_as_model_means_its_best_checkpoint_else_its_last(capsys, tmp_path):
    image = tmp_path / "a.png"
    Image.new("RGB", (80, 72), (200, 90, 30)).save(image)
    run_folder = tmp_path / "runs" / "x"
    for seed, name in ((1, "best"), (2, "last")):
        model = gamma_iqa.create_model("gamma-test")
        perturb(model, seed)
        save_checkpoint(model, run_folder / name)
    best, _ = scores(capsys, str(image), "--model", str(run_folder / "best"))
    last, _ = scores(capsys, str(image), "--model", str(run_folder / "last"))
    assert best != last
    via_run, err = scores(capsys, str(image), "--model", str(run_folder))
    assert via_run == best
    assert err == f"note: {run_folder} is a training run folder: using {run_folder / 'best'}, its best checkpoint\n"
    (run_folder / "best" / "model.safetensors").unlink()
    via_run, err = scores(capsys, str(image), "--model", str(run_folder))
    assert via_run == last and f"using {run_folder / 'last'}, its last checkpoint (it has no best/)" in err


# ---- the skipped tests are explained -------------------------------------------------------------------------------
def test_every_skip_says_why_and_the_readme_says_what_is_skipped_outside_ci():
    bare = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for call in re.findall(r"importorskip\([^)]*\)", path.read_text()):
            if "reason=" not in call:
                bare.append(f"{path.name}: {call}")
    assert bare == []  # a bare importorskip says only "could not import 'cv2'"
    readme = (ROOT / "README.md").read_text()
    (line,) = [s for s in readme.splitlines() if s.startswith("Outside CI, tests skip")]
    assert all(word in line for word in ("shared/", "CUDA", "opencv", "scikit-image", "CI=true"))
