"""Inputs the API would score wrongly are refused or converted as documented; views have a memory budget."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gamma_iqa
from gamma_iqa.data import transforms
from gamma_iqa.data.transforms import array_to_image, load_image, make_crops

from .conftest import score_rows


def photo(h: int = 72, w: int = 96, seed: int = 0) -> np.ndarray:
    """Random uint8 RGB pixels with a gradient: (h, w, 3)."""
    ramp = np.linspace(0, 160, w, dtype=np.float64)[None, :, None]
    noise = np.random.default_rng(seed).integers(0, 96, (h, w, 3))
    return (ramp + noise).astype(np.uint8)


@pytest.fixture(scope="module")
def model(gamma_test_model):
    return gamma_test_model


# ---- arrays and tensors --------------------------------------------------------------------------------------------
def test_integer_arrays_are_scaled_by_their_types_range(model, tmp_path):
    a = photo()
    Image.fromarray(a).save(tmp_path / "a.png")
    want = model.score(tmp_path / "a.png", crops=3)
    wide = a.astype(np.uint16) * 257  # the same picture in 16 bits
    as_tensor = torch.from_numpy(a).permute(2, 0, 1)
    assert model.score(a, crops=3) == want
    assert model.score(wide, crops=3) == want
    assert model.score(as_tensor, crops=3) == want
    assert model.score(torch.from_numpy(wide).permute(2, 0, 1), crops=3) == want
    assert model.score(torch.stack([as_tensor, as_tensor]), crops=3) == want * 2  # a uint8 batch
    dark = array_to_image(a.astype(np.uint16))  # 0..255 in 16 bits is nearly black, not the 8-bit picture
    assert float(dark.max()) <= 255 / 65535 + 1e-7


def test_greyscale_arrays_of_eight_and_sixteen_bits_score_alike(model):
    grey = photo()[..., 1]
    want = model.score(grey, crops=3)
    assert model.score(grey.astype(np.uint16) * 257, crops=3) == want  # 2-D uint16: scaled by 65535 as uint8 by 255
    assert model.score(grey[..., None], crops=3) == want  # (H, W, 1)
    assert model.score(np.repeat(grey[..., None], 3, axis=2), crops=3) == want  # grey is R = G = B


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [3, 4])
def test_channels_first_arrays_are_refused_naming_the_shape_and_the_transpose(model, dtype, channels):
    chw = np.zeros((channels, 40, 50), dtype)
    with pytest.raises(
        ValueError, match=rf"got shape \({channels}, 40, 50\).*channels-first.*array\.transpose\(1, 2, 0\)"
    ):
        model.score(chw)
    with pytest.raises(ValueError, match=r"must be .*\(H, W, 3\).*got shape \(40, 50, 2\)"):
        model.score(np.zeros((40, 50, 2), dtype))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16, np.uint32, np.bool_])
def test_integer_arrays_without_an_image_range_are_refused(model, dtype):
    good = photo()
    with pytest.raises(ValueError, match=rf"^<input 1>: a numpy image of dtype {np.dtype(dtype).name} has no defined"):
        model.score([good, good.astype(dtype)])
    with pytest.raises(ValueError, match=r"^<input 0>: a tensor image of dtype int64 has no defined range.*uint8"):
        model.score(torch.from_numpy(good.astype(np.int64)).permute(2, 0, 1))


def test_float_input_outside_unit_range_or_not_finite_is_refused_naming_it(model):
    good = photo().astype(np.float32) / 255
    for bad, what in [
        (good * 255, r"holds values in \[0, 255\], outside RGB's \[0, 1\]; 8-bit values\? divide by 255"),
        (good - 0.01, r"holds values in \[-0.01, 0.99\d*\], outside RGB's \[0, 1\]$"),
        (np.where(good > 0.5, np.nan, good).astype(np.float32), "holds NaN or infinite values"),
        (np.where(good > 0.5, np.inf, good).astype(np.float32), "holds NaN or infinite values"),
    ]:
        with pytest.raises(ValueError, match=rf"^<input 2>: a float image {what}"):
            model.score([good, good, bad], crops="center")
        with pytest.raises(ValueError, match=rf"^<input 0>: a float image {what}"):
            model.score(torch.from_numpy(bad).permute(2, 0, 1), crops="center")


def test_float_input_within_rounding_of_the_unit_range_is_clamped(model):
    good = photo().astype(np.float32) / 255
    want = model.score(good, crops=3)
    nudged = good.copy()
    nudged[good == good.max()] = 1.0005  # within UNIT_TOLERANCE: rounding, not another scale
    nudged[good == good.min()] = -0.0005
    clamped = np.clip(nudged, 0, 1)
    assert model.score(nudged, crops=3) == model.score(clamped, crops=3)
    assert model.score(good.astype(np.float64), crops=3) == want


def test_model_forward_refuses_what_it_would_score_wrongly(model):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.isfinite(model(images)).all()
        with pytest.raises(ValueError, match=r"the batch holds values in \[0\.\d+, 25\d\.?\d*\], .*divide by 255"):
            model(images * 255)
        images[1, 0, 3, 3] = float("nan")
        with pytest.raises(ValueError, match="the batch holds NaN or infinite values"):
            model(images)
        with pytest.raises(ValueError, match=r"must be float RGB in \[0, 1\], got torch.uint8"):
            model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    lite = gamma_iqa.create_model("gamma-lite", pretrained=False, image_size=64)
    with torch.no_grad(), pytest.raises(ValueError, match="the batch holds values in"):
        lite(torch.full((1, 3, 64, 64), 2.0))


# ---- files ---------------------------------------------------------------------------------------------------------
def test_float_tiffs_are_checked_not_guessed(model, tmp_path, capsys):
    grey = photo()[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(grey.astype(np.float32) / 255, "F").save(tmp_path / "unit.tif")
    nan = (grey.astype(np.float32) / 255).copy()
    nan[0, 0] = np.nan
    Image.fromarray(nan, "F").save(tmp_path / "nan.tif")
    Image.fromarray(grey.astype(np.float32), "F").save(tmp_path / "bytes.tif")  # 0..255 as floats
    assert np.array_equal(np.asarray(load_image(tmp_path / "unit.tif")), np.asarray(load_image(tmp_path / "grey.png")))
    with pytest.raises(ValueError, match=r"nan\.tif: a float \(mode F\) image holds NaN or infinite values"):
        model.score(tmp_path / "nan.tif")
    code, rows, _ = score_rows(capsys, *(str(tmp_path / n) for n in ["nan.tif", "bytes.tif", "unit.tif"]))
    assert code == 1
    assert rows[0]["error"].startswith("a float (mode F) image holds NaN or infinite values")
    assert re.match(r"a float \(mode F\) image holds values in \[\d, 25\d\], outside RGB's \[0, 1\]", rows[1]["error"])
    assert "save it as 8 or 16 bits, or scale it to [0, 1]" in rows[1]["error"]
    assert rows[2]["error"] == "" and float(rows[2]["score"]) == model.score(tmp_path / "grey.png")[0]


def test_sixteen_bit_greyscale_spans_its_types_range(tmp_path):
    dark = np.full((20, 30), 200, np.uint16)  # 200 / 65535: nearly black, though every value is under 256
    Image.fromarray(dark).save(tmp_path / "dark.png")
    assert Image.open(tmp_path / "dark.png").mode == "I;16"
    assert np.asarray(load_image(tmp_path / "dark.png")).max() == 1  # round(200 / 65535 * 255)


def test_a_pil_image_honours_its_exif_orientation_as_its_file_does(model, tmp_path):
    im = Image.fromarray(photo(60, 100))
    exif = im.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    from_path = model.score(tmp_path / "rot.jpg", crops=3)
    with Image.open(tmp_path / "rot.jpg") as opened:
        assert opened.size == (100, 60)
        assert model.score(opened, crops=3) == from_path
        assert opened.size == (100, 60)  # the caller's image is left as it was
    upright = load_image(tmp_path / "rot.jpg")
    assert upright.size == (60, 100) and model.score(upright, crops=3) == from_path
    assert model.score(Image.open(tmp_path / "rot.jpg").transpose(Image.Transpose.ROTATE_270), crops=3) != from_path


def test_folders_and_patterns_are_refused_in_a_list_and_expanded_alone(model, tmp_path):
    (tmp_path / "folder").mkdir()
    for name in ["a.png", "folder/x.png", "folder/y.png", "b.png"]:
        Image.fromarray(photo(seed=len(name))).save(tmp_path / name)
    a, b, folder = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "folder"
    with pytest.raises(ValueError, match=rf"^{folder}: a folder or glob pattern in a list of inputs .* pass it alone"):
        model.score([a, folder, b], crops="center")
    with pytest.raises(ValueError, match=r"folder/\*\.png: a folder or glob pattern in a list"):
        model.score([str(a), str(folder / "*.png")], crops="center")
    with pytest.raises(ValueError, match="a folder or glob pattern in a list"):
        model.score([str(folder)], crops="center")
    alone = model.score(folder, crops="center")  # sorted paths, as the command lists them
    assert alone == model.score([folder / "x.png", folder / "y.png"], crops="center")
    assert model.score(str(folder / "*.png"), crops="center") == alone
    starred = tmp_path / "star*.png"  # a file whose name looks like a pattern is a file
    Image.fromarray(photo()).save(starred)
    assert len(model.score([a, starred], crops="center")) == 2


# ---- memory --------------------------------------------------------------------------------------------------------
def test_a_thin_image_gets_an_error_row_naming_the_view_budget(capsys, tmp_path, monkeypatch):
    Image.fromarray(photo(1, 8000)).save(tmp_path / "strip.png")  # enlarged to 512000 x 64 for gamma-test's crops
    Image.fromarray(photo()).save(tmp_path / "good.png")
    enlarged = []
    real = torch.nn.functional.interpolate
    monkeypatch.setattr(
        torch.nn.functional, "interpolate", lambda x, **kw: enlarged.append(kw["size"]) or real(x, **kw)
    )
    code, rows, err = score_rows(capsys, str(tmp_path / "strip.png"), str(tmp_path / "good.png"))
    assert code == 1 and enlarged == []  # refused before any enlargement
    assert rows[0]["error"] == (
        "image too thin: 8000 x 1 pixels would be enlarged to 512000 x 64 = 32,768,000 pixels to reach the 64-pixel "
        "crop side, over the budget of 16,777,216 pixels per view (pad or crop it to a less extreme aspect ratio, or "
        "raise gamma_iqa.data.transforms.MAX_VIEW_PIXELS)"
    )
    assert rows[1]["error"] == "" and rows[1]["score"] != ""
    lines = err.splitlines()  # the image's one error line and the run's summary: no traceback, no warning
    assert len(lines) == 2 and lines[0].startswith(f"error: {tmp_path / 'strip.png'}: image too thin: 8000 x 1")
    assert lines[1] == "gamma-iqa score: 1 of 2 images failed"
    monkeypatch.setattr(transforms, "MAX_VIEW_PIXELS", 32_768_000)  # lifted: it is enlarged (then cut)
    assert make_crops(Image.fromarray(photo(1, 8000)), "center", 64).crops.shape == (1, 3, 64, 64)


def test_crops_none_is_bounded_by_the_view_budget(capsys, tmp_path, monkeypatch):
    Image.fromarray(photo(100, 120)).save(tmp_path / "big.png")
    Image.fromarray(photo(40, 50)).save(tmp_path / "small.png")
    monkeypatch.setattr(transforms, "MAX_VIEW_PIXELS", 10_000)
    code, rows, _ = score_rows(capsys, "--crops", "none", str(tmp_path / "big.png"), str(tmp_path / "small.png"))
    assert code == 1
    assert rows[0]["error"] == (
        "image too large to score whole (crops 'none'): 120 x 100 = 12,000 pixels, over the budget of 10,000 pixels "
        "per view (use random or 'center' crops, or raise gamma_iqa.data.transforms.MAX_VIEW_PIXELS)"
    )
    assert rows[1]["error"] == "" and rows[1]["crops"] == "none (upscaled)"  # 50 x 40 enlarged to 80 x 64
    code, rows, _ = score_rows(capsys, "--crops", "center", str(tmp_path / "big.png"))
    assert code == 0 and rows[0]["score"] != ""  # cut crops are not whole views
    with pytest.raises(ValueError, match=r"<input 0>: image too large to score whole"):
        gamma_iqa.create_model("gamma-test").score(torch.rand(3, 100, 120), crops="none")


def test_pils_bomb_warning_is_not_printed_within_our_budget(tmp_path, capsys, monkeypatch):
    # TIFF's decoder repeats PIL's check; between PIL's limit and twice it PIL only warns, and our budget applies.
    Image.fromarray(photo(20, 30)).save(tmp_path / "scan.tif")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(np.asarray(load_image(tmp_path / "scan.tif")), photo(20, 30))
    code, rows, err = score_rows(capsys, str(tmp_path / "scan.tif"))
    assert code == 0 and rows[0]["score"] != "" and "DecompressionBomb" not in err
    assert Path(rows[0]["path"]).name == "scan.tif"
