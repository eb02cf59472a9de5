"""Training: the published recipe (gamma.md §8), joint over many datasets, on one process or many (torchrun DDP).

A run folder holds `config.yaml` (the effective config), `metrics.csv` (plus TensorBoard when installed), `best/` and
`last/` checkpoints in our format (`last/` also has `train_state.pt`, to resume from) and `progress.png`.
Every sample's crop and flip are seeded by (seed, epoch, position in the epoch), and the sampler is a pure function of
(seed, epoch), so a resumed run and a run on any number of processes follow the uninterrupted single-process run.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ..data.datasets import DatasetSpec, get_dataset, load_records, select, user_dataset
from ..data.sampler import JointSampler
from ..data.transforms import load_image, make_crops, resize_short_side
from ..models.base import QualityModel
from ..models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..models.factory import create_model
from ..models.moe import PositionwiseMoAE
from ..plots import plot_curves
from .evaluate import evaluate
from .runlog import MetricsLog
from .runtime import autocast, process_group
from .trainconfig import TrainConfig, save_config

__all__ = ["TrainingError", "train"]

STATE_FILE = "train_state.pt"


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says why and where the last good checkpoint is."""


@dataclass(frozen=True)
class Sample:
    path: Path
    target: float  # normalised MOS, higher is better
    scene: str
    resize: int | None


class TrainImages(Dataset):
    """Training views: optional short-side resize, a random `size` crop and a random horizontal flip.

    Items are keyed by (epoch, position, index): the augmentation depends on nothing else, so any worker count,
    process count or resume point gives the same tensors.
    """

    def __init__(self, samples: list[Sample], *, size: int, hflip: bool, seed: int) -> None:
        self.samples, self.size, self.hflip, self.seed = samples, size, hflip, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, float, str]:
        epoch, position, index = key
        s = self.samples[index]
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 100_000_007 + position)
        image = load_image(s.path)
        if s.resize:
            image = resize_short_side(image, s.resize)
        crop = make_crops(image, 1, self.size, generator=g).crops[0]  # (3, size, size)
        if self.hflip and torch.rand((), generator=g) < 0.5:
            crop = crop.flip(-1)
        return crop, s.target, s.scene


def _collate(items: list[tuple[torch.Tensor, float, str]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    crops, targets, scenes = zip(*items, strict=True)
    return torch.stack(crops), torch.tensor(targets, dtype=torch.float32), list(scenes)


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
            f"{e}; to train {cfg.model} from CLIP/UniQA weights set backbone=PATH (e.g. UniQA_weight.pt), "
            "or set model=FOLDER to fine-tune a converted checkpoint"
        ) from None


def _datasets(cfg: TrainConfig) -> list[tuple[DatasetSpec, str | os.PathLike[str]]]:
    """(spec, data root) of each configured dataset: registered names, or own data given as a mapping."""
    return [
        (get_dataset(entry), cfg.data_root) if isinstance(entry, str) else user_dataset(entry, cfg.data_root)
        for entry in cfg.datasets
    ]


def _samples(
    datasets: list[tuple[DatasetSpec, str | os.PathLike[str]]], split: int
) -> tuple[list[list[Sample]], list[int]]:
    """Training samples of each dataset, and the number of test images of each."""
    train_sets, test_sizes = [], []
    for spec, root in datasets:
        _, records = load_records(spec, root)
        chosen = select(records, split, "train", name=spec.name)
        if not chosen:
            raise TrainingError(f"{spec.name}: split {split} has no training images")
        train_sets.append([Sample(r.path, r.mos_norm, spec.scene, spec.resize) for r in chosen])
        test_sizes.append(len(select(records, split, "test", name=spec.name)))
    return train_sets, test_sizes


def _optimizer(model: QualityModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam with two groups as the original: the MoAE blocks' parameters and the rest (adapter, levels, ...)."""
    in_moe = {id(p) for m in model.modules() if isinstance(m, PositionwiseMoAE) for p in m.parameters()}
    moe = [p for p in model.parameters() if p.requires_grad and id(p) in in_moe]
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in in_moe]
    groups = [{"params": moe, "lr": cfg.moe_lr or cfg.lr}, {"params": head, "lr": cfg.lr}]
    return torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)


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
        self.model.train()
        if cfg.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.datasets = _datasets(cfg)
        self.train_sets, test_sizes = _samples(self.datasets, cfg.split)
        for (spec, _), n in zip(self.datasets, test_sizes, strict=True):
            if n == 0 and self.rank == 0:
                print(f"warning: {spec.name}: split {cfg.split} has no test images to evaluate", file=sys.stderr)
        self.eval_sets = [d for d, n in zip(self.datasets, test_sizes, strict=True) if n > 0]
        self.sampler = JointSampler(
            [len(s) for s in self.train_sets], batch_size=cfg.batch_size, mode=cfg.sampler, seed=cfg.seed
        )
        self.images = TrainImages(
            [s for group in self.train_sets for s in group],
            size=self.model.image_size,
            hflip=cfg.hflip,
            seed=cfg.seed,
        )
        self.optimizer = _optimizer(self.model, cfg)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cfg.epochs, eta_min=0.0)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.dtype == "fp16")
        self.net = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.world > 1
            else self.model
        )
        self.epoch = self.step = self.global_step = 0
        self.last_eval = -1
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
            save_config(cfg, self.out / "config.yaml")

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def _check_finite(self, loss: float) -> None:
        """Stop before a checkpoint could save diverged weights."""
        bad = not math.isfinite(loss) or any(
            not torch.isfinite(p).all() for p in self.model.parameters() if p.requires_grad
        )
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
        self.optimizer.load_state_dict(state["optimizer"])
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
            print(
                f"epoch {self.epoch + 1} step {self.global_step}: "
                + ", ".join(f"{r.dataset} SRCC {r.srcc:.4f} PLCC {r.plcc:.4f}" for r in results),
                file=sys.stderr,
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
    def _train_step(self, micro: list[tuple[torch.Tensor, torch.Tensor, list[str]]]) -> torch.Tensor:
        total = torch.zeros((), device=self.device)
        for k, (crops, targets, scenes) in enumerate(micro):
            last = k == len(micro) - 1
            sync = contextlib.nullcontext() if last or self.world == 1 else self.net.no_sync()
            with sync:
                with autocast(self.device, self.cfg.dtype):
                    pred = self.net(crops.to(self.device, non_blocking=True), scenes)
                loss = torch.nn.functional.mse_loss(pred.float(), targets.to(self.device, non_blocking=True))
                self.scaler.scale(loss / len(micro)).backward()
            total += loss.detach() / len(micro)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    def run(self) -> None:
        cfg = self.cfg
        running, count, loss = torch.zeros((), device=self.device), 0, 0.0
        while self.epoch < cfg.epochs:
            batches = _MicroBatches(self.sampler, self.epoch, self.step, self.rank, self.world, cfg.accum)
            loader = iter(
                DataLoader(
                    self.images,
                    batch_sampler=batches,
                    num_workers=cfg.workers,
                    collate_fn=_collate,
                    pin_memory=self.device.type == "cuda",
                )
            )
            while self.step < self.sampler.steps_per_epoch:
                if cfg.max_steps and self.global_step >= cfg.max_steps:
                    self.save()
                    return
                running += self._train_step([next(loader) for _ in range(cfg.accum)])
                count += 1
                self.step += 1
                self.global_step += 1
                if self.global_step % cfg.log_every_steps == 0 or self.step == self.sampler.steps_per_epoch:
                    loss = float(running) / count
                    self._check_finite(loss)
                    lr = self.optimizer.param_groups[0]["lr"]
                    self.log.log(self.global_step, self.epoch + 1, "train", {"loss": loss, "lr": lr})
                    running, count = torch.zeros((), device=self.device), 0
                if cfg.save_every_steps and self.global_step % cfg.save_every_steps == 0:
                    self._check_finite(float(running) / count if count else loss)
                    self.save()
                if cfg.eval_every_steps and self.global_step % cfg.eval_every_steps == 0:
                    self.evaluate()
            self.scheduler.step()
            if (self.epoch + 1) in cfg.eval_epochs or (
                cfg.eval_every_epochs and (self.epoch + 1) % cfg.eval_every_epochs == 0
            ):
                self.evaluate()
            if self.epoch + 1 == cfg.epochs and self.last_eval != self.global_step:
                self.evaluate()  # and always at the end, as the original
            self.epoch, self.step = self.epoch + 1, 0
            self.save()


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
