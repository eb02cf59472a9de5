#!/usr/bin/env python3
"""Build gamma-lite's training corpus from the real photographs in Debian's `gcompris-qt-data`, reproducibly.

Run it where gamma-iqa is installed (it uses gamma_iqa.corpus) and dpkg is at hand:

    python scripts/build_corpus.py --out corpus/                  # fetches the .deb with `apt-get download`
    python scripts/build_corpus.py --out tiny/ --deb gcompris-qt-data_3.1-2_all.deb --photos 4 --types 3 --levels 2

Steps (gamma_iqa.corpus.gcompris.build_corpus): unpack the .deb (`dpkg -x`) into a temporary folder; read the Qt
resource bundles (`.rcc`) under usr/share/gcompris-qt/rcc/ with our own reader (corpus.rcc); keep the real photographs
(`is_photo`), and add scikit-image's four photographs (--extra, gamma_iqa.corpus.extra); scale each so that its long
side is at most --max-side (1024 by default: the training step rescales each source at random before cropping, so its
224 crops see the photo at many scales); enter each untouched, labelled at the top of the scale; distort each with
--types-per-photo of the types (8 of the 25 by default, drawn per photo) at every level, and label each distorted image
with the pseudo-MOS of its full-reference fidelity to the pristine photo, both seen at a long side of --label-side
(512 by default: a photo is judged whole on a screen, and the metrics' cost grows with pixels) from the images as
stored (corpus.pipeline.distort_and_label, as scripts/evaluate_default.py, which labels at its own size).
Written under --out:

- `reference/<photo>.png`: the pristine photos as used;
- `images/<photo>__<type>__<level>.png` (or .jpg with --format jpg);
- `labels.csv`: image,mos,split,reference,distortion,level,strength,photo,fr_mos and each metric's raw value; `mos` in
  [0, 1], higher is better, non-increasing in level within a (photo, distortion) group; `photo` is the source photo's
  id, so that training can tell versions of one photo apart; the untouched photo is the row with distortion `none`,
  level 0, strength 0, image its reference file and `mos` exactly 1.0, the most the label function gives
  (gamma_iqa.corpus.fidelity); `fr_mos` is the pseudo-MOS before the monotone fit; `split` is train or test by photo
  (all of a photo's images on one side), --val-fraction of the photos in test. It is a `folder+csv` dataset: root --out,
  csv labels.csv, mos_range [0, 1], scene natural;
- `rows/<photo>.json`: each finished photo's label rows; a rerun with the same arguments reuses them, so an
  interrupted build goes on where it stopped;
- `licences.csv`: per photo, its path in the package, SHA-256 of the source file, licence and copyright holder, from
  usr/share/doc/gcompris-qt-data/copyright (Debian's machine-readable format; the last matching stanza wins), or for
  scikit-image's photos from its `skimage.data` docstrings.

The photo rule (`is_photo`) and the licence lookup are described in gamma_iqa.corpus.gcompris.

Build time: see docs/gamma-lite.md (the shipped build's). Use --workers and the restartable rows/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

try:  # the `corpus` extra; without it, one line that says what to install (also for --help)
    from gamma_iqa.corpus.extra import scikit_image_photos
    from gamma_iqa.corpus.gcompris import PACKAGE, build_corpus
    from gamma_iqa.data.distortions import DISTORTIONS
except ImportError as e:
    raise SystemExit(f"{Path(__file__).name}: {e}") from None


def _types(spec: str) -> list[str]:
    """'all', a count (the first N of the 25, in family order) or a comma-separated list of names."""
    if spec == "all":
        return list(DISTORTIONS)
    if spec.isdigit():
        return list(DISTORTIONS)[: int(spec)]
    names = spec.split(",")
    unknown = [n for n in names if n not in DISTORTIONS]
    if unknown:
        raise SystemExit(f"unknown distortion types {', '.join(unknown)}; known: {', '.join(DISTORTIONS)}")
    return names


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and build the corpus (gamma_iqa.corpus.gcompris.build_corpus)."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--deb", help=f"a downloaded {PACKAGE} .deb (default: apt-get download it)")
    p.add_argument("--photos", type=int, default=0, help="use N photos evenly spread over them by path (default: all)")
    p.add_argument("--types", default="all", help="'all', a count, or comma-separated distortion names")
    p.add_argument("--levels", type=int, default=5, help="levels per type (strengths 1/L .. 1)")
    p.add_argument("--max-side", type=int, default=1024, help="photos are scaled down to this long side")
    p.add_argument("--min-side", type=int, default=160, help="photos with a shorter short side are skipped")
    p.add_argument("--format", choices=("png", "jpg"), default="png", help="distorted image files (jpg: quality 95)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="fraction of photos in the test split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--types-per-photo",
        type=int,
        default=8,
        help="distort each photo by this many of the types, drawn per photo (default 8; 0: all)",
    )
    p.add_argument(
        "--label-side",
        type=int,
        default=512,
        help="label versions as seen at this long side (default 512; 0: as stored)",
    )
    p.add_argument("--always-types", default="jpeg,pixelate",
                   help="types every photo gets beside its drawn ones: comma-separated, or 'none' "
                        "(default jpeg,pixelate: the commonest damage, one type each in its family)")  # fmt: skip
    p.add_argument("--extra", choices=("skimage", "none"), default="skimage",
                   help="photos from other sources too: scikit-image's four (default), or none")  # fmt: skip
    args = p.parse_args(argv)
    try:
        build_corpus(
            Path(args.out), types=_types(args.types), deb=Path(args.deb) if args.deb else None, photos=args.photos,
            levels=args.levels, max_side=args.max_side, min_side=args.min_side, fmt=args.format,
            val_fraction=args.val_fraction, seed=args.seed, workers=args.workers,
            types_per_photo=args.types_per_photo, label_side=args.label_side or None,
            extra=scikit_image_photos() if args.extra == "skimage" else (),
            always_types=[] if args.always_types == "none" else _types(args.always_types),
        )  # fmt: skip
    except ValueError as e:  # no photo in the package
        raise SystemExit(str(e)) from e


if __name__ == "__main__":
    main()
