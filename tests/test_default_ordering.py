"""Issue 12's test on the shipped file: does gamma-lite order JPEG and blur versions of the sample photo right?

On examples/grace_hopper.jpg, with the shipped gamma-lite weights and 10 crops, the scores must fall as the damage
grows: original > JPEG quality 40 > 20 > 10 > 5 (PIL's encoder) and original > Gaussian blur sigma 1 > 2 > 4 pixels
(PIL's GaussianBlur, whose radius is the standard deviation). gamma-lite 1 failed this (issue 12 measured original
0.607 < JPEG 20 0.710), and gamma-lite 2 still does (second build: original 0.706 < JPEG 40 0.720 < JPEG 20 0.752;
blur 1 0.712), so the test is a strict xfail: the day a rebuilt model passes, it fails and the marker goes.
Run with `-s` to see the scores.
"""

from __future__ import annotations

import io
from itertools import pairwise
from pathlib import Path

import pytest
from PIL import Image, ImageFilter

from gamma_iqa.models import create_model, trained_weights

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grace_hopper.jpg"
JPEG_QUALITIES = (40, 20, 10, 5)
BLUR_SIGMAS = (1, 2, 4)


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    """`image` after a round trip through PIL's JPEG encoder at `quality` (1-95)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def blur(image: Image.Image, sigma: float) -> Image.Image:
    """`image` blurred by a Gaussian of standard deviation `sigma` pixels."""
    return image.filter(ImageFilter.GaussianBlur(sigma))


def chains() -> dict[str, list[tuple[str, Image.Image]]]:
    """The two orderings the issue asks for, best first: [(label, image), ...] per distortion."""
    original = Image.open(SAMPLE).convert("RGB")
    return {
        "jpeg": [("original", original)] + [(f"JPEG {q}", jpeg(original, q)) for q in JPEG_QUALITIES],
        "blur": [("original", original)] + [(f"blur {s}", blur(original, s)) for s in BLUR_SIGMAS],
    }


def test_the_versions_really_degrade():
    # Guards the fixture itself: each step changes more pixels than the last, so an ordering failure is the model's.
    import numpy as np

    for versions in chains().values():
        ref = np.asarray(versions[0][1], dtype=np.float32)
        errors = [float(np.abs(np.asarray(im, dtype=np.float32) - ref).mean()) for _, im in versions]
        assert errors[0] == 0 and errors == sorted(errors) and len(set(errors)) == len(errors)


@pytest.mark.xfail(
    strict=True, reason="gamma-lite 2 still rates JPEG 40 and 20 and blur 1 above the original (issue 12)"
)
def test_shipped_gamma_lite_orders_jpeg_and_blur_on_the_sample_photo():
    if trained_weights("gamma-lite") is None:
        pytest.skip("the shipped gamma-lite weights are not in this install")
    model = create_model("gamma-lite")
    failures = []
    for kind, versions in chains().items():
        scores = model.score([im for _, im in versions], crops=10)
        print(kind, ", ".join(f"{label} {s:.3f}" for (label, _), s in zip(versions, scores, strict=True)))
        failures += [
            f"{a} {sa:.3f} <= {b} {sb:.3f}"
            for ((a, _), sa), ((b, _), sb) in pairwise(zip(versions, scores, strict=True))
            if not sa > sb
        ]
    assert not failures, "; ".join(failures)
