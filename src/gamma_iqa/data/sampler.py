"""Joint-training sampler: which sample each process trains on at each step.

The order is a pure function of (seed, epoch, position). That makes runs resumable mid-epoch and identical for any
number of processes.

`uniform` is the original's: the datasets' training splits concatenated and shuffled uniformly each epoch (drop_last),
so large datasets dominate (AVA is about half of all samples). `balanced` draws each sample's dataset uniformly, then an
image of that dataset, so every dataset is seen equally often; the epoch keeps the same number of samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["JointSampler"]


class JointSampler:
    """Global sample order of one epoch, cut into steps of `batch_size` (the effective batch).

    Process `rank` of `world` takes a contiguous share of each global batch, split further into `accum`
    micro-batches: global batch = world x accum x micro batch.
    """

    def __init__(self, sizes: Sequence[int], *, batch_size: int, mode: str = "uniform", seed: int = 123) -> None:
        """Plan the epochs of a joint training run.

        Args:
            sizes: the number of training images of each dataset, in the order the datasets are concatenated.
            batch_size: the effective (global) batch, in samples.
            mode: "uniform" (shuffle all images together, as the original) or "balanced" (each dataset equally often).
            seed: the run's seed; each epoch's order is drawn from (seed, epoch).

        Raises:
            ValueError: for an unknown mode, an empty dataset, or fewer images in all than one batch.
        """
        if mode not in ("uniform", "balanced"):
            raise ValueError(f"sampler must be 'uniform' or 'balanced', got {mode!r}")
        if not sizes or min(sizes) < 1:
            raise ValueError(f"every training set needs at least one image, got sizes {list(sizes)}")
        self.sizes, self.batch_size, self.mode, self.seed = list(sizes), batch_size, mode, seed
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self.total = sum(self.sizes)
        self._cached: tuple[int, torch.Tensor] | None = None
        if self.total < batch_size:
            raise ValueError(f"{self.total} training images are fewer than one batch of {batch_size}")

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per epoch; the remainder is dropped."""
        return self.total // self.batch_size  # drop_last, as the original

    def order(self, epoch: int) -> torch.Tensor:
        """Indices into the concatenated datasets for one epoch: (steps_per_epoch * batch_size,)."""
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, self._draw(epoch))
        return self._cached[1]

    def _draw(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        n = self.steps_per_epoch * self.batch_size
        if self.mode == "uniform":
            return torch.randperm(self.total, generator=g)[:n]
        which = torch.randint(0, len(self.sizes), (n,), generator=g)
        sizes = torch.tensor(self.sizes)[which]
        within = (torch.rand(n, generator=g, dtype=torch.float64) * sizes).long()
        return torch.tensor(self.offsets)[which] + within

    def positions(self, step: int, *, rank: int = 0, world: int = 1, accum: int = 1) -> list[list[int]]:
        """Positions in the epoch's order of the micro-batches that process `rank` trains on at `step`.

        Returns:
            `accum` lists of batch_size / (world x accum) positions each; index `order(epoch)` with them.

        Raises:
            ValueError: when the batch does not split evenly into `world` x `accum` micro-batches.
        """
        per = self.batch_size // (world * accum)
        if per * world * accum != self.batch_size:
            raise ValueError(f"batch {self.batch_size} does not split into {world} processes x {accum} accumulations")
        start = step * self.batch_size + rank * accum * per
        return [list(range(start + k * per, start + (k + 1) * per)) for k in range(accum)]
