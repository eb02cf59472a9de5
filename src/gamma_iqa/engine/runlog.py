"""Run records: a metrics CSV, and TensorBoard event files too when TensorBoard is installed."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

__all__ = ["MetricsLog"]

FIELDS = ("step", "epoch", "kind", "name", "value")


class MetricsLog:
    """Appends (step, epoch, kind, name, value) rows to `metrics.csv`; kind `train` (loss, lr) or `eval` (srcc...)."""

    def __init__(self, folder: Path, *, enabled: bool = True) -> None:
        """Open (append to) `folder`/metrics.csv, writing the header when the file is new.

        Args:
            folder: The run folder; TensorBoard events go to its `tensorboard` subfolder.
            enabled: False makes every method a no-op (the ranks of a torchrun job other than 0).
        """
        self.path = folder / "metrics.csv"
        self.enabled = enabled
        self.tb = None
        if enabled:
            new = not self.path.exists()
            self.file = self.path.open("a", newline="")
            self.writer = csv.writer(self.file, lineterminator="\n")
            if new:
                self.writer.writerow(FIELDS)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(folder / "tensorboard"))
            except ImportError:  # TensorBoard is optional
                self.tb = None

    def log(self, step: int, epoch: int, kind: str, values: Mapping[str, float]) -> None:
        """Append one row per named value and flush, so a killed run keeps every row logged before it.

        Args:
            step: The optimiser step the values belong to.
            epoch: The epoch of that step.
            kind: `train` or `eval`.
            values: Metric name -> value (e.g. loss, lr; srcc per dataset).
        """
        if not self.enabled:
            return
        for name, value in values.items():
            self.writer.writerow([step, epoch, kind, name, repr(float(value))])
            if self.tb is not None:
                self.tb.add_scalar(f"{kind}/{name}", value, step)
        self.file.flush()

    def truncate_after(self, step: int) -> None:
        """Drop rows past `step` (a resumed run redoes them), keeping the file's history consistent."""
        if not self.enabled or not self.path.exists():
            return
        self.file.close()
        with self.path.open(newline="") as f:
            rows = list(csv.reader(f))
        with self.path.open("w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerows([rows[0], *[r for r in rows[1:] if int(r[0]) <= step]])
        self.file = self.path.open("a", newline="")
        self.writer = csv.writer(self.file, lineterminator="\n")

    def read(self) -> list[dict[str, str]]:
        """Every row logged so far, as strings keyed by column name."""
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def close(self) -> None:
        """Close the CSV file and the TensorBoard writer."""
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()
