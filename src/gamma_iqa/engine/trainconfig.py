"""TrainConfig: the typed, frozen training configuration; YAML files and `key=value` overrides only fill it."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data.datasets import user_dataset
from ..data.distortions import DISTORTIONS
from .runtime import COMPILE_MODES, default_workers

__all__ = ["ADAM_IMPLEMENTATIONS", "TrainConfig", "load_config", "save_config"]

# auto: torch's fused kernel where it has one for the parameters' device and dtype, else torch's default choice
# (foreach on CUDA, a loop over the tensors on the CPU); the others force one (fused fails where torch has none).
ADAM_IMPLEMENTATIONS = ("auto", "fused", "foreach", "default")


@dataclass(frozen=True)
class TrainConfig:
    """Defaults are the published mixed-training recipe (gamma.md §8.1); configs/*.yaml name every value."""

    model: str = "gamma-vit-b16"  # registered name (fresh, on `backbone`) or a checkpoint to fine-tune
    backbone: str | None = None  # CLIP/UniQA weights (OpenAI layout) for a fresh model
    # Registered names (gamma-iqa list datasets), or your own data as a mapping of USER_DATASET_KEYS (data.datasets):
    # {name: mine, csv: labels.csv, mos_range: [1, 5], scene: natural, lower_better: false, root: images/}
    datasets: tuple[str | dict, ...] = ()
    data_root: str = "data"
    split: int = 1  # 1-based, as the original's --split_index 1
    batch_size: int = 8  # the effective batch: processes x accum x micro-batch
    accum: int = 1  # micro-batches per process and step (gradient accumulation)
    lr: float = 2e-5  # head (adapter, level values)
    moe_lr: float | None = None  # MoAE experts, routers and scales; None: the same as lr
    epochs: int = 10  # cosine schedule over the epochs, stepped once per epoch, eta_min 0
    sampler: str = "uniform"  # "uniform" (the original: concatenated and shuffled), "balanced" or "grouped"
    group_size: int = 4  # sampler grouped: versions k of each group (source photo) in a batch; batch/k groups a batch
    # sampler grouped: each group in a batch holds its best-labelled image (a distorted corpus' untouched photo).
    group_anchor: bool = False
    # sampler grouped: a group's versions in a batch share one view (rescale, crop, flip), pixel-aligned where they
    # have one size, so that the ranking loss compares quality, not content. False: a view of its own each.
    aligned_views: bool = False
    hflip: bool = True
    # Training views rescaled by a random factor in [low, high] (log-uniform) before the crop, never below the crop
    # size: 224 crops of large photos at the scales users score them at. Empty: no rescale (the original).
    scale_range: tuple[float, ...] = ()
    # Ranking loss over pairs of one group (datasets' group_column) ordered by target, added to the MSE with this
    # weight (engine.train.rank_loss); 0: plain MSE (the original).
    rank_weight: float = 0.0
    rank_margin: float = 0.05  # the pairs' margin on the normalised scale, capped at their target gap
    # group_anchor: this many more versions of each group's anchor, made on the fly from its training view by one
    # type of `online_types` (data.distortions) at as many random strengths (log-uniform in [0.05, 1]); they join the
    # ranking loss only (the anchor above each, the weaker above the stronger), never the MSE. 0: none.
    online_versions: int = 0
    online_types: tuple[str, ...] = ()  # empty: all 25 types of data.distortions
    # Fine-tune the backbone's last `backbone_stages` stages (of EfficientNet-Lite0's 7, with the head convolution;
    # 7 also the stem) of gamma-lite, at this learning rate, BatchNorm statistics frozen. None: frozen (the original).
    backbone_lr: float | None = None
    backbone_stages: int = 2
    eval_epochs: tuple[int, ...] = (5, 10)  # evaluate after these epochs (1-based), and always at the end
    eval_every_epochs: int = 0
    eval_every_steps: int = 0
    eval_crops: int = 10
    eval_batch_size: int = 8
    seed: int = 123
    workers: int = field(default_factory=default_workers)  # decoding processes; default: from the CPUs (runtime)
    device: str = "auto"
    dtype: str = "fp32"  # autocast: fp32, bf16, fp16 (with loss scaling)
    grad_checkpointing: bool = False
    # torch.compile the towers (Gamma.compile_towers; a family without them: the whole module) before any DDP wrapping:
    # false (eager), true or "default", or a mode of COMPILE_MODES. Checkpoints are the same either way.
    compile: bool | str = False
    adam: str = "auto"  # the Adam implementation (ADAM_IMPLEMENTATIONS); each gives the same updates up to rounding
    log_every_steps: int = 50
    save_every_steps: int = 1000  # plus at every epoch end
    max_steps: int = 0  # stop (with a checkpoint) after this many steps in all; 0: the whole schedule
    out: str = "runs/gamma"

    def __post_init__(self) -> None:
        """Check the values that no type annotation can.

        Raises:
            ValueError: the first value out of range, naming its setting.
        """
        checks = [
            (self.batch_size >= 1 and self.accum >= 1, "batch_size and accum must be >= 1"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (
                self.lr > 0 and all(v is None or v > 0 for v in (self.moe_lr, self.backbone_lr)),
                "learning rates must be > 0",
            ),
            (
                self.sampler in ("uniform", "balanced", "grouped"),
                f"sampler must be uniform, balanced or grouped, not {self.sampler!r}",
            ),
            (self.group_size >= 1, "group_size must be >= 1"),
            (
                self.sampler == "grouped" or not (self.group_anchor or self.aligned_views),
                "group_anchor and aligned_views need sampler: grouped",
            ),
            (
                not self.scale_range or (len(self.scale_range) == 2 and 0 < self.scale_range[0] <= self.scale_range[1]),
                f"scale_range must be empty or [low, high] with 0 < low <= high, got {list(self.scale_range)}",
            ),
            (self.rank_weight >= 0 and self.rank_margin >= 0, "rank_weight and rank_margin must be >= 0"),
            (
                self.online_versions >= 0 and (not self.online_versions or (self.group_anchor and self.rank_weight)),
                "online_versions must be >= 0 and needs group_anchor and a rank_weight above 0",
            ),
            (
                not (unknown := sorted(set(self.online_types) - set(DISTORTIONS))),
                f"online_types: unknown distortion types {unknown}; known: {', '.join(DISTORTIONS)}",
            ),
            (1 <= self.backbone_stages <= 7, "backbone_stages must be in [1, 7]"),
            (self.dtype in ("fp32", "bf16", "fp16"), f"dtype must be fp32, bf16 or fp16, not {self.dtype!r}"),
            (
                isinstance(self.compile, bool) or self.compile in COMPILE_MODES,
                f"compile must be false, true or one of {', '.join(COMPILE_MODES)}, not {self.compile!r}",
            ),
            (
                self.adam in ADAM_IMPLEMENTATIONS,
                f"adam must be one of {', '.join(ADAM_IMPLEMENTATIONS)}, not {self.adam!r}",
            ),
            (self.log_every_steps >= 1, "log_every_steps must be >= 1"),
            (bool(self.datasets), "datasets: name at least one training dataset (gamma-iqa list datasets)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


_HINTS = typing.get_type_hints(TrainConfig)


def _dataset_entry(value: Any) -> str | dict:
    """One `datasets` entry: a registered name (stripped), or a user dataset mapping, checked as `user_dataset` does.

    Raises:
        ValueError: neither a name nor a valid mapping (prefixed with `datasets:`).
    """
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, dict):
        try:
            user_dataset(value)
        except ValueError as e:
            raise ValueError(f"datasets: {e}") from None
        return dict(value)
    raise ValueError(f"datasets: each entry is a dataset name or a mapping, got {value!r}")


def _datasets_value(value: Any) -> tuple[str | dict, ...]:
    """The `datasets` setting from a list or a comma-separated string of entries (`_dataset_entry`).

    Raises:
        ValueError: not a list, or a bad entry (naming `datasets`).
    """
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"datasets must be a list, got {value!r}")
    return tuple(_dataset_entry(v) for v in items if v != "")


def _coerce(name: str, value: Any) -> Any:
    """A YAML or command-line value as setting `name`'s type (tuples from lists or comma-separated strings).

    Raises:
        ValueError: the value does not fit the setting's type (naming the setting).
    """
    if name == "datasets":
        return _datasets_value(value)
    if name == "compile" and value is not None:
        return value  # a bool or a mode name; TrainConfig checks which
    hint = _HINTS[name]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ValueError(f"{name} cannot be empty")
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"{name} must be a list, got {value!r}")
        return tuple(args[0](v.strip() if isinstance(v, str) else v) for v in items if v != "")
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if base is bool and not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if base is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return base(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {base.__name__}, got {value!r}") from None


def load_config(config: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """TrainConfig from a YAML file and `key=value` overrides (values parsed as YAML, applied in order).

    Args:
        config: a YAML file of settings (a mapping); None: the defaults.
        overrides: `key=value` strings; an empty value is None.

    Raises:
        ValueError: an unreadable `config` file, a malformed override, an unknown setting or a bad value (the message
            names the `config` or `overrides` parameter, or the setting).
    """
    values: dict[str, Any] = {}
    if config is not None:
        try:
            loaded = yaml.safe_load(Path(config).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"`config` {config}: cannot read ({str(e).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"`config` {config}: expected a mapping of settings")
        values.update(loaded)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"`overrides` {item!r}: expected key=value")
        values[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown training settings: {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
    return TrainConfig(**{k: _coerce(k, v) for k, v in values.items()})


def save_config(cfg: TrainConfig, path: Path, note: str | list[str] = "") -> None:
    """Write `cfg` to `path` as YAML that `load_config` reads back to an equal config.

    Args:
        cfg: the settings.
        path: the YAML file to write.
        note: written first as YAML comments (one per line, or one per item of a list), e.g. what the run resolved
            `auto` settings to.
    """
    data = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    lines = note if isinstance(note, list) else note.splitlines()
    comments = "".join(f"# {line}\n" for line in lines)
    path.write_text(comments + yaml.safe_dump(data, sort_keys=False))
