"""The two registries of the models layer: model families and named models.

A family says how to build, load and convert one architecture; a named model is a family's config under a name, as
`create_model(name)` and `gamma-iqa list models` know it.

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
        kind: the checkpoint's model kind (`config.json` "kind"); selects this family on load. Equal to
            `model_class.kind`.
        config_class: frozen dataclass with `name`, `default_scene`, `mean` and `std` (per-channel, RGB in [0, 1]),
            `to_dict()` and the classmethod `from_dict()`.
        model_class: a `QualityModel` built as `model_class(config, backbone_state=state_or_None)`, with
            non-persistent `mean` and `std` buffers (1, 3, 1, 1).
        load_backbone: reads a backbone weight file (given its path) into a state dict in our key names.
        default_backbone: returns the path of the backbone used when none is named; None: random initialisation.
        configure: returns the registered config adapted to a loaded backbone state dict (e.g. CLIP's widths); None:
            the config is used as registered.
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
    """A registered model: its family's config and a one-line description for `gamma-iqa list models`.

    Attributes:
        config: the family's config; `config.name` is the model's registered name.
        description: one line for `gamma-iqa list models`.
        needs_weights: True when scoring with random heads is meaningless, so that `create_model` builds it fresh only
            when asked (`pretrained=False`) or given a backbone.
    """

    config: Any
    description: str
    needs_weights: bool


_FAMILIES: dict[str, Family] = {}
_MODELS: dict[str, ModelSpec] = {}


def register_family(family: Family) -> None:
    """Register a model family under `family.kind`.

    Args:
        family: the family; its kind and its config class must both be new.

    Raises:
        ValueError: a family with this kind or this config class is already registered.
    """
    if family.kind in _FAMILIES or any(f.config_class is family.config_class for f in _FAMILIES.values()):
        raise ValueError(f"model family {family.kind!r} is already registered")
    _FAMILIES[family.kind] = family


def list_families() -> list[str]:
    """Registered family kinds, in registration order."""
    return list(_FAMILIES)


def get_family(kind: str) -> Family:
    """The family of a checkpoint kind.

    Args:
        kind: a checkpoint's model kind (`config.json` "kind").

    Raises:
        ValueError: no family has this kind (a checkpoint of a newer gamma-iqa); the message says to upgrade.
    """
    try:
        return _FAMILIES[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(_FAMILIES)}); upgrade gamma-iqa") from None


def family_of(config: Any) -> Family:
    """The family whose config class `config` is an instance of.

    Args:
        config: a model config.

    Raises:
        TypeError: no registered family has the config's class.
    """
    for family in _FAMILIES.values():
        if isinstance(config, family.config_class):
            return family
    raise TypeError(f"no registered model family has config class {type(config).__name__}")


def register_model(spec: ModelSpec) -> None:
    """Register a model under `spec.config.name`.

    Args:
        spec: the model; its name must be new and its config's family registered.

    Raises:
        ValueError: a model of this name is already registered.
        TypeError: the config's family is not registered.
    """
    family_of(spec.config)
    if spec.config.name in _MODELS:
        raise ValueError(f"model {spec.config.name!r} is already registered")
    _MODELS[spec.config.name] = spec


def list_models() -> list[str]:
    """Registered model names, in registration order."""
    return list(_MODELS)


def model_spec(name: str) -> ModelSpec:
    """The registered spec of a model name.

    Args:
        name: a registered model name (`list_models()`).

    Raises:
        ValueError: an unknown name; the message lists the known ones.
    """
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}: not a path and not one of {', '.join(_MODELS)}") from None
