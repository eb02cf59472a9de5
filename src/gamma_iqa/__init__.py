"""gamma-iqa: Gamma image quality and aesthetics assessment (clean-room, Apache-2.0)."""

__version__ = "0.1.0"

from .checkpoint import CheckpointError, convert_original, load_checkpoint, save_checkpoint
from .data import list_datasets
from .factory import create_model, list_models, register_model
from .lite import GammaLite, GammaLiteConfig
from .model import Gamma, GammaConfig
from .scenes import get_scene, list_scenes, register_scene

__all__ = [
    "CheckpointError",
    "Gamma",
    "GammaConfig",
    "GammaLite",
    "GammaLiteConfig",
    "__version__",
    "convert_original",
    "create_model",
    "get_scene",
    "list_datasets",
    "list_models",
    "list_scenes",
    "load_checkpoint",
    "register_model",
    "register_scene",
    "save_checkpoint",
]
