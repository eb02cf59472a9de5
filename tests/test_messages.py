"""Messages a new user meets: model and scene lists, unknown scenes, command-line advice (no Python arguments), a
non-checkpoint given to `convert`, a training run folder as --model, warnings as one line in every subcommand (also
from DataLoader workers), and what the test suite skips."""

import argparse
import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

import gamma_iqa
from gamma_iqa.data.transforms import ColourWarning, parse_seed
from gamma_iqa.engine.runtime import holding_warnings, replay_warnings
from gamma_iqa.models.checkpoint import save_checkpoint

from .conftest import perturb
from .conftest import run_cli as run
from .test_train import toy_dataset

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


def test_run_folder_messages_say_which_checkpoints_exist(capsys, tmp_path):
    from gamma_iqa.cli import _trained_line

    run_folder = tmp_path / "run"
    (run_folder / "last").mkdir(parents=True)
    (run_folder / "config.yaml").write_text("epochs: 1\n")
    code, out, err = run(capsys, "score", str(tmp_path), "--model", str(run_folder))  # no checkpoint yet
    assert (code, out) == (2, "")
    assert err == (f"gamma-iqa score: error: {run_folder} is a training run folder without a checkpoint yet: neither "
                   "best/ nor last/ holds model.safetensors (a run writes last/ at its first save, best/ at its first "
                   "evaluation)\n")  # fmt: skip
    assert _trained_line(run_folder) == f"gamma-iqa train: done; run folder {run_folder}: no checkpoint saved"
    save_checkpoint(gamma_iqa.create_model("gamma-test"), run_folder / "last")
    assert _trained_line(run_folder) == (
        f"gamma-iqa train: done; run folder {run_folder}: checkpoint last/ only, no best/ (no evaluation ran, or none "
        f"gave a finite SRCC): --model {run_folder} takes last/"
    )
    save_checkpoint(gamma_iqa.create_model("gamma-test"), run_folder / "best")
    assert _trained_line(run_folder) == (
        f"gamma-iqa train: done; run folder {run_folder}: checkpoints best/ and last/ (--model {run_folder} takes "
        "best/)"
    )


# ---- warnings: one line each, once, in every subcommand ------------------------------------------------------------
BROKEN_PROFILE = b"\0" * 16 + b"RGB " + b"not a profile" * 20  # no ICC header: cannot be applied


def broken_profile_dataset(root: Path) -> dict:
    """A toy dataset of 12 images, each with a garbage ICC profile; its config entry."""
    entry = toy_dataset(root, n=12)
    for path in (root / "img").iterdir():
        with Image.open(path) as im:
            im.load()
        im.save(path, icc_profile=BROKEN_PROFILE)
    return entry


def assert_one_line_warnings(err: str, read: int) -> None:
    """One warning line for each of `read` images (of 12) read, every warning one line, no Python warning format.

    Training names an image by its path, evaluation (as in its error lines) by its name in the label file: each
    image is read by one of them (a training image is never a test image).
    """
    lines = err.splitlines()
    pattern = r"warning: (.*/)?img/(\d\d)\.png: colour profile ignored \(not an ICC profile \(280 bytes without the "
    pattern += r"header's 'acsp' signature\)\); scored as sRGB"
    images = [m.group(2) for m in map(re.fullmatch, [pattern] * len(lines), lines) if m]
    assert len(images) == len(set(images)) == read, err
    assert not [line for line in lines if "Warning:" in line or ".py:" in line or line.startswith("  ")], err


@pytest.mark.parametrize("workers", [0, 1])
def test_training_warnings_are_one_line_once_also_from_loader_workers(capsys, tmp_path, workers):
    entry = broken_profile_dataset(tmp_path / "toy")
    sets = [f"datasets=[{json.dumps(entry)}]", "model=gamma-test", f"workers={workers}", "epochs=2", "batch_size=4",
            "eval_epochs=[2]", "eval_crops=1", f"out={tmp_path / 'run'}"]  # fmt: skip
    code, out, err = run(capsys, "train", *[arg for value in sets for arg in ("--set", value)])
    assert (code, out) == (0, "")
    assert err.splitlines()[-1].startswith(f"gamma-iqa train: done; run folder {tmp_path / 'run'}: checkpoint")
    assert_one_line_warnings(err, 12)  # read in 2 epochs (each with new workers) and the evaluation: once each


def test_eval_and_calibrate_warnings_are_one_line_also_from_loader_workers(capsys, tmp_path):
    entry = broken_profile_dataset(tmp_path / "toy")
    code, out, err = run(capsys, "eval", "--model", "gamma-test", "--dataset", "folder+csv", "--data-root",
                         entry["root"], "--csv", entry["csv"], "--mos-range", "1", "5", "--scene", "natural",
                         "--crops", "1", "--workers", "1", "--batch-size", "2")  # fmt: skip
    assert code == 0 and '"srcc"' in out
    assert_one_line_warnings(err, 12)
    code, out, err = run(capsys, "calibrate", "--model", "gamma-test", "--csv", entry["csv"], "--crops", "1",
                         "--workers", "1", "--batch-size", "2", "--out", str(tmp_path / "cal.json"))  # fmt: skip
    assert code == 0
    assert_one_line_warnings(err, 12)


def test_worker_warnings_reach_the_main_process_whole():
    warning = ColourWarning("a.png", "bad\nprofile")
    back = pickle.loads(pickle.dumps(warning))  # a DataLoader worker's item travels pickled
    assert (type(back), back.name, back.reason, str(back)) == (ColourWarning, "a.png", "bad profile", str(warning))

    class Odd(UserWarning):
        def __init__(self, a: int, b: int) -> None:
            super().__init__(f"{a}+{b}")

    def raises() -> int:
        import warnings

        warnings.warn(warning, stacklevel=1)
        warnings.warn(Odd(1, 2), stacklevel=1)  # defined in a function: cannot be pickled
        return 7

    result, held = holding_warnings(raises)
    assert result == 7 and [type(w) for w in held] == [ColourWarning, UserWarning] and str(held[1]) == "Odd: 1+2"
    with pytest.warns(UserWarning) as caught:
        replay_warnings(held)
    assert [str(w.message) for w in caught] == [str(warning), "Odd: 1+2"]


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


# ---- seeds ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "seed"), [("7", 7), ("+7", 7), ("-3", -3), (" 12 ", 12), (5, 5), ("0", 0)])
def test_a_seed_is_ascii_digits_with_an_optional_sign(text, seed):
    assert parse_seed(text) == seed


@pytest.mark.parametrize("text", ["7_0", "７", "²", "1.5", "--5", "", "+", "x", True, "9" * 5000])
def test_other_seeds_are_refused_in_one_line_by_the_library_and_the_command(capsys, tmp_path, text):
    with pytest.raises(ValueError, match="`seed` must be a whole number"):
        parse_seed(text)
    if isinstance(text, str) and len(text) < 10:
        Image.new("RGB", (80, 80)).save(tmp_path / "a.png")
        with pytest.raises(SystemExit) as exited:  # argparse's exit
            run(capsys, "score", str(tmp_path / "a.png"), "--model", "gamma-test", f"--seed={text}")
        out, err = capsys.readouterr()
        assert exited.value.code == 2 and out == ""
        assert err.splitlines()[-1] == f"gamma-iqa score: error: argument --seed: must be a whole number, got {text!r}"
