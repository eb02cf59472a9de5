"""The models layer: everything that defines, builds, saves and loads a model.

Towers, MoAE, the shared head, the model families (Gamma, gamma-lite), scenes, the tokenizer, the family and model
registries, our checkpoint format and the conversion of foreign formats. It imports only the package's leaf modules
(`_version`, `paths`), never data, engine, outputs, corpus or the CLI.

Importing it registers the built-in families and models (each family module registers itself).
"""

from . import gamma, lite  # noqa: F401  (registration side effects: families and named models)
from .base import QualityModel
from .checkpoint import load_checkpoint, model_from_state_dict, save_checkpoint
from .convert import convert, convert_original
from .factory import DEFAULT_MODEL, create_model, default_model, trained_weights
from .gamma import Gamma, GammaConfig
from .lite import GammaLite, GammaLiteConfig
from .loss import QualityLoss, crop_grid
from .registry import Family, ModelSpec, list_models, model_spec, register_family, register_model
from .scenes import get_scene, list_scenes, register_scene
from .state import CheckpointError

__all__ = [
    "DEFAULT_MODEL",
    "CheckpointError",
    "Family",
    "Gamma",
    "GammaConfig",
    "GammaLite",
    "GammaLiteConfig",
    "ModelSpec",
    "QualityLoss",
    "QualityModel",
    "convert",
    "convert_original",
    "create_model",
    "crop_grid",
    "default_model",
    "get_scene",
    "list_models",
    "list_scenes",
    "load_checkpoint",
    "model_from_state_dict",
    "model_spec",
    "register_family",
    "register_model",
    "register_scene",
    "save_checkpoint",
    "trained_weights",
]
