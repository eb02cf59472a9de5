"""gamma-lite: the Gamma idea on an ImageNet EfficientNet-Lite0, small enough to ship inside the package.

    images (B, 3, 224, 224) in [0, 1] -> (255 x - 127) / 128 -> EfficientNet-Lite0 (its later stages fine-tuned by
    the shipped recipe; the expand and project 1x1 convolutions of its last `num_moe_blocks` blocks wrapped in
    per-pixel MoAE) -> head (B, 1280, 7, 7)
    -> global average pool (B, 1280) -> projection (B, E) -> Gamma's head against the scene's anchors (5, E) -> (B,)

There is no pretrained text tower to turn prompts into level features, so each scene owns a learned (K=5, E) anchor
set in their place. A model only accepts the scenes it has anchors for (`config.scenes`); the registered gamma-lite
has only `natural`, the one scene with training data here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .base import Adapter, QualityModel, check_images, check_keys, level_head
from .effnet import LITE0_BLOCKS, EfficientNetLite, efficientnet_lite_path, load_efficientnet_lite
from .moe import install_conv_moae
from .registry import Family, ModelSpec, register_family, register_model
from .scenes import list_scenes

__all__ = ["GammaLite", "GammaLiteConfig"]


@dataclass(frozen=True)
class GammaLiteConfig:
    """Everything needed to rebuild a gamma-lite model (weights aside). Saved with every checkpoint.

    Gamma's values where gamma-lite has the same part (gamma.md §3, §5); docs/gamma-lite.md describes the build.

    Raises:
        ValueError: (on construction) no scenes, a default scene that is not one of them, or `num_moe_blocks` outside
            [0, 16].
    """

    name: str = "gamma-lite"  # the registered name
    image_size: int = 224  # side of the square crops in pixels: EfficientNet-Lite0's ImageNet input size
    num_experts: int = 3  # adaptive experts per MoAE unit, besides the shared one, as Gamma's (gamma.md §3)
    # The last MBConv blocks whose expand and project convolutions get MoAE: 3 is the last stage and the last two
    # blocks of the one before; the last two stages in full (5) would push the shipped fp16 file past 20 MB.
    num_moe_blocks: int = 3
    embed_dim: int = 512  # width E of the projected image feature and the anchors, Gamma's CLIP embedding (§2)
    adapter_dim: int = 256  # the image adapter's bottleneck width, as Gamma's (gamma.md §5)
    scenes: tuple[str, ...] = ("natural",)  # scenes with a learned anchor set; only natural has training data here
    default_scene: str = "natural"  # the scene of images given none; one of `scenes`
    level_init: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)  # initial level values, worst to best (gamma.md §5)
    # Frozen, in log space: CLIP's initial temperature 1/0.07 (gamma.md §5), as no trained one exists here.
    logit_scale: float = math.log(1 / 0.07)
    # Per-channel RGB normalisation for input in [0, 1]: (x - mean) / std = (255 x - 127) / 128, Lite0's ImageNet input.
    mean: tuple[float, float, float] = (127 / 255,) * 3
    std: tuple[float, float, float] = (128 / 255,) * 3

    def __post_init__(self) -> None:
        """Check the scenes and the MoAE depth."""
        if not self.scenes:
            raise ValueError("a gamma-lite config needs at least one scene")
        if self.default_scene not in self.scenes:
            raise ValueError(f"default scene {self.default_scene!r} is not one of the model's scenes {self.scenes}")
        if not 0 <= self.num_moe_blocks <= LITE0_BLOCKS:
            raise ValueError(f"num_moe_blocks must be in [0, {LITE0_BLOCKS}], got {self.num_moe_blocks}")

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values (lists where the config has tuples), as checkpoints store it."""
        d = dataclasses.asdict(self)
        d["scenes"] = list(self.scenes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GammaLiteConfig:
        """Inverse of `to_dict`; missing keys take their defaults.

        Args:
            d: a dict as `to_dict` writes it.

        Raises:
            ValueError: unknown keys, or values the config rejects.
            TypeError: values of the wrong kind.
        """
        d = dict(d)
        check_keys(cls, d, "gamma-lite config")
        tuples = {k: tuple(d[k]) for k in ("scenes", "level_init", "mean", "std") if k in d}
        return cls(**{**d, **tuples})


def _standard_normal(*shape: int) -> torch.Tensor:
    """`torch.randn(*shape)`, the same values; left empty when built on the meta device (a checkpoint being loaded).

    A normal_ on the meta device runs a Python reference that imports sympy: about 0.3 s of every `gamma-iqa score`
    that loads gamma-lite, for values the checkpoint then replaces.
    """
    t = torch.empty(*shape)
    return t if t.device.type == "meta" else t.normal_()


class GammaLite(QualityModel):
    """gamma-lite: `forward(images, scene)` takes RGB in [0, 1] and returns scores (B,), higher is better.

    The backbone's BatchNorms, the shared experts' included, always run in eval mode (running statistics), also
    under `train()`: the backbone is frozen, and the experts start as exact copies of it.

    Keys: `backbone.*` (EfficientNet-Lite0, MoAE units as `...{expand,project}.{shared,experts.{i},router}.*` and
    `.scale`), `proj.*`, `adapter.{down,up}.weight`, `anchors.{scene}` (K, E), `score_level`, `logit_scale`.
    """

    kind = "gamma-lite"
    # bf16 autocast on a CPU with native bf16 (avx512_bf16): forward 2.35x, 20 photos at 10 crops end to end about 2x
    # faster than fp32, scores within 2.2e-3 (benchmarks/README.md), so it is kept (QualityModel.cpu_bf16, True).
    # Inference on the CPU runs the backbone in channels-last memory format (NHWC), which oneDNN's convolutions, the
    # depthwise ones above all, run faster; the scores change by float rounding only. Training keeps NCHW.
    channels_last = True
    # A forward of one 224 crop leaves oneDNN's kernels short of work (7x7 maps at the end): on 2 threads 4 crops run
    # 1.7 times as many crops/s as 1, and more gain little (benchmarks/README.md), so a CPU Scorer puts 4 centre crops
    # (4 images) in a forward; 10 crops already fill one.
    cpu_crops_per_forward = 4

    def __init__(self, config: GammaLiteConfig, *, backbone_state: Mapping[str, torch.Tensor] | None = None) -> None:
        """Build the model, randomly initialised or on an EfficientNet-Lite0 backbone.

        Args:
            config: the model's config.
            backbone_state: EfficientNet-Lite0 weights in our key names (`load_efficientnet_lite`); `classifier.*`
                is ignored. None: a random backbone.

        Raises:
            RuntimeError: `backbone_state` does not fit EfficientNet-Lite0.
        """
        super().__init__()
        self.config = config
        self.backbone = EfficientNetLite()
        if backbone_state is not None:
            # Before MoAE is installed, as its experts are copies; the ImageNet classifier is not used.
            self.backbone.load_state_dict({k: v for k, v in backbone_state.items() if not k.startswith("classifier.")})
        self.backbone.requires_grad_(False)
        blocks = self.backbone.blocks
        install_conv_moae(
            blocks[len(blocks) - config.num_moe_blocks :], names=("expand", "project"), num_experts=config.num_experts
        )
        self.proj = nn.Linear(self.backbone.num_features, config.embed_dim)
        self.adapter = Adapter(dim=config.embed_dim, hidden=config.adapter_dim)
        k = len(config.level_init)
        self.anchors = nn.ParameterDict({s: nn.Parameter(_standard_normal(k, config.embed_dim)) for s in config.scenes})
        self.score_level = nn.Parameter(torch.tensor(config.level_init, dtype=torch.float32))
        self.register_buffer("logit_scale", torch.tensor(config.logit_scale))  # frozen; saved like CLIP's
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> GammaLite:
        """Set training mode as `nn.Module.train` does, except the backbone, which stays in eval mode.

        Args:
            mode: True for training, False for eval.

        Returns:
            The model itself.
        """
        super().train(mode)
        self.backbone.eval()  # frozen running statistics (see the class docstring)
        return self

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute the trainable blocks' activations during backward (training memory for compute)."""
        self.backbone.grad_checkpointing = enabled

    @property
    def image_size(self) -> int:
        """Side of the square crops in pixels (`config.image_size`, 224)."""
        return self.config.image_size

    @property
    def scenes(self) -> list[str]:
        """Scene names this model has anchors for, hence accepts."""
        return list(self.config.scenes)

    def prompt_key(self, scene: str | None) -> str:
        """The anchor set used for `scene` (None: the default scene).

        Raises:
            ValueError: an unknown scene (the message lists the known ones), or a known scene the model has no
                training data for (it lists the model's scenes).
        """
        if scene is None:
            return self.config.default_scene
        if scene in self.config.scenes:
            return scene
        if scene not in list_scenes():  # a typo or another tool's word, not a scene this model lacks
            raise ValueError(
                f"unknown scene {scene!r}: the known scenes are {', '.join(list_scenes())}; "
                f"model {self.config.name} takes {', '.join(self.scenes)}"
            )
        raise ValueError(
            f"scene {scene!r} is not supported by model {self.config.name} (no training data for it); "
            f"valid scenes: {', '.join(self.scenes)}"
        )

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] (B, 3, H, W) -> embedding before the adapter (B, E).

        Raises:
            ValueError: `images` is not (B, 3, H, W) float RGB in [0, 1] (non-finite values, or values
                outside [0, 1] beyond rounding, e.g. 0..255).
        """
        check_images(images)
        x = (images - self.mean) / self.std  # (B, 3, H, W)
        if self.channels_last and x.device.type == "cpu" and not torch.is_grad_enabled():
            x = x.contiguous(memory_format=torch.channels_last)  # same shape, NHWC in memory
        features = self.backbone.forward_features(x)  # (B, 1280, H/32, W/32)
        return self.proj(features.mean(dim=(2, 3)))

    def forward(
        self, images: torch.Tensor, scene: str | Sequence[str | None] | None = None, *, levels: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Score images, each against its scene's anchors.

        Args:
            images: (B, 3, H, W) RGB in [0, 1], any size (224 is native).
            scene: one scene name for all images, None for the default scene, or one name (or None) per image.
            levels: also return the level probabilities.

        Returns:
            Scores (B,), between the lowest and the highest level value (about [0, 1]); with `levels`, the pair
            (scores, level probabilities (B, K), worst level first).

        Raises:
            ValueError: a scene the model has no anchors for, a scene count that is not B, or images not
                (B, 3, H, W) float RGB in [0, 1].
        """
        keys = self.scene_keys(scene, images.shape[0])
        anchors = torch.stack([self.anchors[k] for k in keys])  # (B, K, E)
        head = (self.adapter, self.encode_image(images), anchors, self.logit_scale, self.score_level)
        return level_head(*head, probabilities=levels)


register_family(
    Family(
        kind="gamma-lite",
        config_class=GammaLiteConfig,
        model_class=GammaLite,
        load_backbone=load_efficientnet_lite,
        default_backbone=efficientnet_lite_path,
    )
)
register_model(
    ModelSpec(
        GammaLiteConfig(name="gamma-lite"),
        "gamma-lite: Gamma's MoAE and head on an ImageNet EfficientNet-Lite0 (its later stages fine-tuned), natural "
        "scene only; the default "
        "model, its trained weights shipped in the package (scripts/build_default_model.py rebuilds them)",
        needs_weights=False,
    )
)
