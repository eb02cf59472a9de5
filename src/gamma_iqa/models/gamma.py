"""GammaConfig and the Gamma model: CLIP towers with MoAE, the image adapter and the quality-level head (gamma.md §5).

Shapes: images (B, 3, H, W) RGB in [0, 1]; image features (B, E); prompts per scene (K=5, E); scores (B,).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import Adapter, QualityModel, check_images, check_keys, level_head
from .clip import CLIP, CLIPConfig, autocast_dtype, clip_config_from_state_dict, load_clip_state_dict, trim_tokens
from .moe import install_moae
from .registry import Family, ModelSpec, register_family, register_model
from .scenes import GENERIC, SDP_SCENES, get_scene, list_scenes
from .state import CheckpointError, first_line
from .tokenizer import VOCAB_FILENAME, find_vocab, get_tokenizer

__all__ = ["ORIGINAL_RENAMES", "RELEASE_VARIANTS", "Gamma", "GammaConfig", "release_config"]

# Key renames of the original release (gamma.md §6, gamma_params.txt) -> ours; the only place where they are written.
ORIGINAL_RENAMES = [
    (re.compile(r"^clip_model\."), "clip."),
    (re.compile(r"\.mlp\.useful_experts\."), ".mlp.shared."),
    (re.compile(r"\.mlp\.experts\.expert_(\d+)\."), r".mlp.experts.\1."),
    (re.compile(r"\.mlp\.gating\.layer1\."), ".mlp.router."),
    (re.compile(r"^adapter\.fc\.0\."), "adapter.down."),
    (re.compile(r"^adapter\.fc\.2\."), "adapter.up."),
]


RELEASE_VARIANTS = ("plain", "sdp")  # the release's two prompt sets: generic prompts, scene-specific prompts (SDP)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's per-channel RGB mean, for input in [0, 1] (gamma.md §2)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)  # and standard deviation


@dataclass(frozen=True)
class GammaConfig:
    """Everything needed to rebuild a Gamma model (weights aside). Saved with every checkpoint.

    The defaults are the released plain Gamma (gamma.md §1): ViT-B/16, MoAE with 3 experts in the last 6 blocks of
    both towers, a 256-wide adapter and the generic prompts.

    Raises:
        ValueError: (on construction) `default_scene` has no prompts, or a scene's prompt count is not the number of
            levels.
    """

    name: str = "gamma-vit-b16"  # the registered name, or a checkpoint's own (its file stem for non-B/16 releases)
    clip: CLIPConfig = field(default_factory=CLIPConfig)  # tower shapes; ViT-B/16 by default (gamma.md §2)
    num_experts: int = 3  # adaptive experts per MoAE block, besides the shared one (gamma.md §3)
    num_moe_layers: int = 6  # last blocks of each tower whose MLP becomes MoAE: 6 of 12 (gamma.md §3)
    adapter_dim: int = 256  # the image adapter's bottleneck width, 512 -> 256 -> 512 (gamma.md §5)
    # Prompt sets by scene, each len(level_init) prompts worst to best: the generic set (gamma.md §4.1) by default,
    # the five SDP sets (§4.2) for gamma-vit-b16-sdp.
    prompts: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {GENERIC: get_scene(GENERIC)})
    default_scene: str = GENERIC  # the scene of images given none; a key of `prompts` ("natural" for SDP)
    level_init: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)  # initial level values, worst to best (gamma.md §5)
    mean: tuple[float, float, float] = CLIP_MEAN  # per-channel RGB mean for input in [0, 1] (gamma.md §2)
    std: tuple[float, float, float] = CLIP_STD  # per-channel RGB standard deviation (gamma.md §2)

    def __post_init__(self) -> None:
        """Check that the default scene and every scene's prompts fit the levels."""
        if self.default_scene not in self.prompts:
            raise ValueError(f"default scene {self.default_scene!r} has no prompts in this config")
        for scene, prompts in self.prompts.items():
            if len(prompts) != len(self.level_init):
                raise ValueError(f"scene {scene!r} has {len(prompts)} prompts for {len(self.level_init)} levels")

    @property
    def is_generic(self) -> bool:
        """True when the model has only the generic prompts, which then serve every scene."""
        return set(self.prompts) == {GENERIC}

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values (nested dicts and lists), as checkpoints store it."""
        d = dataclasses.asdict(self)
        d["prompts"] = {k: list(v) for k, v in self.prompts.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GammaConfig:
        """Inverse of `to_dict`; missing keys take their defaults.

        Args:
            d: a dict as `to_dict` writes it (lists where the config has tuples).

        Raises:
            ValueError: unknown keys (top level or under "clip"), or values the config rejects.
            TypeError: values of the wrong kind.
        """
        d = dict(d)
        check_keys(cls, d, "model config")
        clip = dict(d.pop("clip", {}))
        check_keys(CLIPConfig, clip, "clip config")
        tuples = {k: tuple(d[k]) for k in ("level_init", "mean", "std") if k in d}
        prompts = {k: tuple(v) for k, v in d.pop("prompts", {GENERIC: get_scene(GENERIC)}).items()}
        return cls(**{**d, **tuples}, clip=CLIPConfig(**clip), prompts=prompts)


class Gamma(QualityModel):
    """Gamma image quality / aesthetics model (gamma.md §1).

    `forward(images, scene)` takes RGB in [0, 1] (normalised inside) and one scene name or one per image, and
    returns scores (B,), higher is better, about [0, 1]. Under autocast the towers' matrix products run in low
    precision; LayerNorm, the residual streams, the router softmax and the head stay in the parameters' dtype.

    Keys: `clip.*` (OpenAI CLIP layout, MoAE blocks as `...mlp.{shared,experts.{i},router}.*` and `...mlp.scale`),
    `adapter.{down,up}.weight`, `score_level`. The CLIP weights are frozen except the MoAE experts, routers and
    scales; the adapter and `score_level` are trainable (gamma.md §6).
    """

    kind = "gamma"

    def __init__(self, config: GammaConfig, *, backbone_state: Mapping[str, torch.Tensor] | None = None) -> None:
        """Build the model, randomly initialised or on a CLIP backbone.

        Args:
            config: the model's config.
            backbone_state: an OpenAI-layout CLIP/UniQA state dict (`load_clip_state_dict`) whose shapes match
                `config.clip`; None: OpenAI CLIP's random initialisation.

        Raises:
            RuntimeError: `backbone_state` does not fit `config.clip` (missing, unexpected or misshapen keys).
        """
        super().__init__()
        self.config = config
        self.clip = CLIP(config.clip)
        if backbone_state is not None:
            # Load before MoAE is installed: its experts are copies of these MLPs.
            self.clip.load_state_dict(backbone_state, strict=True)
        self.clip.requires_grad_(False)
        for tower, cache in ((self.clip.visual.transformer, True), (self.clip.transformer, False)):
            # The text tower runs once per prompt set at inference (its features are cached), so its fused expert
            # weights are not worth a second copy in memory.
            install_moae(tower, num_layers=config.num_moe_layers, num_experts=config.num_experts, cache_weights=cache)
        self.adapter = Adapter(dim=config.clip.embed_dim, hidden=config.adapter_dim)
        self.score_level = nn.Parameter(torch.tensor(config.level_init, dtype=torch.float32))
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        self.vocab_path: str | None = None  # where the tokenizer vocabulary is looked for first
        self._tokens: dict[str, torch.Tensor] = {}
        self._trimmed_tokens: dict[tuple[str, torch.device], torch.Tensor] = {}
        self.compiled: str | bool = False  # the torch.compile mode, set by compile_towers
        self._text_cache: dict[tuple, tuple[tuple[int, ...], torch.Tensor]] = {}

    def assets(self) -> dict[str, Path]:
        """The tokenizer vocabulary, when one is found, so that a checkpoint folder needs nothing else to score."""
        try:
            return {VOCAB_FILENAME: find_vocab(self.vocab_path)}
        except FileNotFoundError:
            return {}

    def load_assets(self, folder: Path) -> None:
        """Use the vocabulary saved in checkpoint `folder`, when there is one."""
        if (folder / VOCAB_FILENAME).is_file():
            self.vocab_path = str(folder / VOCAB_FILENAME)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute both towers' block activations during backward (training memory for compute)."""
        self.clip.visual.transformer.grad_checkpointing = enabled
        self.clip.transformer.grad_checkpointing = enabled

    @property
    def image_size(self) -> int:
        """Side of the square crops in pixels: the CLIP input size (224 for ViT-B/16)."""
        return self.config.clip.image_size

    # ---- scenes and text -------------------------------------------------------------------------------------------
    @property
    def scenes(self) -> list[str]:
        """Scene names this model accepts."""
        return list_scenes() if self.config.is_generic else list(self.config.prompts)

    def prompt_key(self, scene: str | None) -> str:
        """The prompt set used for `scene`: a generic model scores every registered scene with its generic prompts."""
        if scene is None:
            return self.config.default_scene
        if scene in self.config.prompts:
            return scene
        if self.config.is_generic and scene in list_scenes():
            return GENERIC
        raise ValueError(
            f"unknown scene {scene!r} for model {self.config.name}; valid scenes: {', '.join(self.scenes)}"
        )

    def tokens(self, key: str) -> torch.Tensor:
        """Token ids of a prompt set, tokenised once per model: (K, context_length) int64.

        Args:
            key: a key of `config.prompts` (`prompt_key` of a scene).

        Raises:
            FileNotFoundError: no tokenizer vocabulary is found (`find_vocab`).
        """
        if key not in self._tokens:
            tokenizer = get_tokenizer(self.vocab_path)
            self._tokens[key] = tokenizer(list(self.config.prompts[key]), self.config.clip.context_length)
        return self._tokens[key]

    def _tokens_on(self, key: str, device: torch.device) -> torch.Tensor:
        """`tokens(key)` cut after the last end token on the host, then moved once to `device`: (K, n)."""
        if (key, device) not in self._trimmed_tokens:
            self._trimmed_tokens[key, device] = trim_tokens(self.tokens(key)).to(device)
        return self._trimmed_tokens[key, device]

    def _text_versions(self) -> tuple[int, ...]:
        """Version counters of the CLIP parameters outside the image tower; a change invalidates cached text."""
        return tuple(p._version for n, p in self.clip.named_parameters() if not n.startswith("visual."))

    def text_features(self, key: str) -> torch.Tensor:
        """Text embeddings of a prompt set (a key of `config.prompts`): (K, E), not normalised.

        Without autograd they are cached per prompt set, device, dtype and autocast dtype, and recomputed when any
        text weight changes (an optimiser step or a load bumps the tensors' version counters). With autograd
        (training) they are computed on every call, from tokens cut on the host: no host-device sync.
        """
        device = self.clip.token_embedding.weight.device
        tokens = self._tokens_on(key, device)
        if torch.is_grad_enabled():
            return self.clip.encode_text(tokens, trim=False)
        cache_key = (key, device, self.clip.token_embedding.weight.dtype, autocast_dtype(device.type))
        versions = self._text_versions()
        hit = self._text_cache.get(cache_key)
        if hit is None or hit[0] != versions:
            # A copy: compiled in a CUDA-graph mode (training's `compile`), the text tower's output lives in the
            # graphs' memory pool, which the next replay of any graph may write over.
            hit = (versions, self.clip.encode_text(tokens, trim=False).clone())
            self._text_cache[cache_key] = hit
        return hit[1]

    # ---- image and head --------------------------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] (B, 3, H, W) -> image embedding before the adapter (B, E).

        Raises:
            ValueError: `images` is not (B, 3, H, W) float RGB in [0, 1] (non-finite values, or values
                outside [0, 1] beyond rounding, e.g. 0..255).
        """
        check_images(images)
        return self.clip.encode_image((images - self.mean) / self.std)

    def head(
        self, image_features: torch.Tensor, text_features: torch.Tensor, *, levels: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Image features (B, E) and per-image prompt features (B, K, E) -> scores (B,) (gamma.md §5).

        With `levels`, the pair (scores (B,), level probabilities (B, K)) (see `level_head`).
        """
        head = (self.adapter, image_features, text_features, self.clip.logit_scale, self.score_level)
        return level_head(*head, probabilities=levels)

    def forward(
        self, images: torch.Tensor, scene: str | Sequence[str | None] | None = None, *, levels: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Score images, each against its scene's prompts.

        Args:
            images: (B, 3, H, W) RGB in [0, 1]; `image_size` squares are native, other sizes interpolate the
                positional table.
            scene: one scene name for all images, None for the default scene, or one name (or None) per image.
            levels: also return the level probabilities.

        Returns:
            Scores (B,) in the parameters' dtype, between the lowest and the highest level value (about [0, 1]);
            with `levels`, the pair (scores, level probabilities (B, K), worst level first).

        Raises:
            ValueError: a scene the model does not accept, a scene count that is not B, or images not
                (B, 3, H, W) float RGB in [0, 1].
        """
        b = images.shape[0]
        keys = self.scene_keys(scene, b)
        features = {k: self.text_features(k) for k in dict.fromkeys(keys)}  # each distinct scene once: (K, E)
        if len(features) == 1:
            text = next(iter(features.values())).expand(b, -1, -1)  # (B, K, E)
        else:
            text = torch.stack([features[k] for k in keys])  # (B, K, E), without a host-to-device index tensor
        return self.head(self.encode_image(images), text, levels=levels)

    def compile_towers(self, *, text: bool = True, **options: Any) -> Gamma:
        """Compile the image tower and the text transformer with `torch.compile` (torch >= 2.2); off by default.

        Parameters and state-dict keys do not change. The first calls compile; the text transformer recompiles for a
        new prompt length. `compiled` then holds the mode ("default" without one).

        Args:
            text: also compile the text transformer. Scoring leaves it out (`engine.scoring.Scorer`'s `compile`): its
                features are computed once per prompt set and cached, and a cached output of a CUDA-graph mode would
                be overwritten by the next replay.
            **options: passed to `torch.compile` (e.g. `mode="max-autotune"`, `mode="reduce-overhead"` for CUDA
                graphs).

        Returns:
            The model itself.
        """
        for tower in (self.clip.visual, self.clip.transformer) if text else (self.clip.visual,):
            tower.compile(**options)
        self.compiled = options.get("mode") or "default"
        return self


def release_config(state: Mapping[str, torch.Tensor], variant: str, path: Path) -> GammaConfig:
    """The GammaConfig of an original release state dict (gamma.md §6), already renamed to our keys.

    Args:
        state: the release's state dict under our key names (`rename_original`).
        variant: "plain" (generic prompts, gamma.md §4.1) or "sdp" (the five scene prompt sets, §4.2).
        path: the release file; its stem names a model that is not ViT-B/16, and error messages name it.

    Returns:
        The config, widths and depths read from the weights' shapes; named as the registered gamma-vit-b16 or
        gamma-vit-b16-sdp for a ViT-B/16.

    Raises:
        CheckpointError: the state is of another layout (missing keys, or unequal MoAE depth in the two towers).
    """
    try:
        clip_state = {k.removeprefix("clip."): v for k, v in state.items() if k.startswith("clip.")}
        clip = clip_config_from_state_dict(clip_state)
        moe = [k for k in clip_state if k.startswith("visual.") and k.endswith(".mlp.scale")]
        text_moe = [k for k in clip_state if k.startswith("transformer.") and k.endswith(".mlp.scale")]
        if len(moe) != len(text_moe):
            raise ValueError(f"{len(moe)} vision and {len(text_moe)} text MoAE blocks")
        experts = {m.group(1) for k in clip_state if (m := re.search(r"\.mlp\.experts\.(\d+)\.", k))}
        adapter_dim = state["adapter.down.weight"].shape[0]
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: not an original Gamma checkpoint ({first_line(e)} missing or wrong)") from None
    b16 = clip == type(clip)()
    if variant == "plain":
        prompts, default, name = {"generic": get_scene("generic")}, "generic", "gamma-vit-b16"
    else:
        prompts, default, name = {s: get_scene(s) for s in SDP_SCENES}, "natural", "gamma-vit-b16-sdp"
    return GammaConfig(
        name=name if b16 else path.stem,
        clip=clip,
        num_experts=len(experts),
        num_moe_layers=len(moe),
        adapter_dim=adapter_dim,
        prompts=prompts,
        default_scene=default,
    )


def _prompts(*scenes: str) -> dict[str, tuple[str, ...]]:
    """The registered prompt sets of `scenes`, by scene name."""
    return {s: get_scene(s) for s in scenes}


register_family(
    Family(
        kind="gamma",
        config_class=GammaConfig,
        model_class=Gamma,
        load_backbone=load_clip_state_dict,
        configure=lambda config, state: dataclasses.replace(config, clip=clip_config_from_state_dict(state)),
        renames=ORIGINAL_RENAMES,
    )
)
register_model(
    ModelSpec(
        GammaConfig(name="gamma-vit-b16"),
        "Gamma (plain): CLIP ViT-B/16 + MoAE, generic prompts; needs the converted release weights",
        needs_weights=True,
    )
)
register_model(
    ModelSpec(
        GammaConfig(name="gamma-vit-b16-sdp", prompts=_prompts(*SDP_SCENES), default_scene="natural"),
        "Gamma with scene-specific prompts (Gamma-Prompt); needs the converted release weights",
        needs_weights=True,
    )
)
register_model(
    ModelSpec(
        GammaConfig(
            name="gamma-test",
            clip=CLIPConfig(
                embed_dim=32,
                image_size=64,
                patch_size=16,
                vision_width=64,
                vision_layers=4,
                vision_heads=2,
                text_width=64,
                text_layers=4,
                text_heads=2,
            ),
            num_moe_layers=2,
            adapter_dim=16,
            prompts=_prompts(GENERIC, *[s for s in list_scenes() if s != GENERIC]),
            default_scene="natural",
        ),
        "tiny random Gamma (64 px, 4+4 layers) for tests",
        needs_weights=False,
    )
)
