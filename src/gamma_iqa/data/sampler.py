"""Joint-training sampler: which sample each process trains on at each step.

The order is a pure function of (seed, epoch, position). That makes runs resumable mid-epoch and identical for any
number of processes.

`uniform` is the original's: the datasets' training splits concatenated and shuffled uniformly each epoch (drop_last),
so large datasets dominate (AVA is about half of all samples). `balanced` draws each sample's dataset uniformly, then an
image of that dataset, so every dataset is seen equally often; the epoch keeps the same number of samples.
`grouped` builds every batch from batch_size / k groups (such as the source photos of a distorted corpus), k samples of
each: the groups of a batch are distinct and drawn uniformly, each group's k samples distinct where it has k (else
every sample of it, some twice); the batch holds the groups one after another, k consecutive positions each, so that a
micro-batch of a multiple of k positions splits no group. Each photo is thus seen equally often whatever its number of
versions, and the epoch keeps the same number of samples. With `anchors` (one score per image), each group's draw
starts with its best-scored image (the untouched photo of a distorted corpus) and holds k - 1 others drawn as above, so
that every group in a batch can be compared with its top.
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

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        batch_size: int,
        mode: str = "uniform",
        seed: int = 123,
        groups: Sequence[int] | None = None,
        group_size: int = 1,
        anchors: Sequence[float] | None = None,
    ) -> None:
        """Plan the epochs of a joint training run.

        Args:
            sizes: the number of training images of each dataset, in the order the datasets are concatenated.
            batch_size: the effective (global) batch, in samples.
            mode: "uniform" (shuffle all images together, as the original), "balanced" (each dataset equally often)
                or "grouped" (batches of `group_size` samples of each of batch_size / group_size groups).
            seed: the run's seed; each epoch's order is drawn from (seed, epoch).
            groups: for "grouped", the group id of every image of the concatenated datasets (sum(sizes) ints).
            group_size: for "grouped", the samples k of each group in a batch; batch_size must be a multiple.
            anchors: for "grouped", a score per image (sum(sizes) floats, such as its target): each group's draw then
                holds its best-scored image first (the first of equals). None: the k are drawn alike.

        Raises:
            ValueError: for an unknown mode, an empty dataset, fewer images in all than one batch, or for "grouped":
                no or the wrong number of `groups` or `anchors`, a `batch_size` that is not a multiple of
                `group_size`, or fewer groups than a batch needs.
        """
        if mode not in ("uniform", "balanced", "grouped"):
            raise ValueError(f"sampler must be 'uniform', 'balanced' or 'grouped', got {mode!r}")
        if not sizes or min(sizes) < 1:
            raise ValueError(f"every training set needs at least one image, got sizes {list(sizes)}")
        self.sizes, self.batch_size, self.mode, self.seed = list(sizes), batch_size, mode, seed
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self.total = sum(self.sizes)
        self._cached: tuple[int, torch.Tensor] | None = None
        if self.total < batch_size:
            raise ValueError(f"{self.total} training images are fewer than one batch of {batch_size}")
        self.group_size = group_size
        self.members: list[torch.Tensor] = []
        if mode == "grouped":
            self.members = self._group_members(groups)
            if anchors is not None:
                if len(anchors) != self.total:
                    raise ValueError(f"`anchors` needs one score per training image ({self.total}), got {len(anchors)}")
                scores = torch.tensor(anchors, dtype=torch.float64)
                # each group's members with its best-scored image moved first: (anchor, the rest...)
                self.members = [m[torch.argsort(-scores[m], stable=True)] for m in self.members]
        self.anchored = mode == "grouped" and anchors is not None

    def _group_members(self, groups: Sequence[int] | None) -> list[torch.Tensor]:
        """The indices of each group's images, groups in order of their first image.

        Raises:
            ValueError: see `__init__`.
        """
        k = self.group_size
        if groups is None or len(groups) != self.total:
            raise ValueError(f"sampler grouped needs one group id per training image ({self.total})")
        if k < 1 or self.batch_size % k:
            raise ValueError(f"`batch_size` {self.batch_size} must be a multiple of `group_size` {k}")
        index: dict[int, list[int]] = {}
        for i, group in enumerate(groups):
            index.setdefault(int(group), []).append(i)
        if len(index) < self.batch_size // k:
            raise ValueError(
                f"{len(index)} groups are fewer than the {self.batch_size // k} a batch of {self.batch_size} "
                f"holds at `group_size` {k}"
            )
        return [torch.tensor(v) for v in index.values()]

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
        if self.mode == "grouped":
            return self._draw_grouped(g)
        which = torch.randint(0, len(self.sizes), (n,), generator=g)
        sizes = torch.tensor(self.sizes)[which]
        within = (torch.rand(n, generator=g, dtype=torch.float64) * sizes).long()
        return torch.tensor(self.offsets)[which] + within

    def _draw_grouped(self, g: torch.Generator) -> torch.Tensor:
        """Per batch: batch_size / k distinct groups, uniformly, then k of each group's images (see the module)."""
        k, per_batch = self.group_size, self.batch_size // self.group_size
        picks = []
        for _ in range(self.steps_per_epoch):
            for group in torch.randperm(len(self.members), generator=g)[:per_batch].tolist():
                members = self.members[group]
                if self.anchored and len(members) > 1:  # the anchor (first), then k - 1 of the others
                    others = 1 + torch.randperm(len(members) - 1, generator=g)
                    chosen = torch.cat([torch.zeros(1, dtype=torch.long), others])
                else:
                    chosen = torch.randperm(len(members), generator=g)
                picks.append(members[chosen.repeat(-(-k // len(members)))[:k]])  # a group under k repeats its images
        return torch.cat(picks)

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
