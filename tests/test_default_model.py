"""The shipped default: gamma-lite's package-data checkpoint, found by create_model, used by `score` without --model."""

from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gamma_iqa
from gamma_iqa import paths
from gamma_iqa.cli import main
from gamma_iqa.models import factory
from gamma_iqa.models.lite import GammaLite

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def shipped(no_trained_weights: Path) -> Path:
    return no_trained_weights


def ship_tiny(shipped: Path) -> GammaLite:
    """A gamma-lite (random backbone, perturbed head) saved where the package ships its trained weights."""
    model = gamma_iqa.create_model("gamma-lite", pretrained=False, seed=3)
    with torch.no_grad():
        model.score_level.copy_(torch.tensor([0.05, 0.3, 0.5, 0.7, 0.95]))
        for p in model.anchors.values():
            p.mul_(3)
    gamma_iqa.save_checkpoint(model, shipped / "gamma-lite")
    return model


def test_create_model_loads_the_shipped_checkpoint(shipped, recwarn):
    assert factory.trained_weights("gamma-lite") is None
    saved = ship_tiny(shipped)
    assert factory.trained_weights("gamma-lite") == shipped / "gamma-lite"
    model = gamma_iqa.create_model("gamma-lite")
    assert not [w for w in recwarn if "random quality head" in str(w.message)]  # no fallback build
    reference = saved.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


def test_a_copy_under_gamma_home_wins_over_the_shipped_one(shipped, tmp_path):
    ship_tiny(shipped)
    other = gamma_iqa.create_model("gamma-lite", pretrained=False, seed=4)
    gamma_iqa.save_checkpoint(other, tmp_path / "home" / "gamma-lite")
    assert factory.trained_weights("gamma-lite") == tmp_path / "home" / "gamma-lite"
    loaded = gamma_iqa.create_model("gamma-lite")
    assert torch.equal(loaded.anchors["natural"], other.anchors["natural"])


def test_score_without_model_uses_the_shipped_gamma_lite(shipped, tmp_path, capsys):
    model = ship_tiny(shipped)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (240, 230), (120, 90, 60)).save(photo)
    assert main(["score", str(photo), "--crops", "center"]) == 0
    out, _ = capsys.readouterr()
    path, score, scene, crops, error = out.splitlines()[1].split(",")
    assert (path, scene, crops, error) == (str(photo), "natural", "center", "")
    assert float(score) == pytest.approx(model.score([str(photo)], crops="center")[0], abs=1e-6)


def test_score_without_model_and_without_weights_is_one_clear_line(shipped, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (240, 230)).save(photo)
    assert main(["score", str(photo)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert "gamma-lite has no trained weights" in err and "scripts/build_default_model.py" in err and "--model" in err


def test_pyproject_ships_the_weights_as_package_data():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs tomllib (Python >= 3.11)")
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["gamma_iqa"]
    relative = paths.shipped_weights("gamma-lite").relative_to(Path(gamma_iqa.__file__).parent)
    for name in ("config.json", "model.safetensors"):
        assert any(fnmatch(str(relative / name), p) for p in patterns), name


# ---- the weights that ship ----------------------------------------------------------------------------------------
SHIPPED = paths.shipped_weights("gamma-lite")
SAMPLE = ROOT / "examples" / "grace_hopper.jpg"


@pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="no gamma-lite weights in the package")
def test_the_shipped_weights_are_fp16_small_and_order_distortions_of_the_sample_photo():
    from safetensors import safe_open

    from gamma_iqa.data.distortions import distort

    assert (SHIPPED / "model.safetensors").stat().st_size <= 20_000_000
    with safe_open(str(SHIPPED / "model.safetensors"), "pt") as f:
        floats = {f.get_slice(k).get_dtype() for k in f.keys()} - {"I64"}  # noqa: SIM118 (not a dict); I64: BatchNorm counters
    assert floats == {"F16"}
    model = gamma_iqa.create_model("gamma-lite")
    assert isinstance(model, GammaLite) and next(model.parameters()).dtype == torch.float32
    photo = np.asarray(Image.open(SAMPLE).convert("RGB"), dtype=np.float32) / 255
    for kind in ("gaussian_blur", "white_noise", "jpeg"):
        versions = [distort(photo, kind, s, np.random.default_rng(0)) for s in (0.3, 0.9)]
        light, strong = model.score([(v * 255).round().astype(np.uint8) for v in versions], crops="center")
        assert 0 < strong < light < 1, kind  # a stronger distortion of the same photo scores lower
