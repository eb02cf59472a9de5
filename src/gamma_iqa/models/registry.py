"""The two registries of the models layer: model families (how to build, load and convert one architecture) and
named models (a family's config under a name, as `create_model(name)` and `gamma-iqa list models` know it).

A family registers itself beside its architecture (gamma.py, lite.py); nothing else in the package branches on the
family. Adding one is a new module that calls `register_family` and `register_model`, imported by `models/__init__`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .base import QualityModel
from .state import Renames

__all__ = [
    "Family",
    "ModelSpec",
    "family_of",
    "get_family",
    "list_families",
    "list_models",
    "model_spec",
    "register_family",
    "register_model",
]


@dataclass(frozen=True)
class Family:
    """One model family (architecture) and everything the package needs to build, save and load it.

    Attributes:
        kind: the checkpoint's model kind (`config.json` "kind"); selects this family on load.
        config_class: frozen dataclass with `name`, `to_dict()` and `from_dict()`.
        model_class: a `QualityModel` built as `model_class(config, backbone_state=state_or_None)`.
        load_backbone: reads a backbone weight file (path) into a state dict in our key names.
        default_backbone: where the backbone comes from when none is named (None: random initialisation).
        configure: adapts a registered config to the loaded backbone (e.g. CLIP's widths); identity by default.
        renames: key renames from the family's foreign release layout to ours (empty when there is none).
    """

    kind: str
    config_class: type
    model_class: type[QualityModel]
    load_backbone: Callable[[Path], dict[str, torch.Tensor]]
    default_backbone: Callable[[], Path] | None = None
    configure: Callable[[Any, Mapping[str, torch.Tensor]], Any] | None = None
    renames: Renames = ()


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its family's config and a one-line description for `gamma-iqa list models`."""

    config: Any
    description: str
    needs_weights: bool  # True: scoring with random heads is meaningless, so a fresh build must be asked for


_FAMILIES: dict[str, Family] = {}
_MODELS: dict[str, ModelSpec] = {}


def register_family(family: Family) -> None:
    """Register a model family under `family.kind`; kinds and config classes are unique."""
    if family.kind in _FAMILIES or any(f.config_class is family.config_class for f in _FAMILIES.values()):
        raise ValueError(f"model family {family.kind!r} is already registered")
    _FAMILIES[family.kind] = family


def list_families() -> list[str]:
    """Registered family kinds, in registration order."""
    return list(_FAMILIES)


def get_family(kind: str) -> Family:
    """The family of checkpoint kind `kind`; an unknown kind is a ValueError that says to upgrade."""
    try:
        return _FAMILIES[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(_FAMILIES)}); upgrade gamma-iqa") from None


def family_of(config: Any) -> Family:
    """The family whose config class `config` is an instance of."""
    for family in _FAMILIES.values():
        if isinstance(config, family.config_class):
            return family
    raise TypeError(f"no registered model family has config class {type(config).__name__}")


def register_model(spec: ModelSpec) -> None:
    """Register a model under `spec.config.name`; names are unique and the config's family must be registered."""
    family_of(spec.config)
    if spec.config.name in _MODELS:
        raise ValueError(f"model {spec.config.name!r} is already registered")
    _MODELS[spec.config.name] = spec


def list_models() -> list[str]:
    """Registered model names, in registration order."""
    return list(_MODELS)


def model_spec(name: str) -> ModelSpec:
    """The registered spec of `name`; an unknown name is a ValueError listing the known ones."""
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}: not a path and not one of {', '.join(_MODELS)}") from None
