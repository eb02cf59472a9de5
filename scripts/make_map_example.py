#!/usr/bin/env python3
"""Draw the README's quality-map picture, docs/quality-map.png, with the shipped gamma-lite.

    python scripts/make_map_example.py                 # docs/quality-map.png
    python scripts/make_map_example.py --out map.png --stride 56

The sample photo examples/grace_hopper.jpg with its left half blurred (PIL's GaussianBlur, radius 3), mapped as
`gamma-iqa score --map` maps it (224-pixel windows every --stride pixels), drawn by gamma_iqa.outputs.maps.render_map,
then shrunk to --width pixels and stored with a 128-colour palette so the checked-in file stays small (about 50 KB).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image, ImageFilter

import gamma_iqa
from gamma_iqa.outputs.maps import render_map

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "quality-map.png")
    p.add_argument("--stride", type=int, default=112)
    p.add_argument("--width", type=int, default=420, help="width of the stored picture in pixels")
    args = p.parse_args()
    photo = Image.open(ROOT / "examples" / "grace_hopper.jpg").convert("RGB")
    half = photo.width // 2
    photo.paste(photo.crop((0, 0, half, photo.height)).filter(ImageFilter.GaussianBlur(3)), (0, 0))
    model = gamma_iqa.create_model("gamma-lite")
    qmap = gamma_iqa.quality_map(model, photo, stride=args.stride)
    with tempfile.TemporaryDirectory() as tmp:
        drawn = render_map(qmap, photo, Path(tmp) / "map.png", title="grace_hopper.jpg, left half blurred")
        with Image.open(drawn) as full:
            size = (args.width, round(full.height * args.width / full.width))
            small = full.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    small.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size / 1000:.0f} KB; window scores:\n{qmap.scores.round(3)}")


if __name__ == "__main__":
    main()
