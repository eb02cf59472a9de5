"""Command line: `gamma-iqa score|convert|list`. Data goes to stdout, messages to stderr.

Exit status: 0 all good, 1 some inputs failed, 2 usage errors (bad arguments, unusable model or checkpoint).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence

from .checkpoint import CheckpointError, convert_original, save_checkpoint
from .factory import create_model, list_models, model_spec
from .scenes import describe_scene, list_scenes
from .scoring import ScoreRow, expand_inputs, score_files
from .tokenizer import find_vocab
from .transforms import parse_crops

__all__ = ["main"]


class UsageError(Exception):
    pass


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "models":
        for name in list_models():
            print(f"{name}\t{model_spec(name).description}")
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


def _write(rows: list[ScoreRow], fmt: str, stream) -> None:
    if fmt == "json":
        json.dump([r.as_dict() for r in rows], stream, indent=1)
        stream.write("\n")
        return
    if fmt == "jsonl":
        for r in rows:
            stream.write(json.dumps(r.as_dict()) + "\n")
        return
    writer = csv.DictWriter(stream, fieldnames=list(ScoreRow.FIELDS), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in r.as_dict().items()})


def _cmd_score(args: argparse.Namespace) -> int:
    try:
        crops = parse_crops(args.crops)
    except ValueError as e:
        raise UsageError(str(e)) from None
    model = create_model(args.model)
    if args.bpe:
        model.vocab_path = args.bpe
    model.prompt_key(args.scene)  # an unknown scene is a usage error before any work
    files, rows_missing = expand_inputs(args.paths)
    rows = score_files(model, files, scene=args.scene, crops=crops, seed=args.seed)
    rows = sorted(rows + rows_missing, key=lambda r: r.index)
    if args.output:
        with open(args.output, "w", newline="") as f:
            _write(rows, args.format, f)
    else:
        _write(rows, args.format, sys.stdout)
    failed = [r for r in rows if r.error]
    for r in failed:
        print(f"error: {r.path}: {r.error}", file=sys.stderr)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gamma-iqa", description="Gamma image quality and aesthetics assessment")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="score images (files, folders, globs)")
    s.add_argument("paths", nargs="+", help="image files, folders (recursive) or glob patterns")
    s.add_argument("--model", required=True, help="registered model name or checkpoint path (see `list models`)")
    s.add_argument("--scene", default=None, help="scene of the images (see `list scenes`); default: the model's")
    s.add_argument("--crops", default="10", help="N random crops (default 10), 'center' or 'none' (whole image)")
    s.add_argument("--seed", type=int, default=0, help="seed of the random crops (mixed with each image's pixels)")
    s.add_argument("--format", choices=("csv", "json", "jsonl"), default="csv")
    s.add_argument("--output", help="write to FILE instead of stdout")
    s.add_argument("--bpe", help="CLIP BPE vocabulary file (bpe_simple_vocab_16e6.txt.gz)")
    s.set_defaults(func=_cmd_score)

    c = sub.add_parser("convert", help="convert an original release checkpoint {'params': ...} to our format")
    c.add_argument("input", help="original .pth")
    c.add_argument("output", help="output folder")
    c.add_argument("--variant", choices=("plain", "sdp"), default="plain", help="plain (generic prompts) or sdp")
    c.add_argument("--bpe", help="CLIP BPE vocabulary to copy into the folder (default: found in open_clip / clip)")
    c.set_defaults(func=_cmd_convert)

    ls = sub.add_parser("list", help="list models or scenes")
    ls.add_argument("what", choices=("models", "scenes"))
    ls.set_defaults(func=_cmd_list)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"gamma-iqa {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
