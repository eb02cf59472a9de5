"""The label function: non-increasing in strength for every distortion type, the untouched photo at the top.

Real labels (corpus.pipeline.distort_and_label, storage round trip included) of the sample photo and two photo-like
images are checked with corpus.fidelity.label_violations; the check itself must catch a planted misorder.
"""

from pathlib import Path

import numpy as np
import pytest

from gamma_iqa.corpus.fidelity import TOP, Violation, fidelity, label_violations, monotone, pseudo_mos
from gamma_iqa.corpus.pipeline import distort_and_label, load_photo, store, untouched
from gamma_iqa.data.distortions import DISTORTIONS

from .test_corpus import sample

STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)
SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grace_hopper.jpg"


def pink(h: int, w: int, seed: int) -> np.ndarray:
    """1/f noise per channel, the power spectrum of natural photos, (H, W, 3) float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None] ** 2)
    f[0, 0] = 1
    planes = [np.real(np.fft.ifft2((rng.standard_normal((h, w)) + 1j * rng.standard_normal((h, w))) / f))
              for _ in range(3)]  # fmt: skip
    return np.stack([(p - p.min()) / (p.max() - p.min()) for p in planes], -1).astype(np.float32)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """(photo, type, strength, label, raw pseudo-MOS) of every version of three photos, untouched rows included."""
    folder = tmp_path_factory.mktemp("labels")
    photos = {
        "grace_hopper": load_photo(SAMPLE, 96),
        "gradients": sample(72, 96, 1),
        "pink": pink(72, 96, 2),
    }
    rows = []
    for index, (name, image) in enumerate(photos.items()):
        ref = store(image, folder / f"{name}.png")
        top = untouched(ref, folder / f"{name}.png")
        rows.append((name, top.distortion, top.strength, top.mos, top.fr_mos))
        versions = distort_and_label(
            ref,
            list(DISTORTIONS),
            STRENGTHS,
            lambda kind, k, s, n=name: folder / f"{n}_{kind}_{k}.png",
            seed=0,
            index=index,
        )
        rows += [(name, v.distortion, v.strength, v.mos, v.fr_mos) for v in versions]  # fmt: skip
    return rows


def test_labels_are_monotone_in_strength_for_every_type_and_below_the_untouched_photo(labelled):
    assert len(labelled) == 3 * (1 + 25 * 5)
    assert [r[3] for r in labelled if r[2] == 0] == [TOP] * 3
    assert label_violations([r[:4] for r in labelled]) == []
    # the raw pseudo-MOS may break the order (it did for pixelate on an aligned synthetic image); the fitted label
    # moves only where it does, and never by more than the break
    raw = label_violations([(p, k, s, m) for p, k, s, _, m in labelled])
    assert all(v.stronger > 0 and v.weaker > 0 for v in raw)  # never against the untouched photo
    moved = {(p, k) for p, k, s, label, m in labelled if label != m}
    assert moved <= {(v.photo, v.distortion) for v in raw}
    assert max((abs(label - m) for *_, label, m in labelled), default=0) <= max((v.excess for v in raw), default=0)


def test_the_untouched_photo_is_the_top_of_the_scale():
    x = sample(48, 64, 0)
    assert pseudo_mos(fidelity(x, x)) == pytest.approx(TOP, abs=1e-9) and TOP == 1.0  # VIF of identical: 1 - 1e-11
    worst = {name: 0.0 for name in ("ms_ssim", "vif")} | {"gmsd": 1.0, "psnr": 0.0, "delta_e": 100.0}
    best = {"ms_ssim": 1.0, "vif": 1.3, "gmsd": 0.0, "psnr": 99.0, "delta_e": 0.0}  # VIF above 1: contrast gain
    assert pseudo_mos(worst) == 0.0 and pseudo_mos(best) == TOP  # TOP is the most the label function gives


def test_the_check_catches_a_planted_misorder():
    rows = [("a", "none", 0.0, TOP)] + [("a", "jpeg", s, 0.9 - s / 2) for s in STRENGTHS]
    rows += [("b", "blur", 0.2, 0.7), ("b", "blur", 0.4, 0.6)]  # b has no untouched row: TOP is assumed
    assert label_violations(rows) == []
    planted = [r if r[2] != 0.8 or r[0] != "a" else ("a", "jpeg", 0.8, 0.65) for r in rows]  # 0.65 > 0.6 at 0.6
    assert label_violations(planted) == [Violation("a", "jpeg", 0.6, 0.8, pytest.approx(0.05))]
    at_top = [*rows, ("b", "noise", 0.2, TOP)]  # a distorted version tying the untouched photo
    assert label_violations(at_top) == [Violation("b", "noise", 0.0, 0.2, 0.0)]


def test_monotone_fit_pools_only_misordered_runs():
    ordered = [0.9, 0.7, 0.6, 0.5, 0.2]
    assert monotone(STRENGTHS, ordered) == ordered
    fitted = monotone(STRENGTHS, [0.9, 0.7, 0.5, 0.6, 0.2])  # 0.6 and 0.8 misordered: both become their mean
    assert fitted == pytest.approx([0.9, 0.7, 0.55, 0.55, 0.2])
    assert label_violations([("p", "t", s, v) for s, v in zip(STRENGTHS, fitted, strict=True)]) == []
    shuffled = monotone([1.0, 0.2, 0.6], [0.5, 0.4, 0.45])  # in any order: the mildest is the largest after the fit
    assert shuffled == pytest.approx([0.45, 0.45, 0.45])
