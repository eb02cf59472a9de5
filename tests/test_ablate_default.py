"""scripts/ablate_default_model.py: the variants' settings, the corpus without its untouched photos, the table."""

import csv

import pytest

from gamma_iqa.engine.trainconfig import load_config

from .conftest import load_script

ab = load_script("ablate_default_model")


def test_variants_are_valid_recipes_that_change_their_ingredient():
    full = load_config(ab.HERE.parent / "configs" / "gamma-lite.yaml", [])
    assert full.online_versions and full.rank_weight and full.backbone_lr  # what the variants take away
    changed = {}
    for name, settings in ab.VARIANTS.items():
        cfg = load_config(ab.HERE.parent / "configs" / "gamma-lite.yaml", settings)  # a valid config, or ValueError
        changed[name] = {k for k in vars(full) if getattr(cfg, k) != getattr(full, k)}
    assert changed == {
        "full": set(),
        "frozen": {"backbone_lr"},
        "no-rank": {"rank_weight", "online_versions"},  # on-the-fly versions only serve the ranking loss
        "no-online": {"online_versions"},
        "no-untouched": set(),  # the corpus changes, not the settings
        "large-sources": set(),
    }


def write_labels(folder, rows: list[dict]) -> None:
    """`rows` as the corpus' labels.csv in `folder`."""
    with open(folder / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def test_corpus_without_untouched_photos_keeps_every_other_row(tmp_path):
    rows = [
        {"image": "reference/p.png", "mos": "1.0", "split": "train", "distortion": "none", "photo": "p"},
        {"image": "images/p__jpeg__1.png", "mos": "0.8", "split": "train", "distortion": "jpeg", "photo": "p"},
        {"image": "images/q__blur__1.png", "mos": "0.6", "split": "test", "distortion": "blur", "photo": "q"},
    ]
    write_labels(tmp_path, rows)
    path = ab.without_untouched(tmp_path, tmp_path / "out")
    assert list(csv.DictReader(path.open())) == rows[1:]


def test_table_has_a_row_per_variant():
    row = {"severity_srcc": 0.9512, "families": {"blur": 0.97, "JPEG": 0.9}, "untouched_best": 0.954, "srcc": 0.71}
    table = ab.markdown([{"variant": "full", **row}, {"variant": "frozen", **row, "srcc": 0.5}], 130)
    lines = table.splitlines()
    assert lines[0].startswith("| variant (130 steps) | within-photo SRCC | blur | JPEG |") and len(lines) == 4
    assert lines[2] == "| full | 0.951 | 0.970 | 0.900 | 95% | 0.710 |" and lines[3].endswith("| 0.500 |")


def test_unknown_variants_are_refused(tmp_path):
    known = "full, frozen, no-rank, no-online, no-untouched, large-sources"
    with pytest.raises(SystemExit, match=f"unknown variants nope; known: {known}"):
        ab.main(["--corpus", str(tmp_path), "--items", "x.csv", "--only", "nope"])


def test_large_sources_keep_the_photos_of_512_px_and_more(tmp_path):
    from PIL import Image

    (tmp_path / "reference").mkdir()
    Image.new("RGB", (320, 213)).save(tmp_path / "reference" / "small.png")
    Image.new("RGB", (400, 512)).save(tmp_path / "reference" / "big.png")
    rows = [
        {"image": f"images/{p}__jpeg__{k}.png", "reference": f"reference/{p}.png", "distortion": "jpeg", "photo": p}
        for p in ("small", "big")
        for k in (1, 2)
    ]
    write_labels(tmp_path, rows)
    path = ab.large_sources(tmp_path, tmp_path / "out")
    assert list(csv.DictReader(path.open())) == rows[2:]
