"""The per-image pixel budget of load_image: checked on the header before decoding, PIL's global limit left alone."""

import csv
import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from gamma_iqa.cli import main
from gamma_iqa.data import transforms
from gamma_iqa.data.transforms import load_image

PIL_DEFAULT_LIMIT = Image.MAX_IMAGE_PIXELS  # as PIL ships it, read before any test runs


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Random uint8 RGB pixels: (h, w, 3)."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose header (IHDR) claims `width` x `height`: its pixel data could never decode to that size."""
    buf = io.BytesIO()
    Image.fromarray(rgb(1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")  # the chunk's 4-byte length precedes its type; the CRC covers type + body
    body = struct.pack(">II", width, height) + bytes(data[ihdr + 12 : ihdr + 17])
    data[ihdr + 4 : ihdr + 17] = body
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(b"IHDR" + body))
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail any decode: proves that a refusal came from the header alone."""

    def load(self):
        raise AssertionError(f"decoded a {self.size} image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


def test_an_image_over_the_budget_is_refused_from_its_header(tmp_path, no_decoding):
    path = png_claiming(tmp_path / "huge.png", 100_000, 50_000)
    with pytest.raises(Image.DecompressionBombError, match=r"\(5000000000 pixels\)"):  # PIL reads the forged size
        Image.open(path)
    with pytest.raises(ValueError) as info:
        load_image(path)
    message = str(info.value)
    assert "100000 x 50000 = 5,000,000,000 pixels" in message
    assert "budget of 1,073,741,824 pixels" in message
    assert "MAX_PIXELS" in message and "max_pixels" in message


def test_the_budget_is_a_parameter_and_the_module_constant_at_call_time(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    Image.fromarray(rgb(20, 30)).save(path)  # 30 x 20 = 600 pixels
    with pytest.raises(ValueError, match=r"30 x 20 = 600 pixels, over the budget of 599 pixels"):
        load_image(path, max_pixels=599)
    assert np.array_equal(np.asarray(load_image(path, max_pixels=600)), rgb(20, 30))
    monkeypatch.setattr(transforms, "MAX_PIXELS", 599)
    with pytest.raises(ValueError, match="budget of 599 pixels"):
        load_image(path)


def test_pil_global_limit_is_neither_changed_nor_applied(tmp_path, monkeypatch):
    path = tmp_path / "photo.png"
    Image.fromarray(rgb(20, 30)).save(path)
    load_image(path)
    assert Image.MAX_IMAGE_PIXELS == PIL_DEFAULT_LIMIT
    # An application that sets PIL's limit below an image within our budget: PIL would refuse to open it ...
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(Image.DecompressionBombError), Image.open(path):
        pass
    # ... load_image decodes it, the same pixels, with neither PIL's error nor its warning, and leaves the setting.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert np.array_equal(np.asarray(load_image(path)), rgb(20, 30))
    assert Image.MAX_IMAGE_PIXELS == 100


def test_scoring_gives_an_over_budget_image_an_error_row_and_goes_on(tmp_path, capsys):
    good = tmp_path / "good.png"
    Image.fromarray(rgb(40, 50)).save(good)
    huge = png_claiming(tmp_path / "huge.png", 100_000, 50_000)
    code = main(["score", "--model", "gamma-test", "--crops", "center", "--workers", "0", str(huge), str(good)])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert code == 1
    assert [Path(r["path"]).name for r in rows] == ["huge.png", "good.png"]
    assert rows[0]["score"] == "" and rows[0]["error"].startswith("image too large: 100000 x 50000 = 5,000,000,000")
    assert rows[1]["error"] == "" and 0.0 <= float(rows[1]["score"]) <= 1.5


def test_a_decoder_repeating_pils_check_gets_an_error_row_naming_pils_setting(tmp_path, capsys, monkeypatch):
    # TIFF's decoder checks PIL's process-wide limit again while decoding; that limit is the application's to set.
    Image.fromarray(rgb(20, 30)).save(tmp_path / "scan.tif")
    Image.fromarray(rgb(20, 30)).save(tmp_path / "photo.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    code = main(
        ["score", "--model", "gamma-test", "--workers", "0", str(tmp_path / "scan.tif"), str(tmp_path / "photo.png")]
    )
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert code == 1
    assert rows[0]["error"].startswith("image too large for PIL's Image.MAX_IMAGE_PIXELS (Image size (600 pixels)")
    assert rows[1]["error"] == "" and rows[1]["score"] != ""
