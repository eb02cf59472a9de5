"""The family and model registries: every model has a family, checkpoints pick theirs by kind, names are unique.

A new family is one module's worth of code plus its registration: the toy family below is defined here, and nothing in
models/ knows it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import gamma_iqa
from gamma_iqa.models import registry
from gamma_iqa.models.base import QualityModel
from gamma_iqa.models.checkpoint import CONFIG_FILE, METADATA_KEY, WEIGHTS_FILE
from gamma_iqa.models.gamma import Gamma, GammaConfig
from gamma_iqa.models.lite import GammaLite
from gamma_iqa.models.registry import (
    Family,
    ModelSpec,
    family_of,
    get_family,
    list_families,
    list_models,
    model_spec,
    register_family,
    register_model,
)
from gamma_iqa.models.state import CheckpointError

from .conftest import images


@contextmanager
def scratch_registries() -> Iterator[None]:
    """Registrations made inside are dropped on exit; the built-in ones are kept as they were."""
    families, models = dict(registry._FAMILIES), dict(registry._MODELS)
    try:
        yield
    finally:
        registry._FAMILIES.clear()
        registry._FAMILIES.update(families)
        registry._MODELS.clear()
        registry._MODELS.update(models)


@pytest.fixture
def scratch() -> Iterator[None]:
    with scratch_registries():
        yield


# ---- a toy third family: its config, its model, its backbone reader and its registration, all outside models/ -------
@dataclass(frozen=True)
class ToyConfig:
    name: str = "toy-test"
    image_size: int = 16
    width: int = 4  # channels of the patch "backbone"
    default_scene: str = "natural"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ToyConfig:
        return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})


class Toy(QualityModel):
    """A 4x4-patch convolution, average pooling and a sigmoid unit: (B, 3, H, W) -> (B,) in (0, 1)."""

    kind = "toy"

    def __init__(self, config: ToyConfig, *, backbone_state: Mapping[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = nn.Conv2d(3, config.width, 4, stride=4)
        if backbone_state is not None:
            self.backbone.load_state_dict(backbone_state)
        self.head = nn.Linear(config.width, 1)
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def scenes(self) -> list[str]:
        return ["natural"]

    def prompt_key(self, scene: str | None) -> str:
        if scene not in (None, "natural"):
            raise ValueError(f"unknown scene {scene!r}")
        return "natural"

    def forward(self, images: torch.Tensor, scene: str | Sequence[str | None] | None = None) -> torch.Tensor:
        self.scene_keys(scene, images.shape[0])
        features = self.backbone((images - self.mean) / self.std).mean(dim=(2, 3))  # (B, width)
        return torch.sigmoid(self.head(features)).squeeze(-1)


def load_toy_backbone(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


TOY = Family(
    kind="toy",
    config_class=ToyConfig,
    model_class=Toy,
    load_backbone=load_toy_backbone,
    configure=lambda config, state: dataclasses.replace(config, width=state["weight"].shape[0]),
)


def register_toy() -> None:
    register_family(TOY)
    register_model(ModelSpec(ToyConfig(), "toy family for the registry tests", needs_weights=False))


# ---- the built-in registrations ---------------------------------------------------------------------------------
def test_every_registered_model_belongs_to_a_registered_family():
    assert {"gamma", "gamma-lite"} <= set(list_families())
    assert {"gamma-vit-b16", "gamma-vit-b16-sdp", "gamma-test", "gamma-lite"} <= set(list_models())
    for name in list_models():
        config = model_spec(name).config
        family = family_of(config)
        assert config.name == name
        assert family.kind in list_families() and get_family(family.kind) is family
        assert family.model_class.kind == family.kind, name
        assert family.config_class.from_dict(json.loads(json.dumps(config.to_dict()))) == config, name


def test_checkpoints_pick_their_family_by_kind(tmp_path, no_trained_weights):
    saved = {
        "gamma": gamma_iqa.save_checkpoint(gamma_iqa.create_model("gamma-test"), tmp_path / "gamma"),
        "gamma-lite": gamma_iqa.save_checkpoint(
            gamma_iqa.create_model("gamma-lite", pretrained=False, num_moe_blocks=1), tmp_path / "lite"
        ),
    }
    for kind, cls in (("gamma", Gamma), ("gamma-lite", GammaLite)):
        assert json.loads((saved[kind] / CONFIG_FILE).read_text())["kind"] == kind
        assert type(gamma_iqa.load_checkpoint(saved[kind])) is cls
    # The kind, not the shape of the config, decides: a Gamma config read as gamma-lite's is invalid.
    meta = json.loads((saved["gamma"] / CONFIG_FILE).read_text())
    (saved["gamma"] / CONFIG_FILE).write_text(json.dumps({**meta, "kind": "gamma-lite"}))
    with pytest.raises(CheckpointError, match=r"invalid gamma-iqa config.*unknown gamma-lite config keys"):
        gamma_iqa.load_checkpoint(saved["gamma"])
    (saved["gamma"] / CONFIG_FILE).write_text(json.dumps({**meta, "kind": "gamma-3d"}))
    with pytest.raises(CheckpointError, match=r"unknown model kind 'gamma-3d'.*upgrade gamma-iqa"):
        gamma_iqa.load_checkpoint(saved["gamma"])


def test_legacy_checkpoints_without_kind_load_as_gamma(tmp_path):
    model = gamma_iqa.create_model("gamma-test")
    folder = gamma_iqa.save_checkpoint(model, tmp_path / "legacy")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    del meta["kind"]
    (folder / CONFIG_FILE).write_text(json.dumps(meta))
    lone = tmp_path / "legacy.safetensors"  # the header's copy of the config, without kind too
    save_file(load_file(str(folder / WEIGHTS_FILE)), str(lone), metadata={METADATA_KEY: json.dumps(meta)})
    for path in (folder, lone):
        loaded = gamma_iqa.load_checkpoint(path)
        assert type(loaded) is Gamma and loaded.config == model.config
        with torch.no_grad():
            assert torch.equal(loaded(images(2)), model(images(2)))


# ---- uniqueness ---------------------------------------------------------------------------------------------------
def test_a_kind_or_config_class_registered_twice_fails(scratch):
    gamma = get_family("gamma")
    with pytest.raises(ValueError, match="'gamma' is already registered"):
        register_family(dataclasses.replace(gamma, config_class=ToyConfig))
    with pytest.raises(ValueError, match="'gamma-2' is already registered"):
        register_family(dataclasses.replace(gamma, kind="gamma-2"))  # GammaConfig already has its family
    assert list_families().count("gamma") == 1 and "gamma-2" not in list_families()
    assert get_family("gamma") is gamma


def test_a_model_name_registered_twice_or_without_family_fails(scratch):
    before = model_spec("gamma-test")
    with pytest.raises(ValueError, match="model 'gamma-test' is already registered"):
        register_model(ModelSpec(GammaConfig(name="gamma-test"), "a second gamma-test", needs_weights=False))
    assert model_spec("gamma-test") is before
    with pytest.raises(TypeError, match="no registered model family has config class ToyConfig"):
        register_model(ModelSpec(ToyConfig(), "a toy without its family", needs_weights=False))
    assert "toy-test" not in list_models()


# ---- a third family -----------------------------------------------------------------------------------------------
def test_a_new_family_is_its_module_and_its_registration(tmp_path, no_trained_weights):
    with scratch_registries():
        register_toy()
        assert "toy" in list_families() and "toy-test" in list_models()
        model = gamma_iqa.create_model("toy-test", seed=5)
        assert type(model) is Toy and not model.training and model.config == ToyConfig()
        x = images(3, size=16)
        with torch.no_grad():
            scores = model(x)
        assert scores.shape == (3,) and bool(((scores > 0) & (scores < 1)).all())

        folder = gamma_iqa.save_checkpoint(model, tmp_path / "toy")
        assert json.loads((folder / CONFIG_FILE).read_text())["kind"] == "toy"
        for loaded in (gamma_iqa.load_checkpoint(folder), gamma_iqa.create_model(folder / WEIGHTS_FILE)):
            assert type(loaded) is Toy and loaded.config == model.config and not loaded.training
            assert torch.equal(loaded.mean, model.mean) and torch.equal(loaded.std, model.std)
            with torch.no_grad():
                assert torch.equal(loaded(x), scores)

        # A fresh build on a backbone file: the family's reader, then its configure (the width comes from the file).
        backbone = nn.Conv2d(3, 6, 4, stride=4).state_dict()
        save_file(backbone, str(tmp_path / "backbone.safetensors"))
        built = gamma_iqa.create_model("toy-test", backbone=tmp_path / "backbone.safetensors")
        assert built.config.width == 6 and torch.equal(built.backbone.weight, backbone["weight"])

    # Gone with the scratch registries: the built-ins are intact and the toy's checkpoint now names an unknown kind.
    assert "toy" not in list_families() and "toy-test" not in list_models()
    assert {"gamma", "gamma-lite"} <= set(list_families()) and "gamma-test" in list_models()
    with pytest.raises(CheckpointError, match="unknown model kind 'toy'"):
        gamma_iqa.load_checkpoint(folder)
