#!/usr/bin/env python3
"""Build the shipped default model `gamma-lite`: corpus, training with `gamma-iqa train`, fp16 package data.

Run it from the repository root where gamma-iqa is installed (editable, or with PYTHONPATH=src):

    python scripts/build_default_model.py                          # all: apt-get download gcompris-qt-data, corpus/
    python scripts/build_default_model.py --corpus corpus/         # reuse a corpus written by scripts/build_corpus.py
    python scripts/build_default_model.py --deb gcompris-qt-data_3.1-2_all.deb --smoke --out /tmp/smoke \\
        --export /tmp/smoke/gamma-lite                             # a smoke run: a few photos and steps, a minute

Steps:
1. the corpus: `scripts/build_corpus.py --out CORPUS` (all photos at up to 1024 px, the untouched photo and 8 of the 25
   types x 5 levels each, labels at a 512 px view), unless --corpus names one;
2. the run's config: configs/gamma-lite.yaml with the corpus, the installed EfficientNet-Lite0 file as backbone (a
   fresh start, never the previously shipped weights) and --set overrides, written to OUT/gamma-lite.yaml;
3. training: `gamma-iqa train --config OUT/gamma-lite.yaml` (the command line itself), run folder OUT/run; an
   interrupted build goes on from its last checkpoint when run again with the same arguments (`train --resume`);
4. export: the best checkpoint (the last when no evaluation ran) in fp16 storage to the package data folder
   (src/gamma_iqa/weights/gamma-lite/ by default; --export elsewhere), refused above 20 MB; its size is printed.

Time on 2 CPU cores: see docs/gamma-lite.md (the shipped build's corpus and training times).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

import torch
import yaml

from gamma_iqa.cli import main as gamma_iqa
from gamma_iqa.models.checkpoint import WEIGHTS_FILE, load_checkpoint, save_checkpoint
from gamma_iqa.models.effnet import efficientnet_lite_path
from gamma_iqa.models.factory import DEFAULT_MODEL
from gamma_iqa.paths import shipped_weights

HERE = Path(__file__).resolve().parent
RECIPE = HERE.parent / "configs" / "gamma-lite.yaml"
MAX_BYTES = 20_000_000  # the budget for the shipped file
# A smoke run: enough to pass through every step, nothing worth shipping.
SMOKE_CORPUS = ["--photos", "3", "--types", "jpeg,white_noise,gaussian_blur", "--levels", "2", "--val-fraction", "0.34"]
SMOKE_TRAIN = ["max_steps=2", "batch_size=4", "group_size=2", "epochs=1", "eval_epochs=[]", "eval_crops=1", "workers=0"]


def _build_corpus_module():
    spec = importlib.util.spec_from_file_location("build_corpus", HERE / "build_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # worker processes unpickle build_corpus.build_photo by this name
    spec.loader.exec_module(module)
    return module


def corpus(args: argparse.Namespace) -> Path:
    """The corpus folder: the one given, or a new one built by scripts/build_corpus.py."""
    if args.corpus:
        folder = Path(args.corpus)
        if not (folder / "labels.csv").is_file():
            raise SystemExit(f"--corpus {folder}: no labels.csv (build it with scripts/build_corpus.py)")
        return folder
    folder = Path(args.out) / "corpus"
    argv = ["--out", str(folder), "--workers", str(args.workers), "--photos", str(args.photos)]
    if args.deb:
        argv += ["--deb", args.deb]
    _build_corpus_module().main(argv + (SMOKE_CORPUS if args.smoke else []))
    return folder


def write_config(recipe: Path, corpus_dir: Path, out: Path, overrides: list[str]) -> Path:
    """The run's config: the recipe with the corpus, a fresh backbone, the run folder and `overrides` (key=value)."""
    values = yaml.safe_load(recipe.read_text())
    corpus_dir = corpus_dir.resolve()
    (dataset,) = values["datasets"]  # the recipe trains on the one corpus
    values["datasets"] = [{**dataset, "csv": str(corpus_dir / "labels.csv"), "root": str(corpus_dir)}]
    values["backbone"] = str(efficientnet_lite_path())
    values["out"] = str((out / "run").resolve())
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        values[key.strip()] = yaml.safe_load(raw)
    path = out / "gamma-lite.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def export(run: Path, dest: Path, max_bytes: int = MAX_BYTES) -> tuple[Path, int]:
    """Write the run's best checkpoint (else its last) to `dest` in fp16 storage; returns (source, bytes).

    Written beside `dest` first and swapped in, so a refused or failed export leaves the shipped weights as they were.
    """
    source = next((run / n for n in ("best", "last") if (run / n / WEIGHTS_FILE).is_file()), None)
    if source is None:
        raise SystemExit(f"{run}: no best/ or last/ checkpoint to export")
    model = load_checkpoint(source).half()  # loading casts back to fp32, so only storage is halved
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(model, tmp)
    size = (tmp / WEIGHTS_FILE).stat().st_size
    if size > max_bytes:
        shutil.rmtree(tmp)
        raise SystemExit(f"{source}: {size / 1e6:.1f} MB in fp16, over the {max_bytes / 1e6:g} MB budget; not exported")
    _check_close(load_checkpoint(source), load_checkpoint(tmp))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return source, size


@torch.no_grad()
def _check_close(full, half, tol: float = 0.01) -> None:
    """fp16 storage must not change scores beyond rounding (a broken export would)."""
    x = torch.rand(4, 3, full.image_size, full.image_size, generator=torch.Generator().manual_seed(0))
    diff = (full.eval()(x) - half.eval()(x)).abs().max().item()
    if diff > tol:
        raise SystemExit(f"fp16 export changed scores by {diff:.4f} (> {tol}); not exported")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--corpus", help="an existing corpus folder (labels.csv from scripts/build_corpus.py)")
    p.add_argument("--deb", help="a downloaded gcompris-qt-data .deb for the corpus (default: apt-get download)")
    p.add_argument("--out", default="build/gamma-lite", help="work folder: corpus/, gamma-lite.yaml, run/")
    p.add_argument("--recipe", default=str(RECIPE), help="the training recipe (default configs/gamma-lite.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a training setting")
    p.add_argument("--export", default=str(shipped_weights(DEFAULT_MODEL)), help="where the fp16 checkpoint goes")
    p.add_argument("--workers", type=int, default=2, help="corpus-building processes")
    p.add_argument("--photos", type=int, default=0, help="photos in the corpus, evenly spread (default 0: all)")
    p.add_argument("--smoke", action="store_true", help="a tiny corpus and 2 training steps: checks the pipeline")
    args = p.parse_args(argv)
    out = Path(args.out)
    overrides = (SMOKE_TRAIN if args.smoke else []) + args.set
    config = write_config(Path(args.recipe), corpus(args), out, overrides)
    resume = ["--resume"] if (out / "run" / "last" / "train_state.pt").is_file() else []  # an interrupted build
    rc = gamma_iqa(["train", "--config", str(config), *resume])
    if rc:
        raise SystemExit(rc)
    source, size = export(out / "run", Path(args.export))
    print(f"exported {source} -> {args.export} ({size / 1e6:.1f} MB, fp16 storage)", file=sys.stderr)


if __name__ == "__main__":
    main()
