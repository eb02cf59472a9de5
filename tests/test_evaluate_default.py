"""scripts/evaluate_default.py: the distorted set, the two figures, the table, and peers that skip cleanly."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
ev = load_script("evaluate_default")


def photo(path: Path, seed: int, size: tuple[int, int] = (260, 200)) -> Path:
    """A photo-like image: smooth gradients plus texture."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([xx, yy, 0.5 * (xx + yy)], axis=-1) + 0.15 * rng.standard_normal((h, w, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8)).save(path)
    return path


def items_of(rows: list[tuple[str, str, float, float]]) -> list:
    return [ev.Item(p, d, s, f"{p}-{d}-{s}.png", m) for p, d, s, m in rows]


# ---- figures -----------------------------------------------------------------------------------------------------
GRID = items_of(
    [
        (p, d, s, 0.9 - s + off)
        for p, off in (("a", 0.0), ("b", 0.05))
        for d in ("blur", "noise")
        for s in (0.1, 0.5, 0.9)
    ]
)


def test_a_perfect_scorer_gets_one_on_both_figures_and_lower_better_is_negated():
    mos = [it.mos for it in GRID]
    f = ev.figures(GRID, mos, lower_better=False)
    assert f["srcc"] == pytest.approx(1.0) and f["severity_srcc"] == pytest.approx(1.0)
    assert (f["n"], f["failed"], f["groups"]) == (12, 0, 4)
    g = ev.figures(GRID, [-m for m in mos], lower_better=True)  # e.g. BRISQUE: lower is better
    assert g["srcc"] == pytest.approx(1.0) and g["severity_srcc"] == pytest.approx(1.0)
    assert ev.figures(GRID, [-m for m in mos], lower_better=False)["srcc"] == pytest.approx(-1.0)


def test_within_image_figure_ignores_differences_between_photos():
    # Orders severity right inside every group but ranks photo b above all of a: perfect within, worse overall.
    scores = [(10 if it.photo == "b" else 0) - it.strength + (0.01 if it.distortion == "noise" else 0) for it in GRID]
    f = ev.figures(GRID, scores, lower_better=False)
    assert f["severity_srcc"] == pytest.approx(1.0) and f["srcc"] < 0.9


def test_constant_groups_count_as_zero_and_failures_are_left_out():
    scores = [0.5 if it.distortion == "blur" else 1 - it.strength for it in GRID]
    assert ev.figures(GRID, scores, lower_better=False)["severity_srcc"] == pytest.approx(0.5)  # 2 groups 0, 2 groups 1
    scores = [1 - it.strength for it in GRID]
    scores[0] = float("nan")
    f = ev.figures(GRID, scores, lower_better=False)
    assert (f["n"], f["failed"], f["groups"]) == (11, 1, 4) and f["severity_srcc"] == pytest.approx(1.0)


# ---- the figures, with the untouched photo as strength 0 -------------------------------------------------
# Per photo: a scorer that orders gaussian_blur and white_noise right, rates JPEG quality 0.1 above the untouched
# photo (as gamma-lite 1 does), ties pixelate's untouched photo with strength 0.1, and orders denoise backwards.
KNOWN = {
    "gaussian_blur": (0.9, 0.7, 0.5, 0.3),
    "jpeg": (0.5, 0.7, 0.4, 0.2),
    "white_noise": (0.8, 0.6, 0.4, 0.1),
    "pixelate": (0.9, 0.9, 0.5, 0.1),
    "denoise": (0.1, 0.2, 0.3, 0.4),
}
STRENGTHS = (0.0, 0.1, 0.5, 0.9)
UNTOUCHED = items_of(
    [
        (p, d, s, 1.0 if s == 0 else 0.9 - s / 2 - (0.1 if p == "b" else 0))
        for p in "ab"
        for d in KNOWN
        for s in STRENGTHS
    ]
)
UNTOUCHED = [
    ev.Item(it.photo, it.distortion, it.strength, f"{it.photo}.png" if it.strength == 0 else it.path, it.mos)
    for it in UNTOUCHED
]  # the untouched photo is one file in all its photo's groups
KNOWN_SCORES = [KNOWN[it.distortion][STRENGTHS.index(it.strength)] for it in UNTOUCHED]


def test_families_name_real_types_once():
    named = [t for types in ev.FAMILY_TYPES.values() for t in types]
    assert set(named) <= set(ev.DISTORTIONS) and len(named) == len(set(named))
    assert list(ev.FAMILY_TYPES) == ["blur", "JPEG", "noise", "pixelation"] and "denoise" not in named


def test_figures_with_known_orderings():
    f = ev.figures(UNTOUCHED, KNOWN_SCORES, lower_better=False)
    pixelate = 4.5 / np.sqrt(4.5 * 5)  # ranks (3.5, 3.5, 2, 1) against (4, 3, 2, 1)
    assert f["types"] == pytest.approx(
        {"gaussian_blur": 1.0, "jpeg": 0.8, "white_noise": 1.0, "pixelate": pixelate, "denoise": -1.0}
    )  # jpeg: d = (1, -1, 0, 0), 1 - 6 * 2 / (4 * 15)
    fam = f["families"]  # absent types (lens blur, jpeg2000, ...) just have no groups
    assert fam == pytest.approx({"blur": 1.0, "JPEG": 0.8, "noise": 1.0, "pixelation": pixelate})
    assert f["severity_srcc"] == pytest.approx((1 + 0.8 + 1 + pixelate - 1) / 5)
    assert f["untouched_best"] == pytest.approx(2 / 5)  # blur and noise; the tie and the JPEG peak are not best
    assert (f["n"], f["failed"], f["groups"]) == (2 * (1 + 5 * 3), 0, 10)  # the untouched file counts once
    g = ev.figures(UNTOUCHED, [-v for v in KNOWN_SCORES], lower_better=True)
    assert g["untouched_best"] == pytest.approx(0.4) and g["families"] == pytest.approx(fam)


def test_across_photos_uses_the_pseudo_mos_and_each_file_once():
    mos = [it.mos for it in UNTOUCHED]
    f = ev.figures(UNTOUCHED, mos, lower_better=False)
    assert f["srcc"] == pytest.approx(1.0) and f["plcc"] == pytest.approx(1.0) and f["untouched_best"] == 1.0
    # Moving one photo's untouched score to the bottom: 1 of the 32 distinct files is misplaced, not 5 copies of it.
    scores = [-1.0 if it.strength == 0 and it.photo == "a" else m for it, m in zip(UNTOUCHED, mos, strict=True)]
    unique = {it.path: (s, it.mos) for it, s in zip(UNTOUCHED, scores, strict=True)}
    expected = ev.srcc(*zip(*unique.values(), strict=True))
    assert ev.figures(UNTOUCHED, scores, lower_better=False)["srcc"] == pytest.approx(expected)
    assert ev.figures(UNTOUCHED, scores, lower_better=False)["untouched_best"] == pytest.approx(0.5)


def test_each_file_is_scored_once():
    seen = []
    method = ev.Method("count", False, lambda paths: seen.extend(paths) or [len(p) for p in paths])
    scores = ev.score_unique(method, [it.path for it in UNTOUCHED])
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 32
    assert scores == [len(it.path) for it in UNTOUCHED]


def row(name: str, overall: float, families: tuple, best: float, across: float) -> dict:
    fam = dict(zip(ev.FAMILY_TYPES, families, strict=True))
    return {"method": name, "severity_srcc": overall, "families": fam, "untouched_best": best, "srcc": across}


def test_checks_mark_each_target_and_the_peers():
    peers = [row("BRISQUE", 0.94, (0.9,) * 4, 0.8, 0.6), row("PIQE", 0.95, (0.9,) * 4, 0.8, 0.72)]
    good = row("new", 0.96, (0.95, 0.9, 0.93, 0.91), 0.95, 0.73)
    found = ev.checks([good, *peers, {"method": "NIQE", "note": "not run"}])
    assert [c["pass"] for c in found] == [True] * 11  # 7 targets, 2 figures x 2 peers; NIQE did not run
    assert found[0] == {"what": "within-photo SRCC vs severity, overall", "target": ">= 0.95", "value": 0.96,
                        "pass": True}  # fmt: skip
    bad = row("old", 0.95, (0.95, 0.89, 0.93, 0.91), 0.94, 0.71)
    failed = [c["what"] for c in ev.checks([bad, *peers]) if not c["pass"]]
    assert failed == [
        "within-photo SRCC, JPEG",
        "untouched photo scored best",
        "within-photo SRCC overall above PIQE",  # a tie is not above
        "SRCC across photos above PIQE",
    ]
    table = ev.checks_markdown([bad, *peers]).splitlines()
    assert table[0].startswith("| old: issue 12 target |") and len(table) == 2 + 11
    assert "| untouched photo scored best | >= 95% | 94% | FAIL |" in table
    assert ev.checks([{"method": "gamma-lite", "note": "no weights"}, *peers]) == []


def test_full_and_half_size(tmp_path):
    photos = [("x/p0", photo(tmp_path / "p0.jpg", 0, (261, 200))), ("p1", photo(tmp_path / "p1.png", 1))]
    versions = ev.scale_versions(photos, tmp_path / "scales")
    assert [(v["photo"], v["scale"], v["width"], v["height"]) for v in versions] == [
        ("x/p0", "full", 261, 200), ("x/p0", "half", 130, 100), ("p1", "full", 260, 200), ("p1", "half", 130, 100)
    ]  # fmt: skip
    assert [Image.open(v["path"]).size for v in versions] == [(261, 200), (130, 100), (260, 200), (130, 100)]
    width = ev.Method("w", False, lambda paths: [float(Image.open(p).width) for p in paths])
    rows = ev.score_scales(versions, [width, ev.niqe()])
    assert [r["w"] for r in rows] == [261.0, 130.0, 260.0, 130.0] and "NIQE" not in rows[0]
    table = ev.scales_markdown(rows, [width, ev.niqe()]).splitlines()
    assert table[0] == "| photo | full size | w full | w half |"
    assert table[2] == "| x/p0 | 261x200 | 261.000 | 130.000 |"


# ---- the run -----------------------------------------------------------------------------------------------------
def fake(name: str, lower_better: bool = False) -> "ev.Method":
    """A scorer that reads the image: mean absolute deviation from mid-grey, a rough contrast proxy."""

    def score(paths):
        values = [float(np.abs(np.asarray(Image.open(p), dtype=np.float32) / 255 - 0.5).mean()) for p in paths]
        return [-v for v in values] if lower_better else values

    return ev.Method(name, lower_better, score, "fake")


def test_distorted_set_and_table_end_to_end(tmp_path):
    photos = [("src/p0", photo(tmp_path / "in" / "p0.png", 0))]
    kinds, strengths = ("white_noise", "gaussian_blur"), (0.1, 0.5, 0.9)
    assert len(ev.build_items(photos, tmp_path / "old", types=kinds, strengths=strengths, untouched=False)) == 6
    items = ev.build_items(photos, tmp_path / "img", types=kinds, strengths=strengths)
    assert len(items) == 8 and all(Path(it.path).is_file() for it in items)
    # each group starts with the untouched photo at strength 0, one file, at the top of the pseudo-MOS
    assert [it.strength for it in items] == [0, 0.1, 0.5, 0.9] * 2 and items[0].path == items[4].path
    assert items[0].mos == items[4].mos == 1.0 and all(it.mos < 1 for it in items if it.strength)
    assert {(it.photo, it.distortion) for it in items} == {
        (p, d) for p, _ in photos for d in ("white_noise", "gaussian_blur")
    }
    assert all(0 <= it.mos <= 1 for it in items)
    for p, _ in photos:  # the pseudo-MOS falls with strength in each group
        mos = [it.mos for it in items if it.photo == p and it.distortion == "white_noise"]
        assert mos == sorted(mos, reverse=True)
    assert Image.open(items[0].path).size == (260, 200)  # below --max-side: kept as is
    rows = ev.evaluate(items, [fake("mine"), fake("peer", lower_better=True), ev.niqe()], log=lambda m: None)
    assert [r["method"] for r in rows] == ["mine", "peer", "NIQE"]
    assert rows[0]["srcc"] == pytest.approx(rows[1]["srcc"]) and rows[0]["n"] == 7 and rows[0]["seconds"] >= 0
    assert "srcc" not in rows[2] and "not run" in rows[2]["note"]
    table = ev.markdown(rows).splitlines()
    assert len(table) == 5 and table[2].startswith("| mine | ") and table[4].startswith("| NIQE | not run |")
    assert all(line.count("|") == table[0].count("|") for line in table)  # every row fills every column
    json.dumps(rows)  # the JSON output


def test_photos_from_a_folder(tmp_path):
    photo(tmp_path / "a" / "x.jpg", 0)
    photo(tmp_path / "b.png", 1)
    (tmp_path / "notes.txt").write_text("not a photo")
    assert [pid for pid, _ in ev.folder_photos(tmp_path)] == ["a/x", "b"]


# ---- peers -------------------------------------------------------------------------------------------------------
def test_peers_are_skipped_with_a_note_when_their_package_is_missing(monkeypatch):
    monkeypatch.setattr(ev.importlib.util, "find_spec", lambda name: None)
    b, p = ev.brisque(Path("/nowhere")), ev.piqe()
    assert b.score is None and "opencv-contrib-python-headless" in b.note and b.lower_better
    assert p.score is None and "pypiqe" in p.note and p.lower_better
    rows = ev.evaluate(GRID, [b, p], log=lambda m: None)
    assert all("srcc" not in r for r in rows)


def test_brisque_needs_its_model_files(tmp_path):
    pytest.importorskip("cv2", reason="the BRISQUE peer needs OpenCV (pip install opencv-contrib-python-headless)")
    b = ev.brisque(tmp_path)
    assert b.score is None and ("opencv-data" in b.note or "contrib" in b.note)


def test_gamma_lite_without_trained_weights_is_skipped(no_trained_weights):
    m = ev.gamma_lite("gamma-lite", "center", 4)
    assert m.score is None and "scripts/build_default_model.py" in m.note


# ---- reusing a distorted set -------------------------------------------------------------------------------------
def test_items_round_trip_and_type_sets(tmp_path):
    items = items_of([("a", "none", 0.0, 1.0), ("a", "jpeg", 0.1, 0.83125), ("b/c", "white_noise", 0.9, 0.2)])
    ev.write_items(items, tmp_path / "items.csv")
    assert ev.read_items(tmp_path / "items.csv") == items  # a second model is scored on the very same set
    families = ev._types("families")
    assert families == [t for group in ev.FAMILY_TYPES.values() for t in group] and len(families) == 10
    assert len(ev._types("all")) == 25 and ev._types("jpeg,pixelate") == ["jpeg", "pixelate"]


def test_items_option_scores_the_given_set_only(tmp_path, monkeypatch):
    items = items_of([("a", "jpeg", 0.0, 1.0), ("a", "jpeg", 0.5, 0.7), ("a", "jpeg", 0.9, 0.4)])  # untouched: 0
    ev.write_items(items, tmp_path / "in.csv")
    monkeypatch.setattr(ev, "debian_photos", lambda cache: pytest.fail("no photos are fetched with --items"))
    seen = []

    def fake(paths):
        seen.extend(paths)
        return [1.0 - 0.1 * i for i in range(len(paths))]

    monkeypatch.setattr(ev, "gamma_lite", lambda *a: ev.Method("fake", False, fake))
    rows = ev.main(["--items", str(tmp_path / "in.csv"), "--no-peers", "--out", str(tmp_path / "out")])
    assert [r["method"] for r in rows] == ["fake"] and seen == [it.path for it in items]
    assert rows[0]["severity_srcc"] == pytest.approx(1.0) and rows[0]["untouched_best"] == 1.0
    assert ev.read_items(tmp_path / "out" / "items.csv") == items


def test_reencoded_copies_and_their_figures(tmp_path):
    paths = [photo(tmp_path / f"p{k}.png", k) for k in range(2)]
    items = [ev.Item(f"p{k}", d, s, str(paths[k]) if s == 0 else "x.png", 1.0 - s)
             for k in range(2) for d in ("jpeg", "white_noise") for s in (0.0, 0.5)]  # fmt: skip
    rows = ev.reencoded_versions(items, tmp_path / "re")
    names = ["untouched", "jpeg95", "jpeg80", "jpeg60", "webp80", "webp50"]
    assert [(r["photo"], r["version"]) for r in rows] == [(f"p{k}", n) for k in range(2) for n in names]
    assert rows[0]["path"] == str(paths[0]) and all(Image.open(r["path"]).size == (260, 200) for r in rows)
    # lossy copies of a noisy photo lose detail: a sharper copy is never identical to the photo
    assert not np.array_equal(np.asarray(Image.open(rows[1]["path"])), np.asarray(Image.open(paths[0])))
    order = {n: i for i, n in enumerate(names)}  # a scorer that knows the truth on photo p0, and ranks p1 upside down
    truth = ev.Method("t", False, lambda ps: [(-1 if "p1" in p else 1) * -order[_version(p)] for p in ps])
    lower = ev.Method("l", True, lambda ps: [order[_version(p)] for p in ps])  # lower is better: negated first
    figs = ev.reencoded_figures(rows, [truth, lower, ev.niqe()])
    assert [f["method"] for f in figs] == ["t", "l"]
    assert figs[0]["untouched_best"] == 0.5 and figs[1]["untouched_best"] == 1.0
    assert figs[1]["means"] == {n: -float(order[n]) for n in names} and figs[0]["means"]["jpeg60"] == 0.0
    table = ev.reencoded_markdown(figs).splitlines()
    assert table[0].startswith("| method | untouched | jpeg95") and table[3].endswith("| 100% of 2 |")


def _version(path: str) -> str:
    name = Path(path).stem
    return name.rsplit("__", 1)[1] if "__" in name else "untouched"
