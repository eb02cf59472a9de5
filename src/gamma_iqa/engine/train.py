"""Training: the published recipe (gamma.md §8), joint over many datasets, on one process or many (torchrun DDP).

A run folder holds `config.yaml` (the effective config), `metrics.csv` (plus TensorBoard when installed), `best/` and
`last/` checkpoints in our format (`last/` also has `train_state.pt`, to resume from) and `progress.png`.
Every sample's crop and flip are seeded by (seed, epoch, position in the epoch), and the sampler is a pure function of
(seed, epoch), so a resumed run and a run on any number of processes follow the uninterrupted single-process run.

Options beyond the published recipe, all off by default (issue 12, gamma-lite 2): a ranking loss over versions of one
photo (`rank_weight`, `rank_loss`), batches that hold several versions of a photo (`sampler: grouped`), with its best
(`group_anchor`) and in one shared view (`aligned_views`), a random rescale before the crop (`scale_range`) and
fine-tuning gamma-lite's later backbone stages (`backbone_lr`, `backbone_stages`), and versions of each anchor's view
distorted on the fly (`online_versions`), ranked below it by their strength alone, without labels.
Groups (source photos) come from a user dataset's `group_column`; an image without one is a group of its own.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.autograd.graph import increment_version
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ..data.datasets import DatasetSpec, get_dataset, load_splits, select, user_dataset
from ..data.distortions import DISTORTIONS, distort
from ..data.readers import read_groups
from ..data.sampler import JointSampler
from ..data.transforms import crop_offsets, image_to_tensor, load_image, make_crops, resize_short_side
from ..models.base import QualityModel
from ..models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..models.effnet import LITE0_STAGES
from ..models.factory import create_model
from ..models.lite import GammaLite
from ..models.moe import PositionwiseMoAE
from ..plots import plot_curves
from .evaluate import evaluate
from .progress import Progress
from .runlog import MetricsLog
from .runtime import autocast, compile_mode, holding_warnings, process_group, replay_warnings
from .trainconfig import TrainConfig, save_config

__all__ = ["TrainingError", "rank_loss", "train"]

STATE_FILE = "train_state.pt"


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says why and where the last good checkpoint is."""


@dataclass(frozen=True)
class Sample:
    path: Path
    target: float  # normalised MOS, higher is better
    scene: str
    resize: int | None
    group: int = -1  # the sample's group (source photo) id, unique across datasets; each ungrouped sample its own


# crop (3, S, S), target, scene, group, and an anchor's on-the-fly versions: (crops (k, 3, S, S), strengths (k,))
Item = tuple[torch.Tensor, float, str, int, tuple[torch.Tensor, torch.Tensor] | None]
# crops (B, 3, S, S), targets (B,), scenes, groups (B,), online order (B,): B counts the on-the-fly versions too, whose
# target is NaN; the order is 0 for an anchor with versions, minus the strength for its versions, NaN for the rest.
Batch = tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor, torch.Tensor]
ONLINE_STRENGTHS = (0.05, 1.0)  # on-the-fly versions' strengths, log-uniform: as many in [0.05, 0.22] as in [0.22, 1]
ONLINE_GAP = 0.5  # on-the-fly pairs ask for rank_margin once their strengths differ by rank_margin / ONLINE_GAP
_PAD = 16  # on-the-fly distortions see the crop reflect-padded by 16 px in all, at a random offset: block grids
# (JPEG's 8 px, pixelation's) fall at any phase, as in a crop of a damaged photo, and filters see no hard border


class TrainImages(Dataset):
    """Training views: optional short-side resize, optional random rescale, a random `size` crop and a random flip.

    Items are keyed by (epoch, position, index): the augmentation depends on nothing else, so any worker count,
    process count or resume point gives the same tensors.
    """

    def __init__(
        self,
        samples: list[Sample],
        *,
        size: int,
        hflip: bool,
        seed: int,
        scale_range: tuple[float, ...] = (),
        shared_views: int = 1,
        online_versions: int = 0,
        online_types: tuple[str, ...] = (),
        anchor_every: int = 1,
    ) -> None:
        """Views of `samples`; `shared_views` consecutive positions of an epoch draw one view (1: each its own).

        Positions that are multiples of `anchor_every` (a grouped sampler's anchors) also bring `online_versions`
        versions of their view, made by one type of `online_types` (empty: all of `DISTORTIONS`) at as many random
        strengths (`online_view`).
        """
        self.samples, self.size, self.hflip, self.seed = samples, size, hflip, seed
        self.scale_range, self.shared_views = scale_range, shared_views
        self.online_versions, self.anchor_every = online_versions, anchor_every
        self.online_types = tuple(online_types) or tuple(DISTORTIONS)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int, int]) -> Item:
        epoch, position, index = key
        s = self.samples[index]
        view = position // self.shared_views  # a grouped batch's k versions of a photo: one rescale, crop and flip
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 100_000_007 + view)
        image = load_image(s.path)
        if s.resize:
            image = resize_short_side(image, s.resize)
        if self.scale_range:
            crop = self.rescaled_crop(image, g)
        else:
            crop = make_crops(image, 1, self.size, generator=g).crops[0]  # (3, size, size)
        if self.hflip and torch.rand((), generator=g) < 0.5:
            crop = crop.flip(-1)
        online = None
        if self.online_versions and position % self.anchor_every == 0:
            online = self.online_view(crop, torch.Generator().manual_seed(g.initial_seed() + 1))
        return crop, s.target, s.scene, s.group, online

    def online_view(self, crop: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`online_versions` versions of `crop` (3, S, S) in [0, 1], one type at sorted random strengths.

        The type is drawn from `online_types`; strengths are log-uniform in `ONLINE_STRENGTHS`, ascending (mildest
        first). Each version distorts the crop reflect-padded by `_PAD` pixels at a random offset, is cut back to the
        crop's window and rounded to 8 bits, as a stored image would be.

        Returns:
            The versions (k, 3, S, S) float32 in [0, 1] and their strengths (k,) in (0, 1].
        """
        kind = self.online_types[int(torch.randint(len(self.online_types), (), generator=g))]
        lo, hi = ONLINE_STRENGTHS
        u = torch.rand(self.online_versions, generator=g, dtype=torch.float64).sort().values
        strengths = torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        ty, tx = (int(v) for v in torch.randint(_PAD + 1, (2,), generator=g))
        rng = np.random.default_rng(int(torch.randint(2**62, (), generator=g)))
        x = crop.permute(1, 2, 0).numpy()  # (S, S, 3)
        padded = np.pad(x, ((ty, _PAD - ty), (tx, _PAD - tx), (0, 0)), mode="reflect")
        versions = []
        for strength in strengths.tolist():
            y = distort(padded, kind, strength, rng)[ty : ty + self.size, tx : tx + self.size]
            versions.append(torch.from_numpy(np.round(y * 255) / 255).permute(2, 0, 1))
        return torch.stack(versions).float(), strengths.float()

    def rescaled_crop(self, image: Image.Image, g: torch.Generator) -> torch.Tensor:
        """A `size` crop of `image` resized by a factor drawn from `g`, log-uniform in `scale_range`: (3, size, size).

        Each octave of the range is equally likely (as many crops at 1/4 to 1/2 of full size as at 1/2 to 1). The
        factor is raised as far as needed for the short side to keep `size` pixels; an image already under the crop
        size is left to `make_crops`, which enlarges it as without a rescale. Only the crop's window is resampled
        (Lanczos, antialiased, with the pixels around the window as the filter's support), which gives the crop of the
        rescaled image at a fraction of the cost of rescaling a large photo whole.

        Args:
            image: the (possibly resized) training image.
            g: the sample's generator; one float64 is drawn from it, then the crop's offsets.
        """
        lo, hi = self.scale_range
        u = float(torch.rand((), generator=g, dtype=torch.float64))
        w, h = image.size
        if min(w, h) < self.size:
            return make_crops(image, 1, self.size, generator=g).crops[0]
        factor = max(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))), self.size / min(w, h))
        new_w, new_h = max(self.size, round(w * factor)), max(self.size, round(h * factor))
        ((top, left),) = crop_offsets(new_h, new_w, self.size, 1, g)
        if (new_w, new_h) == (w, h):
            return image_to_tensor(image.crop((left, top, left + self.size, top + self.size)))
        sx, sy = w / new_w, h / new_h  # the rescaled image's pixel in source pixels, per axis
        box = (left * sx, top * sy, (left + self.size) * sx, (top + self.size) * sy)
        return image_to_tensor(image.resize((self.size, self.size), Image.Resampling.LANCZOS, box=box))


class _Held(Dataset):
    """`dataset`'s items, each with the warnings it raised held back (`holding_warnings`).

    A DataLoader worker's warnings (an image's colour profile not applied) are so shown by the main process, through
    its filters: once, and as `gamma-iqa` shows warnings (one line).
    """

    def __init__(self, dataset: Dataset) -> None:
        """Wrap `dataset`."""
        self.dataset = dataset

    def __len__(self) -> int:
        """The wrapped dataset's length."""
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[Item, list[Warning]]:
        """(the wrapped dataset's item `key`, the warnings it raised)."""
        return holding_warnings(lambda: self.dataset[key])


def _collate_held(pairs: list[tuple[Item, list[Warning]]]) -> tuple[Batch, list[Warning]]:
    """`_collate` of `_Held` items, and their warnings in order."""
    return _collate([item for item, _ in pairs]), [w for _, held in pairs for w in held]


def _shown(batch: tuple[Batch, list[Warning]]) -> Batch:
    """A loader's batch, once the warnings its items raised are warned in this process."""
    replay_warnings(batch[1])
    return batch[0]


def _collate(items: list[Item]) -> Batch:
    """Stack `items`, each anchor's on-the-fly versions right after it (`Batch`)."""
    crops, targets, scenes, groups, order = [], [], [], [], []
    for crop, target, scene, group, online in items:
        k = 0 if online is None else len(online[1])
        crops += [crop[None]] + ([online[0]] if k else [])
        targets += [target] + [math.nan] * k
        scenes += [scene] * (1 + k)
        groups += [group] * (1 + k)
        order += ([0.0] + [-v for v in online[1].tolist()]) if k else [math.nan]
    return (
        torch.cat(crops),
        torch.tensor(targets, dtype=torch.float32),
        scenes,
        torch.tensor(groups, dtype=torch.long),
        torch.tensor(order, dtype=torch.float32),
    )


def rank_loss(pred: torch.Tensor, target: torch.Tensor, groups: torch.Tensor, margin: float) -> torch.Tensor:
    """Pairwise margin ranking loss over the pairs of a batch that share a group, ordered by their targets.

    With predictions p, targets t and groups g (all (B,)), the pairs P = {(i, j): g_i = g_j, t_i > t_j} (ties give
    no pair) and each pair's margin m_ij = min(margin, t_i - t_j):

        L = 1 / |P| * sum over (i, j) in P of max(0, m_ij - (p_i - p_j)),   L = 0 when P is empty.

    A pair costs nothing once the better version scores at least m_ij above the worse one, and m_ij - (p_i - p_j)
    when it does not (a wrong order costs more than a too narrow gap). Capping the margin at the target gap means a
    model that predicts the targets exactly has zero ranking loss, so the loss never pulls against the regression.

    Args:
        pred: predicted scores (B,), higher is better.
        target: normalised MOS (B,), higher is better.
        groups: group (source photo) ids (B,); pairs are only formed within a group.
        margin: the largest margin asked for, on the normalised scale (>= 0).

    Returns:
        The loss, a scalar (float32), differentiable in `pred`.
    """
    pred, target = pred.float(), target.float()
    gap = target[:, None] - target[None, :]  # (B, B): t_i - t_j, NaN where either target is
    pairs = (groups[:, None] == groups[None, :]) & (gap > 0)  # (B, B); never i == j (gap 0), nor a NaN target
    hinge = (gap.nan_to_num().clamp(max=margin) - (pred[:, None] - pred[None, :])).clamp(min=0)  # (B, B)
    return (hinge * pairs).sum() / pairs.sum().clamp(min=1)  # no host sync on an empty P


class _MicroBatches:
    """DataLoader batch sampler: the micro-batches of one process from `start` to the end of one epoch.

    Each micro-batch is a list of (epoch, position in the epoch, dataset index) keys.
    """

    def __init__(self, sampler: JointSampler, epoch: int, start: int, rank: int, world: int, accum: int) -> None:
        self.sampler, self.epoch, self.start = sampler, epoch, start
        self.shard = {"rank": rank, "world": world, "accum": accum}

    def __iter__(self):
        order = self.sampler.order(self.epoch).tolist()
        for step in range(self.start, self.sampler.steps_per_epoch):
            for positions in self.sampler.positions(step, **self.shard):
                yield [(self.epoch, p, order[p]) for p in positions]

    def __len__(self) -> int:
        return (self.sampler.steps_per_epoch - self.start) * self.shard["accum"]


def _build_model(cfg: TrainConfig) -> QualityModel:
    if Path(cfg.model).exists():  # fine-tuning from one of our checkpoints (e.g. the converted Gamma weights)
        if cfg.backbone:
            raise TrainingError("backbone applies to a fresh registered model, not to a checkpoint given as model")
        return load_checkpoint(cfg.model)
    try:
        return create_model(cfg.model, backbone=cfg.backbone, seed=cfg.seed)
    except CheckpointError as e:
        raise TrainingError(
            f"{e.command_line}; to train {cfg.model} from CLIP/UniQA weights set backbone=PATH (e.g. UniQA_weight.pt), "
            "or set model=FOLDER to fine-tune a converted checkpoint"
        ) from None


def _datasets(cfg: TrainConfig) -> list[tuple[DatasetSpec, str | os.PathLike[str]]]:
    """(spec, data root) of each configured dataset: registered names, or own data given as a mapping."""
    return [
        (get_dataset(entry), cfg.data_root) if isinstance(entry, str) else user_dataset(entry, cfg.data_root)
        for entry in cfg.datasets
    ]


def _group_names(cfg: TrainConfig) -> list[dict[str, str]]:
    """Per configured dataset, {image as in its CSV: group name} from its `group_column`; {} for none."""
    return [
        read_groups(entry["csv"], entry["group_column"], entry.get("image_column", "image"))
        if isinstance(entry, dict) and entry.get("group_column")
        else {}
        for entry in cfg.datasets
    ]


def _samples(
    datasets: list[tuple[DatasetSpec, str | os.PathLike[str]]], split: int, groups: list[dict[str, str]], say: bool
) -> tuple[list[list[Sample]], list[int]]:
    """Training samples of each dataset (with group ids, unique across datasets), and the number of test images.

    With `say`, one stderr line per dataset names the split file read, written or rebuilt.
    """
    train_sets, test_sizes, ids = [], [], {}
    for k, ((spec, root), names) in enumerate(zip(datasets, groups, strict=True)):
        loaded = load_splits(spec, root)
        if say:
            print(f"{spec.name}: split file {loaded.path} ({loaded.state})", file=sys.stderr)
        records = loaded.records
        chosen = select(records, split, "train", name=spec.name)
        if not chosen:
            raise TrainingError(f"{spec.name}: split {split} has no training images")
        train_sets.append([])
        for r in chosen:  # an image without a group gets a key of its own, so it pairs with nothing
            key = (k, names[r.image]) if r.image in names else (k, None, r.image)
            group = ids.setdefault(key, len(ids))
            train_sets[-1].append(Sample(r.path, r.mos_norm, spec.scene, spec.resize, group))
        test_sizes.append(len(select(records, split, "test", name=spec.name)))
    return train_sets, test_sizes


def _unfreeze_backbone(model: QualityModel, cfg: TrainConfig) -> None:
    """Make gamma-lite's last `backbone_stages` stages trainable (with the head; 7: the stem too) when `backbone_lr`.

    Parameters inside MoAE units keep their state: the experts train already (at `moe_lr`), the shared expert stays
    the frozen ImageNet copy. BatchNorm keeps running in eval mode (`GammaLite.train`): its running statistics stay
    ImageNet's and only its affine weights train, because a batch here is a few photos in several versions each, far
    too few and too alike for batch statistics, and because scores must not depend on what else is in a batch.

    Raises:
        TrainingError: `backbone_lr` with a model that is not gamma-lite.
    """
    if cfg.backbone_lr is None:
        return
    if not isinstance(model, GammaLite):
        raise TrainingError(f"backbone_lr fine-tunes gamma-lite's backbone; {cfg.model} is a {model.kind} model")
    net = model.backbone
    first = len(net.blocks) - sum(stage[-1] for stage in LITE0_STAGES[len(LITE0_STAGES) - cfg.backbone_stages :])
    parts = [*net.blocks[first:], net.head, *([net.stem] if cfg.backbone_stages == len(LITE0_STAGES) else [])]
    in_moe = {id(p) for m in model.modules() if isinstance(m, PositionwiseMoAE) for p in m.parameters()}
    for part in parts:
        for p in part.parameters():
            if id(p) not in in_moe:
                p.requires_grad_(True)


def _optimizer(model: QualityModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam with two groups as the original: the MoAE blocks' parameters and the rest (adapter, levels, ...).

    With `backbone_lr`, a third group: the backbone's trainable parameters outside MoAE (`_unfreeze_backbone`).
    """
    in_moe = {id(p) for m in model.modules() if isinstance(m, PositionwiseMoAE) for p in m.parameters()}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    moe = [p for _, p in trainable if id(p) in in_moe]
    tuned = cfg.backbone_lr is not None
    backbone = [p for n, p in trainable if tuned and id(p) not in in_moe and n.startswith("backbone.")]
    elsewhere = in_moe | {id(p) for p in backbone}
    head = [p for _, p in trainable if id(p) not in elsewhere]
    groups = [{"params": moe, "lr": cfg.moe_lr or cfg.lr}, {"params": head, "lr": cfg.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.backbone_lr})
    impl = _adam_implementation(cfg.adam, [p for _, p in trainable])
    flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "default": {}}[impl]
    return torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **flags)


def _fused_adam_runs(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this torch has a fused Adam kernel for parameters on `device` of `dtype` (one step on a probe)."""
    probe = torch.nn.Parameter(torch.zeros(1, device=device, dtype=dtype))
    probe.grad = torch.ones_like(probe)
    try:
        torch.optim.Adam([probe], fused=True).step()
    except (RuntimeError, TypeError):  # no kernel for the device or dtype; TypeError: a torch without `fused`
        return False
    return True


def _adam_implementation(choice: str, params: list[torch.nn.Parameter]) -> str:
    """The Adam implementation to run for setting `adam` (`ADAM_IMPLEMENTATIONS`): fused, foreach or default.

    `auto` is fused where this torch has the kernel for every (device, dtype) of `params`, else torch's default.

    Raises:
        TrainingError: `adam: fused` where torch has no fused kernel for the parameters.
    """
    if choice in ("foreach", "default"):
        return choice
    fused = all(_fused_adam_runs(device, dtype) for device, dtype in {(p.device, p.dtype) for p in params})
    if choice == "fused" and not fused:
        raise TrainingError(
            f"adam: fused: torch {torch.__version__} has no fused Adam for these parameters' device; set adam=auto"
        )
    return "fused" if fused else "default"


def _adam_name(optimizer: torch.optim.Optimizer) -> str:
    """The implementation `optimizer` runs: fused, foreach, or default (torch's choice per step)."""
    group = optimizer.param_groups[0]
    return "fused" if group.get("fused") else "foreach" if group.get("foreach") else "default"


def _compile(model: QualityModel, cfg: TrainConfig, *, announce: bool = False) -> None:
    """Compile `model` in place as setting `compile` asks: its towers (`compile_towers`) where it has them, else whole.

    In place (nn.Module.compile), so parameters, state-dict keys and checkpoints stay as without compiling. With
    `announce`, one line on stderr says why the first steps are slow.
    """
    mode = compile_mode(cfg.compile)
    if mode is None:
        return
    if announce:
        print(
            f"train: compiling the model (torch.compile, mode {mode}); the first steps and the first evaluation "
            "take a minute or more",
            file=sys.stderr,
        )
    compile_towers = getattr(model, "compile_towers", None)
    if compile_towers is not None:
        compile_towers(mode=mode)
    else:
        model.compile(mode=mode)


class _Run:
    """One training run's state and its checkpoints."""

    def __init__(self, cfg: TrainConfig, resume: bool, group: tuple[int, int, torch.device]) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.rank, self.world, self.device = group
        if cfg.batch_size % (self.world * cfg.accum):
            raise TrainingError(
                f"batch_size {cfg.batch_size} is not divisible by {self.world} processes x "
                f"accum {cfg.accum}: set accum so that batch = processes x accum x micro-batch"
            )
        torch.manual_seed(cfg.seed)
        self.model = _build_model(cfg).to(self.device)
        _unfreeze_backbone(self.model, cfg)
        self.model.train()
        if cfg.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        _compile(self.model, cfg, announce=self.rank == 0)  # before DDP wraps it
        self.datasets = _datasets(cfg)
        self.train_sets, test_sizes = _samples(self.datasets, cfg.split, _group_names(cfg), self.rank == 0)
        for (spec, _), n in zip(self.datasets, test_sizes, strict=True):
            if n == 0 and self.rank == 0:
                print(f"warning: {spec.name}: split {cfg.split} has no test images to evaluate", file=sys.stderr)
        self.eval_sets = [d for d, n in zip(self.datasets, test_sizes, strict=True) if n > 0]
        samples = [s for group in self.train_sets for s in group]
        self.sampler = self._sampler(samples)
        self.images = TrainImages(
            samples, size=self.model.image_size, hflip=cfg.hflip, seed=cfg.seed, scale_range=cfg.scale_range,
            shared_views=cfg.group_size if cfg.aligned_views else 1, online_versions=cfg.online_versions,
            online_types=cfg.online_types, anchor_every=cfg.group_size,
        )  # fmt: skip
        self.optimizer = _optimizer(self.model, cfg)
        self.fused_adam = _adam_name(self.optimizer) == "fused"
        self.trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cfg.epochs, eta_min=0.0)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.dtype == "fp16")
        self.net = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.world > 1
            else self.model
        )
        self.epoch = self.step = self.global_step = 0
        self.last_eval = -1
        self.progress = Progress(0, desc="train", unit="step", enabled=False)  # `run` starts the shown one
        self.best: dict[str, float] = {}
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self._load_state()
        elif self.rank == 0 and (self.out / "last").exists():
            raise TrainingError(f"{self.out} already holds a run: pass `resume` to continue it, or another `out`")
        self.log = MetricsLog(self.out, enabled=self.rank == 0)
        if resume:
            self.log.truncate_after(self.global_step)
        if self.rank == 0:
            self._save_config(resume)

    def _save_config(self, resume: bool) -> None:
        """config.yaml, its first lines saying what ran: on resume the earlier parts' lines kept, this part's added."""
        path = self.out / "config.yaml"
        notes = []
        if resume and path.is_file():
            notes = [line[2:] for line in path.read_text().splitlines() if line.startswith("# ")]
        ran = f"Adam {_adam_name(self.optimizer)}, compile {self.cfg.compile}, torch {torch.__version__}"
        notes.append(f"{f'resumed at step {self.global_step}' if resume else 'this run'}: {ran}, device {self.device}")
        save_config(self.cfg, path, notes)

    def _sampler(self, samples: list[Sample]) -> JointSampler:
        """The run's sampler; a grouped one checks that no micro-batch splits a group."""
        cfg = self.cfg
        if cfg.sampler == "grouped" and (cfg.batch_size // (self.world * cfg.accum)) % cfg.group_size:
            raise TrainingError(
                f"sampler grouped: a micro-batch of batch_size {cfg.batch_size} / ({self.world} processes x accum "
                f"{cfg.accum}) would split groups of group_size {cfg.group_size}: make it a multiple of group_size"
            )
        return JointSampler(
            [len(s) for s in self.train_sets],
            batch_size=cfg.batch_size,
            mode=cfg.sampler,
            seed=cfg.seed,
            groups=[s.group for s in samples] if cfg.sampler == "grouped" else None,
            group_size=cfg.group_size,
            anchors=[s.target for s in samples] if cfg.group_anchor else None,
        )

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def _check_finite(self, loss: float) -> None:
        """Stop before a checkpoint could save diverged weights."""
        weights = [torch.isfinite(p).all() for p in self.model.parameters() if p.requires_grad]
        bad = not math.isfinite(loss) or not bool(torch.stack(weights).all())  # one host sync, not one per tensor
        if bad:
            raise TrainingError(
                f"loss became {loss} by epoch {self.epoch + 1}, step {self.global_step}: the run stopped; the last "
                f"good checkpoint is {self.out / 'last'} (resume from it with a lower lr, or with dtype=fp32)"
            )

    def save(self, name: str = "last") -> None:
        """Write `out/<name>/` atomically: into a temporary folder first, then swapped in by renames."""
        if self.rank != 0:
            return
        tmp, old, final = self.out / f"{name}.tmp", self.out / f"{name}.old", self.out / name
        shutil.rmtree(tmp, ignore_errors=True)
        save_checkpoint(self.model, tmp)
        if name == "last":
            state = {
                "epoch": self.epoch,
                "step": self.step,
                "global_step": self.global_step,
                "best": self.best,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "torch_rng": torch.get_rng_state(),
            }
            torch.save(state, tmp / STATE_FILE)
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)

    def _load_state(self) -> None:
        folder = next((f for f in (self.out / "last", self.out / "last.old") if (f / STATE_FILE).is_file()), None)
        if folder is None:
            raise TrainingError(f"`resume`: no checkpoint with {STATE_FILE} in {self.out / 'last'}")
        saved = load_checkpoint(folder)
        self.model.load_state_dict(saved.state_dict())
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        optimizer = state["optimizer"]
        for group, now in zip(optimizer["param_groups"], self.optimizer.param_groups, strict=True):
            # The saved groups' flags would replace this run's, and decide where `step` lives: run the
            # implementation this config asks for, whichever one wrote the state.
            group.update(fused=now["fused"], foreach=now["foreach"])
        self.optimizer.load_state_dict(optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch, self.step, self.global_step = state["epoch"], state["step"], state["global_step"]
        self.best = dict(state["best"])

    # ---- evaluation --------------------------------------------------------------------------------------------
    def evaluate(self) -> None:
        if self.rank == 0:
            self.model.eval()
            results = [
                r
                for spec, root in self.eval_sets
                for r in evaluate(
                    self.model,
                    [spec],
                    root,
                    split=self.cfg.split,
                    crops=self.cfg.eval_crops,
                    seed=self.cfg.seed,
                    batch_size=self.cfg.eval_batch_size,
                    workers=self.cfg.workers,
                    show_progress=True,
                )
            ]
            self.model.train()
            values, improved = {}, False
            for r in results:
                values.update({f"{r.dataset}/srcc": r.srcc, f"{r.dataset}/plcc": r.plcc})
                if math.isfinite(r.srcc) and r.srcc > self.best.get(r.dataset, -math.inf):
                    self.best[r.dataset], improved = r.srcc, True
            self.log.log(self.global_step, self.epoch + 1, "eval", values)
            self.last_eval = self.global_step
            self.progress.write(
                f"epoch {self.epoch + 1} step {self.global_step}: "
                + ", ".join(f"{r.dataset} SRCC {r.srcc:.4f} PLCC {r.plcc:.4f}" for r in results)
            )
            if improved:
                self.save("best")
            self.plot()
        if self.world > 1:
            dist.barrier()

    def plot(self) -> None:
        """Draw the metrics log to the run's progress.png (rank 0)."""
        if self.rank == 0:
            plot_curves(self.log.read(), self.out / "progress.png")

    # ---- the loop ----------------------------------------------------------------------------------------------
    def _train_step(self, micro: list[Batch]) -> torch.Tensor:
        """One optimiser step over `accum` micro-batches; returns (2,): the mean loss and the mean ranking loss."""
        total = torch.zeros(2, device=self.device)
        for k, (crops, targets, scenes, groups, order) in enumerate(micro):
            last = k == len(micro) - 1
            sync = contextlib.nullcontext() if last or self.world == 1 else self.net.no_sync()
            with sync:
                with autocast(self.device, self.cfg.dtype):
                    pred = self.net(crops.to(self.device, non_blocking=True), scenes)
                labelled = (~targets.isnan()).nonzero().squeeze(1)  # (n,) on the host: a device mask would sync
                targets = targets.to(self.device, non_blocking=True)
                loss = self._mse(pred.float(), targets, labelled)
                rank = torch.zeros((), device=self.device)
                if self.cfg.rank_weight:  # pairs within this micro-batch (grouped batches keep a group in one)
                    groups = groups.to(self.device, non_blocking=True)
                    rank = rank_loss(pred, targets, groups, self.cfg.rank_margin)
                    if self.cfg.online_versions:  # the anchor above its versions, the weaker above the stronger
                        online = order.to(self.device, non_blocking=True) * ONLINE_GAP
                        rank = rank + rank_loss(pred, online, groups, self.cfg.rank_margin)
                    loss = loss + self.cfg.rank_weight * rank
                self.scaler.scale(loss / len(micro)).backward()
            total += torch.stack([loss.detach(), rank.detach()]) / len(micro)
        self.scaler.step(self.optimizer)
        if self.fused_adam:
            # torch's fused Adam writes the weights without bumping their version counters, which the model's
            # no-grad caches (text features, MoAE fused weights) key on: evaluation would see stale weights.
            increment_version(self.trainable)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    def _mse(self, pred: torch.Tensor, targets: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
        """The MSE of `pred` against `targets` (both (B,), on the device) over the rows `labelled` (n,) on the host."""
        if len(labelled) < len(targets):  # on-the-fly versions (NaN targets) have no label
            index = labelled.to(self.device, non_blocking=True)
            pred, targets = pred.index_select(0, index), targets.index_select(0, index)
        return torch.nn.functional.mse_loss(pred, targets)

    def _log_train(self, running: torch.Tensor, count: int) -> float:
        """Log the mean loss (and ranking loss, when on) of the last `count` steps; returns the loss.

        Raises:
            TrainingError: a loss or weight that is not finite (`_check_finite`).
        """
        loss, rank = (v / count for v in running.tolist())
        self._check_finite(loss)
        values = {"loss": loss, "lr": self.optimizer.param_groups[0]["lr"]}
        if self.cfg.rank_weight:
            values["rank"] = rank
        self.log.log(self.global_step, self.epoch + 1, "train", values)
        return loss

    def _progress(self) -> Progress:
        """The run's progress over all its steps (rank 0): a bar on a terminal, else a line a minute."""
        total = self.cfg.epochs * self.sampler.steps_per_epoch
        if self.cfg.max_steps:
            total = min(total, self.cfg.max_steps)
        return Progress(total, desc="train", unit="step", done=self.global_step, enabled=self.rank == 0)

    def _status(self, loss: float | None) -> str:
        """The progress status: the epoch and, once logged, the mean loss of the last `log_every_steps` steps."""
        return f"epoch {self.epoch + 1}/{self.cfg.epochs}" + ("" if loss is None else f", loss {loss:.4g}")

    def _after_step(
        self, running: torch.Tensor, count: int, loss: float | None
    ) -> tuple[torch.Tensor, int, float | None]:
        """Log, checkpoint and evaluate as the config asks after a step; returns the new (running, count, loss)."""
        cfg = self.cfg
        if self.global_step % cfg.log_every_steps == 0 or self.step == self.sampler.steps_per_epoch:
            loss = self._log_train(running, count)
            running, count = torch.zeros(2, device=self.device), 0
        self.progress.update(1, self._status(loss))
        if cfg.save_every_steps and self.global_step % cfg.save_every_steps == 0:
            self._check_finite(float(running[0]) / count if count else (loss or 0.0))
            self.save()
        if cfg.eval_every_steps and self.global_step % cfg.eval_every_steps == 0:
            self.evaluate()
        return running, count, loss

    def _end_epoch(self) -> None:
        """Step the schedule, evaluate when the config asks (and always after the last epoch), save `last/`."""
        cfg = self.cfg
        self.scheduler.step()
        if (self.epoch + 1) in cfg.eval_epochs or (
            cfg.eval_every_epochs and (self.epoch + 1) % cfg.eval_every_epochs == 0
        ):
            self.evaluate()
        if self.epoch + 1 == cfg.epochs and self.last_eval != self.global_step:
            self.evaluate()  # and always at the end, as the original
        self.epoch, self.step = self.epoch + 1, 0
        self.save()

    def run(self) -> None:
        """Train from the current epoch and step to the end of the schedule (or `max_steps`), showing progress."""
        cfg = self.cfg
        running, count, loss = torch.zeros(2, device=self.device), 0, None
        self.progress = self._progress()
        try:
            while self.epoch < cfg.epochs:
                batches = _MicroBatches(self.sampler, self.epoch, self.step, self.rank, self.world, cfg.accum)
                loader = iter(
                    DataLoader(
                        _Held(self.images),
                        batch_sampler=batches,
                        num_workers=cfg.workers,
                        collate_fn=_collate_held,
                        pin_memory=self.device.type == "cuda",
                    )
                )
                while self.step < self.sampler.steps_per_epoch:
                    if cfg.max_steps and self.global_step >= cfg.max_steps:
                        self.save()
                        return
                    running += self._train_step([_shown(next(loader)) for _ in range(cfg.accum)])
                    count += 1
                    self.step += 1
                    self.global_step += 1
                    running, count, loss = self._after_step(running, count, loss)
                self._end_epoch()
        finally:
            self.progress.close()


def train(cfg: TrainConfig, *, resume: bool = False) -> Path:
    """Train with `cfg`; returns the run folder. Under torchrun every process calls this (one DDP group).

    Args:
        cfg: the run's settings (its `out` is the run folder).
        resume: continue the run in `cfg.out` from its last checkpoint.

    Raises:
        TrainingError: a run that cannot start or go on (a run already in the folder without `resume`, nothing to
            resume, a model without weights, a diverged loss); the message says what to do.
        ValueError: a bad dataset, split or setting.
    """
    with process_group(cfg.device) as group:
        run = _Run(cfg, resume, group)
        try:
            run.run()
            run.plot()
        finally:
            run.log.close()
    return run.out
