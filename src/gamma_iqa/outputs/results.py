"""Results of an evaluation: predictions as CSV, a Markdown table beside the paper's Table 1, scatter plots."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from ..engine.evaluate import DatasetResult
from ..plots import plot_scatter

__all__ = ["PAPER_TABLE1", "format_markdown", "plot_predictions", "save_predictions"]

# Paper Table 1 (gamma.md §12.1), SRCC / PLCC of the mixed-trained models: plain Gamma and Gamma† (scene prompts).
PAPER_TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "live": {"Gamma": (0.957, 0.952), "Gamma†": (0.953, 0.953)},
    "csiq": {"Gamma": (0.949, 0.966), "Gamma†": (0.960, 0.968)},
    "tid2013": {"Gamma": (0.926, 0.934), "Gamma†": (0.935, 0.941)},
    "kadid10k": {"Gamma": (0.960, 0.962), "Gamma†": (0.962, 0.964)},
    "livec": {"Gamma": (0.851, 0.871), "Gamma†": (0.891, 0.914)},
    "koniq10k": {"Gamma": (0.940, 0.949), "Gamma†": (0.939, 0.950)},
    "spaq": {"Gamma": (0.923, 0.928), "Gamma†": (0.929, 0.932)},
    "gfiqa20k": {"Gamma": (0.970, 0.970), "Gamma†": (0.970, 0.970)},
    "agiqa3k": {"Gamma": (0.870, 0.910), "Gamma†": (0.887, 0.923)},
    "uwiqa": {"Gamma": (0.863, 0.878), "Gamma†": (0.873, 0.884)},
    "ava": {"Gamma": (0.740, 0.737), "Gamma†": (0.750, 0.749)},
    "aadb": {"Gamma": (0.742, 0.743), "Gamma†": (0.756, 0.755)},
}


def save_predictions(results: Sequence[DatasetResult], path: str | os.PathLike[str]) -> None:
    """One row per scored image: dataset, image, mos, mos_norm, prediction.

    `mos` is written as read from the label file and `prediction` exactly (as `gamma-iqa score` writes a score);
    `mos_norm`, computed from `mos`, to 6 significant digits (no float noise such as 0.30000000000000004).
    """
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["dataset", "image", "mos", "mos_norm", "prediction"])
        for res in results:
            for image, mos, mos_norm, pred in res.predictions:
                w.writerow([res.dataset, image, repr(mos), f"{mos_norm:.6g}", repr(pred)])


def _cell(pair: tuple[float, float] | None) -> str:
    return f"{pair[0]:.3f} / {pair[1]:.3f}" if pair else "-"


def format_markdown(results: Sequence[DatasetResult], model_name: str) -> str:
    """A Markdown table of our SRCC / PLCC / KRCC beside the paper's Table 1 numbers for Gamma and Gamma†."""
    lines = [
        f"| dataset | n | missing | SRCC ({model_name}) | PLCC | KRCC "
        "| paper Gamma SRCC / PLCC | paper Gamma† SRCC / PLCC |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        paper = PAPER_TABLE1.get(r.dataset, {})
        lines.append(
            f"| {r.dataset} | {r.n} | {r.missing} | {r.srcc:.4f} | {r.plcc:.4f} | {r.krcc:.4f} | "
            f"{_cell(paper.get('Gamma'))} | {_cell(paper.get('Gamma†'))} |"
        )
    return "\n".join(lines) + "\n"


def plot_predictions(result: DatasetResult, path: str | Path) -> None:
    """A scatter PNG of the predicted score (y) against the normalised MOS (x)."""
    title = f"{result.dataset} (n={result.n}): SRCC {result.srcc:.3f}, PLCC {result.plcc:.3f}; y: predicted score"
    plot_scatter([(p[2], p[3]) for p in result.predictions], title, path, xlabel="normalised MOS", name="images")
