"""Command line: `gamma-iqa score|eval|convert|list`. Data goes to stdout, messages to stderr.

Exit status: 0 all good, 1 some inputs failed, 2 usage errors (bad arguments, unusable model or checkpoint).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch.distributed as dist

from .data.inputs import drop_partial_line, expand_paths, read_done, read_manifest, skip_done
from .data.transforms import parse_crops
from .engine.runtime import resolve_device, setup
from .engine.scoring import Scorer, ScoreRow
from .models import (
    DEFAULT_MODEL,
    CheckpointError,
    convert_original,
    create_model,
    list_models,
    model_spec,
    save_checkpoint,
    trained_weights,
)
from .models.scenes import describe_scene, list_scenes
from .models.tokenizer import find_vocab
from .outputs.report import write_html

__all__ = ["main"]


class UsageError(Exception):
    pass


def as_flags(message: str) -> str:
    """A library message, which names parameters in backticks (`batch_size`), in the command line's terms."""
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: "--" + m.group(1).replace("_", "-"), message)


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "models":
        for name in list_models():
            print(f"{name}\t{model_spec(name).description}")
    elif args.what == "datasets":
        _list_datasets()
    else:
        for name in list_scenes():
            print(f"{name}\t{describe_scene(name)}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    model = convert_original(args.input, variant=args.variant)
    try:
        model.vocab_path = str(find_vocab(args.bpe))
    except FileNotFoundError as e:
        if args.bpe is not None:
            raise UsageError(f"--bpe {args.bpe}: not found") from None
        print(f"warning: {e}; the converted model will need it to score", file=sys.stderr)
    out = save_checkpoint(model, args.output)
    print(f"converted {args.input} ({args.variant}) -> {out}", file=sys.stderr)
    return 0


class _Sink:
    """Writes rows as they come (csv, jsonl) or at the end (json), to stdout or a file (appending on --resume)."""

    def __init__(self, fmt: str, output: str | None, resume: bool) -> None:
        self.fmt, self.rows = fmt, []
        if output and resume and os.path.exists(output):
            drop_partial_line(output)
        append = bool(output) and resume and os.path.exists(output) and os.path.getsize(output) > 0
        self.stream = open(output, "a" if append else "w", newline="") if output else sys.stdout  # noqa: SIM115
        self.close_stream = bool(output)
        self.writer = csv.DictWriter(self.stream, fieldnames=list(ScoreRow.FIELDS), lineterminator="\n")
        if fmt == "csv" and not append:
            self.writer.writeheader()

    def write(self, row: ScoreRow) -> None:
        if self.fmt == "csv":
            self.writer.writerow({k: ("" if v is None else v) for k, v in row.as_dict().items()})
        elif self.fmt == "jsonl":
            self.stream.write(json.dumps(row.as_dict()) + "\n")
        else:
            self.rows.append(row.as_dict())
            return
        self.stream.flush()  # a finished score is on disk before the next one starts

    def close(self) -> None:
        if self.fmt == "json":
            json.dump(self.rows, self.stream, indent=1)
            self.stream.write("\n")
        if self.close_stream:
            self.stream.close()


def _cmd_score(args: argparse.Namespace) -> int:
    if not args.paths and not args.manifest:
        raise UsageError("give image paths, folders or globs, or --manifest FILE")
    if args.resume and not args.output:
        raise UsageError("--resume needs --output FILE")
    if args.resume and args.format == "json":
        raise UsageError("--resume works with --format csv or jsonl (a JSON array cannot be appended to)")
    try:
        crops = parse_crops(args.crops)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.model is None:
        if trained_weights(DEFAULT_MODEL) is None:
            raise UsageError(
                f"no --model given and the default {DEFAULT_MODEL} has no trained weights in this install: build them "
                "with `python scripts/build_default_model.py`, or pass --model NAME_OR_CHECKPOINT"
            )
        args.model = DEFAULT_MODEL
    rank, world, device = setup(args.device)
    model = create_model(args.model).to(device)
    if args.bpe:
        model.vocab_path = args.bpe
    model.prompt_key(args.scene)  # an unknown scene is a usage error before any work
    entries = expand_paths(args.paths, args.scene)
    if args.manifest:
        entries += read_manifest(args.manifest, args.scene)
    if args.resume:
        entries = skip_done(entries, read_done(args.output, args.format))
    scorer = Scorer(
        model,
        crops=crops,
        seed=args.seed,
        batch_size=args.batch_size,
        workers=args.workers,
        dtype=args.dtype,
        thumbnails=bool(args.html),
        progress=True,
        distributed=True,
    )
    sink = _Sink(args.format, args.output, args.resume) if rank == 0 else None
    kept, failed = [], False  # rows are kept only for the HTML page: a million-image run streams
    try:
        for row in scorer.run(entries):
            sink.write(row)
            if args.html:
                kept.append(row)
            if row.error:
                failed = True
                print(f"error: {row.path}: {row.error}", file=sys.stderr)
    finally:
        if sink is not None:
            sink.close()
    if args.html and rank == 0:
        write_html(kept, args.html, model=args.model, score_range=model.score_range)
    if world > 1:
        flag = [failed]
        dist.broadcast_object_list(flag, src=0)
        failed = flag[0]
        dist.destroy_process_group()
    return 1 if failed else 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .engine.train import TrainingError, train
    from .engine.trainconfig import load_config

    cfg = load_config(args.config, args.set)
    if args.out:
        cfg = dataclasses.replace(cfg, out=args.out)
    try:
        out = train(cfg, resume=args.resume)
    except TrainingError as e:
        print(f"gamma-iqa train: error: {e}", file=sys.stderr)
        return 1
    print(f"gamma-iqa train: done; run folder {out}", file=sys.stderr)
    return 0


def _default_workers() -> int:
    return min(4, max(0, (os.cpu_count() or 1) - 1))


def _list_datasets() -> None:
    from .data.datasets import FOLDER_CSV, get_dataset, list_datasets

    for name in list_datasets():
        if name == FOLDER_CSV:
            print(f"{name}\tyour own images and CSV: --csv FILE --mos-range LO HI --scene S [--lower-better]")
            continue
        d = get_dataset(name)
        order = "lower is better" if d.lower_better else "higher is better"
        print(
            f"{name}\t{d.scene}\t{d.num_images} images\tMOS [{d.mos_range[0]:g}, {d.mos_range[1]:g}], {order}"
            f"\t{d.split} split\tfolder {' or '.join(d.folders)}"
        )


def _eval_datasets(args: argparse.Namespace) -> list:
    from .data.datasets import FOLDER_CSV, folder_csv_dataset, get_dataset

    specs = []
    for name in (n.strip() for n in args.dataset.split(",") if n.strip()):
        if name.lower() != FOLDER_CSV:
            specs.append(get_dataset(name))
        elif args.csv is None or args.mos_range is None or args.scene is None:
            raise UsageError("--dataset folder+csv needs --csv FILE, --mos-range LO HI and --scene S")
        else:
            specs.append(
                folder_csv_dataset(
                    args.csv, mos_range=tuple(args.mos_range), scene=args.scene, lower_better=args.lower_better
                )
            )
    if not specs:
        raise UsageError("--dataset names no dataset (see `gamma-iqa list datasets`)")
    return specs


def _cmd_eval(args: argparse.Namespace) -> int:
    from .engine.evaluate import evaluate
    from .outputs.results import format_markdown, plot_predictions, save_predictions

    try:
        crops = parse_crops(args.crops)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.batch_size < 1 or args.workers < 0:
        raise UsageError("--batch-size must be at least 1 and --workers at least 0")
    specs = _eval_datasets(args)
    model = create_model(args.model).to(resolve_device(args.device))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # shown below as one line each, not as Python's two-line warnings
        try:
            results = evaluate(
                model,
                specs,
                args.data_root,
                split=args.split,
                crops=crops,
                seed=args.seed,
                batch_size=args.batch_size,
                workers=args.workers,
                progress=lambda m: print(m, file=sys.stderr),
            )
        except ImportError as e:  # an optional reader dependency (scipy, openpyxl): the message names it
            raise UsageError(str(e)) from None
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.format == "md":
        sys.stdout.write(format_markdown(results, model.config.name))
    else:
        json.dump([r.as_dict() for r in results], sys.stdout, indent=1)
        sys.stdout.write("\n")
    if args.save_predictions:
        save_predictions(results, args.save_predictions)
    if args.plot:
        Path(args.plot).mkdir(parents=True, exist_ok=True)
        for r in results:
            plot_predictions(r, Path(args.plot) / f"{r.dataset.replace('+', '-')}.png")
    for r in results:
        for image, why in r.errors:
            print(f"error: {r.dataset}: {image}: {why}", file=sys.stderr)
    return 1 if any(r.errors for r in results) else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gamma-iqa", description="Gamma image quality and aesthetics assessment")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="score images (files, folders, globs, or a manifest)")
    s.add_argument("paths", nargs="*", help="image files, folders (recursive) or glob patterns")
    s.add_argument("--manifest", help="CSV (path,scene columns) or JSONL file of images with their scenes")
    s.add_argument(
        "--model", help=f"registered model name or checkpoint path (see `list models`); default: {DEFAULT_MODEL}"
    )
    s.add_argument("--scene", default=None, help="scene of the images (see `list scenes`); default: the model's")
    s.add_argument("--crops", default="10", help="N random crops (default 10), 'center' or 'none' (whole image)")
    s.add_argument("--seed", type=int, default=0, help="seed of the random crops (mixed with each image's pixels)")
    s.add_argument("--batch-size", type=int, default=8, help="images decoded per batch (scores do not depend on it)")
    s.add_argument("--workers", type=int, default=_default_workers(), help="decoding processes (default: from CPUs)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    s.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast precision")
    s.add_argument("--format", choices=("csv", "json", "jsonl"), default="csv")
    s.add_argument("--output", help="write to FILE instead of stdout")
    s.add_argument("--resume", action="store_true", help="skip the rows already in --output and append the rest")
    s.add_argument("--html", metavar="REPORT.html", help="also write a self-contained HTML page of the results")
    s.add_argument("--bpe", help="CLIP BPE vocabulary file (bpe_simple_vocab_16e6.txt.gz)")
    s.set_defaults(func=_cmd_score)

    c = sub.add_parser("convert", help="convert an original release checkpoint {'params': ...} to our format")
    c.add_argument("input", help="original .pth")
    c.add_argument("output", help="output folder")
    c.add_argument("--variant", choices=("plain", "sdp"), default="plain", help="plain (generic prompts) or sdp")
    c.add_argument("--bpe", help="CLIP BPE vocabulary to copy into the folder (default: found in open_clip / clip)")
    c.set_defaults(func=_cmd_convert)

    e = sub.add_parser("eval", help="evaluate a model on datasets as the paper does (SRCC, PLCC, KRCC)")
    e.add_argument("--model", required=True, help="registered model name or checkpoint path")
    e.add_argument("--dataset", required=True, help="comma-separated dataset names (see `list datasets`)")
    e.add_argument("--data-root", required=True, help="folder holding one folder per dataset (see README)")
    e.add_argument("--split", type=int, default=1, help="which split's test part (default 1, as the paper)")
    e.add_argument("--crops", default="10", help="N random crops per image (default 10), 'center' or 'none'")
    e.add_argument("--seed", type=int, default=0, help="seed of the random crops (mixed with each image's pixels)")
    e.add_argument("--batch-size", type=int, default=8, help="images per forward pass (their crops together)")
    e.add_argument("--workers", type=int, default=_default_workers(), help="decoding processes (default: from CPUs)")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    e.add_argument("--format", choices=("json", "md"), default="json", help="md: a table beside the paper's numbers")
    e.add_argument("--save-predictions", metavar="FILE.csv", help="write dataset,image,mos,mos_norm,prediction")
    e.add_argument("--plot", metavar="DIR", help="write a predicted-vs-MOS scatter PNG per dataset")
    e.add_argument("--csv", help="folder+csv: the label CSV (columns image, mos; optional split)")
    e.add_argument("--mos-range", type=float, nargs=2, metavar=("LO", "HI"), help="folder+csv: the MOS scale")
    e.add_argument("--scene", help="folder+csv: the images' scene (see `list scenes`)")
    e.add_argument("--lower-better", action="store_true", help="folder+csv: lower MOS is better (DMOS)")
    e.set_defaults(func=_cmd_eval)

    t = sub.add_parser("train", help="train or fine-tune (the published recipe in configs/*.yaml)")
    t.add_argument("--config", help="YAML file of training settings (configs/gamma.yaml, ...)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting (repeatable)")
    t.add_argument("--out", help="run folder (default: the config's `out`)")
    t.add_argument("--resume", action="store_true", help="continue the run in the run folder from its last checkpoint")
    t.set_defaults(func=_cmd_train)

    ls = sub.add_parser("list", help="list models, scenes or datasets")
    ls.add_argument("what", choices=("models", "scenes", "datasets"))
    ls.set_defaults(func=_cmd_list)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"gamma-iqa {args.command}: error: {as_flags(str(e))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
