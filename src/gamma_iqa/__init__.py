"""gamma-iqa: Gamma image quality and aesthetics assessment (clean-room, Apache-2.0).

The package root re-exports the public API; docs/architecture.md describes the layers behind it.
"""

from . import metrics
from ._version import __version__
from .data.datasets import LabelFileError, list_datasets
from .engine import scoring as _scoring  # noqa: F401  (installs QualityModel.score)
from .engine.maps import QualityMap, quality_map
from .models import (
    CheckpointError,
    Gamma,
    GammaConfig,
    GammaLite,
    GammaLiteConfig,
    QualityLoss,
    convert,
    convert_original,
    create_model,
    get_scene,
    list_models,
    list_scenes,
    load_checkpoint,
    register_model,
    register_scene,
    save_checkpoint,
)

__all__ = [
    "CheckpointError",
    "Gamma",
    "GammaConfig",
    "GammaLite",
    "GammaLiteConfig",
    "LabelFileError",
    "QualityLoss",
    "QualityMap",
    "__version__",
    "convert",
    "convert_original",
    "create_model",
    "get_scene",
    "list_datasets",
    "list_models",
    "list_scenes",
    "load_checkpoint",
    "metrics",
    "quality_map",
    "register_model",
    "register_scene",
    "save_checkpoint",
]
