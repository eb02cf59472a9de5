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


# ---- the run -----------------------------------------------------------------------------------------------------
def fake(name: str, lower_better: bool = False) -> "ev.Method":
    """A scorer that reads the image: mean absolute deviation from mid-grey, a rough contrast proxy."""

    def score(paths):
        values = [float(np.abs(np.asarray(Image.open(p), dtype=np.float32) / 255 - 0.5).mean()) for p in paths]
        return [-v for v in values] if lower_better else values

    return ev.Method(name, lower_better, score, "fake")


def test_distorted_set_and_table_end_to_end(tmp_path):
    photos = [("src/p0", photo(tmp_path / "in" / "p0.png", 0))]
    items = ev.build_items(photos, tmp_path / "img", types=("white_noise", "gaussian_blur"), strengths=(0.1, 0.5, 0.9))
    assert len(items) == 6 and all(Path(it.path).is_file() for it in items)
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
    assert rows[0]["srcc"] == pytest.approx(rows[1]["srcc"]) and rows[0]["n"] == 6 and rows[0]["seconds"] >= 0
    assert "srcc" not in rows[2] and "not run" in rows[2]["note"]
    table = ev.markdown(rows).splitlines()
    assert len(table) == 5 and table[2].startswith("| mine | ") and "| NIQE | not run | not run | 0 |" in table[4]
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
    pytest.importorskip("cv2")
    b = ev.brisque(tmp_path)
    assert b.score is None and ("opencv-data" in b.note or "contrib" in b.note)


def test_gamma_lite_without_trained_weights_is_skipped(no_trained_weights):
    m = ev.gamma_lite("gamma-lite", "center", 4)
    assert m.score is None and "scripts/build_default_model.py" in m.note
