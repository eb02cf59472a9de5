#!/usr/bin/env python3
"""Ablations of gamma-lite's recipe: short runs that each drop one ingredient, scored on the unseen photos.

    python scripts/ablate_default_model.py --corpus build/gamma-lite/corpus --items build/eval512/items.csv
    python scripts/ablate_default_model.py ... --steps 130 --only frozen,no-rank     # some variants

Every variant is configs/gamma-lite.yaml (through scripts/build_default_model.py's `write_config`: the corpus and a
fresh EfficientNet-Lite0) with a few settings changed, trained for --steps steps (the same for all: a comparison of
equal budgets, far shorter than the shipped build) and scored by scripts/evaluate_default.py on a distorted set built
once (--items, an items.csv of an earlier evaluation: the same images for every variant) with --crops (default centre,
the fastest). The variants:

- `full`: the recipe as shipped;
- `frozen`: the backbone frozen (`backbone_lr: null`), as gamma-lite 1: only the MoAE experts and the head learn;
- `no-rank`: no ranking loss (`rank_weight: 0`, and so no on-the-fly versions), regression on the pseudo-MOS alone,
  batches still grouped;
- `no-online`: no versions distorted on the fly (`online_versions: 0`): the ranking loss sees the corpus' versions only;
- `no-untouched`: the corpus without its untouched photos (labels.csv less its `distortion` = none rows), so the top of
  the scale is never seen; each group's anchor is then its best-labelled distorted version;
- `large-sources`: the corpus without the photos whose untouched version is under 512 px on its long side (half of
  gcompris-qt-data's photos are 320 px thumbnails, stored as lossy WebP: their "untouched" version is compressed).

Output under --out: one folder per variant (its config, run and evaluation) and ablations.md, a table of the
evaluation's figures per variant (also on stdout). Whole-schedule numbers come from the shipped build, not from here.

The full recipe's run is the same for --steps steps whatever its schedule's length (the cosine schedule steps once per
epoch, and --steps stays within the first), so a copy of a longer run's checkpoint at that step is this run's `full`.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import sys
from pathlib import Path

import yaml

from gamma_iqa.cli import main as gamma_iqa

HERE = Path(__file__).resolve().parent
VARIANTS: dict[str, list[str]] = {
    "full": [],
    "frozen": ["backbone_lr=null"],
    "no-rank": ["rank_weight=0", "online_versions=0"],
    "no-online": ["online_versions=0"],
    "no-untouched": [],  # the corpus changes, not the settings
    "large-sources": [],  # the corpus changes, not the settings
}
CORPUS_VARIANTS = {"no-untouched", "large-sources"}
LARGE = 512  # px: the long side from which a source photo counts as large (gcompris' thumbnails are 320 px)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def without_untouched(corpus: Path, out: Path) -> Path:
    """A copy of the corpus' labels.csv without its untouched photos' rows (distortion `none`); returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "labels-no-untouched.csv"
    with open(corpus / "labels.csv", newline="") as f, open(path, "w", newline="") as g:
        reader = csv.DictReader(f)
        writer = csv.DictWriter(g, reader.fieldnames, lineterminator="\n")
        writer.writeheader()
        writer.writerows(r for r in reader if r["distortion"] != "none")
    return path


def large_sources(corpus: Path, out: Path, side: int = LARGE) -> Path:
    """A copy of the corpus' labels.csv with only the photos whose untouched version is `side` px or more across."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    path = out / "labels-large-sources.csv"
    sizes: dict[str, int] = {}
    with open(corpus / "labels.csv", newline="") as f, open(path, "w", newline="") as g:
        reader = csv.DictReader(f)
        writer = csv.DictWriter(g, reader.fieldnames, lineterminator="\n")
        writer.writeheader()
        for r in reader:
            if r["reference"] not in sizes:
                with Image.open(corpus / r["reference"]) as image:  # the header alone: no decoding
                    sizes[r["reference"]] = max(image.size)
            if sizes[r["reference"]] >= side:
                writer.writerow(r)
    return path


def run_variant(name: str, args: argparse.Namespace, build) -> dict:
    """Train variant `name` for --steps steps and evaluate it; returns the evaluated model's result row."""
    folder = Path(args.out) / name
    config = build.write_config(Path(args.recipe), Path(args.corpus), folder, [f"max_steps={args.steps}",
                                *VARIANTS[name], *args.set])  # fmt: skip
    if name in CORPUS_VARIANTS:
        values = yaml.safe_load(config.read_text())
        labels = (without_untouched if name == "no-untouched" else large_sources)(Path(args.corpus), folder)
        values["datasets"][0]["csv"] = str(labels.resolve())
        values["datasets"][0]["name"] = f"gcompris-{name}"  # a split file of its own beside the corpus
        config.write_text(yaml.safe_dump(values, sort_keys=False))
    if not (folder / "run" / "last").is_dir():
        rc = gamma_iqa(["train", "--config", str(config)])
        if rc:
            raise SystemExit(f"{name}: training failed ({rc})")
    evaluate = _script("evaluate_default")
    rows = evaluate.main(["--items", args.items, "--model", str(folder / "run" / "last"), "--crops", args.crops,
                          "--no-peers", "--out", str(folder / "eval")])  # fmt: skip
    return {"variant": name, **rows[0]}


def markdown(rows: list[dict], steps: int) -> str:
    """The ablation table: one row per variant."""
    fams = list(rows[0]["families"])
    lines = [f"| variant ({steps} steps) | within-photo SRCC | {' | '.join(fams)} | untouched best | SRCC across |",
             "|---|---|" + "---|" * len(fams) + "---|---|"]  # fmt: skip
    for r in rows:
        cells = [f"{r['severity_srcc']:.3f}", *(f"{r['families'][f]:.3f}" for f in fams),
                 f"{100 * r['untouched_best']:.0f}%", f"{r['srcc']:.3f}"]  # fmt: skip
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run the variants in turn, write ablations.md."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--corpus", required=True, help="the corpus folder (scripts/build_corpus.py)")
    p.add_argument("--items", required=True, help="items.csv of a scripts/evaluate_default.py run: the test images")
    p.add_argument("--out", default="build/ablations", help="one folder per variant, and ablations.md")
    p.add_argument("--recipe", default=str(HERE.parent / "configs" / "gamma-lite.yaml"), help="the recipe varied")
    p.add_argument("--steps", type=int, default=130, help="training steps of every variant")
    p.add_argument("--crops", default="center", help="evaluation crops: N, center or none")
    p.add_argument("--only", help="comma-separated variants (default: all of " + ", ".join(VARIANTS) + "; the script's "
                   "docstring says what each changes)")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a training setting (gamma-iqa train's config keys) for every variant")  # fmt: skip
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    build = _script("build_default_model")
    rows = [run_variant(name, args, build) for name in names]
    table = markdown(rows, args.steps)
    out = Path(args.out)
    (out / "ablations.md").write_text(table)
    (out / "ablations.json").write_text(json.dumps(rows, indent=1))
    sys.stdout.write(table)


if __name__ == "__main__":
    main()
