"""Colours through embedded ICC profiles, standard input, every decodable format, and folders as users expect."""

import csv
import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from gamma_iqa.data.inputs import expand_paths, image_extensions, read_manifest
from gamma_iqa.data.transforms import ColourWarning, load_image, to_rgb

from .conftest import score_rows


@pytest.fixture(scope="module")
def model(gamma_test_model):
    return gamma_test_model


# ---- ICC profiles built here (version 2 matrix/TRC, as cameras embed): no profile package needed --------------------
def _s15(x: float) -> bytes:
    return struct.pack(">i", round(x * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)


def _curve(gamma: float) -> bytes:
    return b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)


def icc_profile(space: bytes, tags: dict[bytes, bytes]) -> bytes:
    """An ICC v2 display profile of colour `space` (b"RGB " or b"GRAY") with a D50 white point and `tags`."""
    text = b"test profile\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    tags = {b"desc": desc, b"wtpt": _xyz(0.9642, 1.0, 0.8249), **tags}
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags.items():
        body += bytes(-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = struct.pack(">I", offset + len(data)) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntr" + space
    header += b"XYZ " + bytes(12) + b"acsp" + bytes(28) + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + bytes(48)
    return header + struct.pack(">I", len(tags)) + table + data


# ProPhoto RGB: primaries far outside sRGB (D50 colorants), gamma 1.8
PROPHOTO = icc_profile(
    b"RGB ",
    {
        b"rXYZ": _xyz(0.7977, 0.2880, 0.0),
        b"gXYZ": _xyz(0.1352, 0.7119, 0.0),
        b"bXYZ": _xyz(0.0313, 0.0001, 0.8249),
        b"rTRC": _curve(1.8),
        b"gTRC": _curve(1.8),
        b"bTRC": _curve(1.8),
    },
)
GRAY_18 = icc_profile(b"GRAY", {b"kTRC": _curve(1.8)})
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def photo(h: int = 72, w: int = 96, seed: int = 0) -> np.ndarray:
    """Saturated random uint8 RGB pixels with a gradient: (h, w, 3)."""
    ramp = np.linspace(0, 150, w, dtype=np.float64)[None, :, None]
    noise = np.random.default_rng(seed).integers(0, 106, (h, w, 3))
    return (ramp + noise).astype(np.uint8)


def as_prophoto(pixels: np.ndarray) -> Image.Image:
    """sRGB pixels converted to ProPhoto RGB (what an editor exports): they look the same in a managed viewer."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(PROPHOTO))
    return ImageCms.profileToProfile(Image.fromarray(pixels), SRGB, source, renderingIntent=1)


# ---- colours -------------------------------------------------------------------------------------------------------
def test_an_embedded_wide_gamut_profile_is_decoded_to_srgb_in_every_path(model, tmp_path):
    srgb = photo()
    wide = as_prophoto(srgb)
    wide.save(tmp_path / "prophoto.png", icc_profile=PROPHOTO)
    wide.info.pop("icc_profile")  # ImageCms tagged it with its output profile
    wide.save(tmp_path / "ignored.png")  # the same pixels without their profile: what was scored before
    Image.fromarray(srgb).save(tmp_path / "srgb.png")
    decoded = np.asarray(load_image(tmp_path / "prophoto.png"), np.int16)
    assert np.abs(decoded - srgb).mean() < 1.0 and np.abs(decoded - srgb).max() <= 8  # 8-bit ProPhoto round trip
    assert np.abs(np.asarray(wide, np.int16) - srgb).mean() > 10  # the profile matters
    files = [tmp_path / "prophoto.png", tmp_path / "srgb.png", tmp_path / "ignored.png"]
    score = dict(zip(("prophoto", "srgb", "ignored"), model.score(files, crops="center"), strict=True))
    assert abs(score["prophoto"] - score["srgb"]) < 0.1 * abs(score["ignored"] - score["srgb"])
    with Image.open(tmp_path / "prophoto.png") as im:  # a PIL image, as the file: one file, one score
        assert model.score(im, crops="center") == pytest.approx([score["prophoto"]], abs=1e-6)
    assert (tmp_path / "prophoto.png").read_bytes()  # the training reader decodes with load_image too


def test_srgb_tagged_images_keep_their_exact_pixels(tmp_path):
    pixels = photo()
    Image.fromarray(pixels).save(tmp_path / "tagged.jpg", icc_profile=SRGB.tobytes(), quality=95)
    Image.fromarray(pixels).save(tmp_path / "plain.jpg", quality=95)
    assert np.array_equal(
        np.asarray(load_image(tmp_path / "tagged.jpg")), np.asarray(load_image(tmp_path / "plain.jpg"))
    )


def test_a_grey_profile_applies_to_greyscale_images(tmp_path):
    grey = Image.fromarray(np.arange(0, 256, 32, dtype=np.uint8)[None, :], "L")
    grey.save(tmp_path / "grey.png", icc_profile=GRAY_18)
    out = np.asarray(load_image(tmp_path / "grey.png"))
    assert out.shape == (1, 8, 3) and (out[..., 0] == out[..., 2]).all()
    assert (out[0, 1:-1, 0] > np.arange(32, 224, 32) + 5).all()  # gamma-1.8 mid-tones are lighter on sRGB's curve


def test_a_profile_that_cannot_be_applied_still_scores_and_says_so(model, tmp_path, capsys):
    pixels = photo()
    Image.fromarray(pixels).save(tmp_path / "broken.png", icc_profile=b"\0" * 16 + b"RGB " + b"not a profile" * 20)
    Image.fromarray(pixels).save(tmp_path / "grey-on-rgb.png", icc_profile=GRAY_18)  # a grey profile on colour pixels
    with pytest.warns(ColourWarning, match=r"broken\.png: embedded colour profile ignored \(not an ICC profile .+\)"):
        assert np.array_equal(np.asarray(load_image(tmp_path / "broken.png")), pixels)  # taken as sRGB
    with pytest.warns(ColourWarning, match=r"a GRAY profile on an image of mode RGB"):
        to_rgb(Image.open(tmp_path / "grey-on-rgb.png"))
    code, rows, err = score_rows(capsys, str(tmp_path / "broken.png"), str(tmp_path / "grey-on-rgb.png"))
    assert code == 0 and all(r["score"] and not r["error"] for r in rows)
    assert list(rows[0]) == ["path", "score", "scene", "crops", "error"]  # the columns are unchanged
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"warning: {tmp_path / 'broken.png'}: ")
    assert (
        lines[1] == f"warning: {tmp_path / 'grey-on-rgb.png'}: colour profile ignored (a GRAY profile on an image of "
        "mode RGB); scored as sRGB"
    )
    with pytest.warns(ColourWarning, match=r"<input 0>: embedded colour profile ignored"):
        model.score(Image.open(tmp_path / "broken.png"), crops="center")


@pytest.mark.parametrize(
    "profile",
    [
        bytes(range(256)) * 2,  # random-looking bytes, control characters in its colour space field
        b"garbage\n\x00\xff" * 10,  # line breaks and bytes that are no text
        PROPHOTO[:128] + b"\xff\n\x00\x01" + PROPHOTO[132:],  # a real header with a broken tag table
    ],
)
def test_a_garbage_profile_is_one_printable_line_naming_the_image(tmp_path, capsys, profile):
    Image.fromarray(photo()).save(tmp_path / "junk.png", icc_profile=profile)
    with pytest.warns(ColourWarning) as caught:
        load_image(tmp_path / "junk.png")
    [warning] = caught
    text = str(warning.message)
    assert text.isprintable() and text.startswith(f"{tmp_path / 'junk.png'}: embedded colour profile ignored (")
    assert text.endswith("); scored as sRGB")
    code, rows, err = score_rows(capsys, str(tmp_path / "junk.png"))
    assert code == 0 and rows[0]["score"]
    [line] = err.splitlines()
    assert line.isprintable() and line.startswith(f"warning: {tmp_path / 'junk.png'}: colour profile ignored (")


# ---- standard input ------------------------------------------------------------------------------------------------
def test_standard_input_and_pipes_are_read_as_one_image(model, tmp_path):
    Image.fromarray(photo()).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    [expected] = model.score(tmp_path / "a.png", crops="center")
    script = (
        "import sys; from gamma_iqa.cli import main; "
        "sys.exit(main(['score', '--model', 'gamma-test', '--workers', '0', '--crops', 'center'] + sys.argv[1:]))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for arg in ("-", "/dev/stdin"):
        done = subprocess.run(
            [sys.executable, "-c", script, arg], input=data, capture_output=True, env=env, timeout=300
        )
        assert done.returncode == 0, done.stderr.decode()
        [row] = list(csv.DictReader(io.StringIO(done.stdout.decode())))
        assert row["path"] == arg and float(row["score"]) == pytest.approx(expected, abs=1e-6)
    done = subprocess.run([sys.executable, "-c", script, "-"], input=b"", capture_output=True, env=env, timeout=300)
    assert done.returncode == 1 and "error: -: empty input (0 bytes)" in done.stderr.decode()


def test_standard_input_given_twice_is_refused_before_reading_it(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", None)  # reading it would fail the test: it must be refused first
    for twice in (["-", "-"], ["-", "/dev/stdin"]):
        with pytest.raises(ValueError, match=r"standard input is given 2 times .*read only once"):
            expand_paths(twice)
    code, rows, err = score_rows(capsys, "-", "-")
    assert code == 2 and rows == []
    assert (
        err
        == "gamma-iqa score: error: standard input is given 2 times (- -): it can be read only once, so give it once\n"
    )


def test_a_named_pipe_is_read_not_reported_empty(tmp_path):
    Image.fromarray(photo()).save(tmp_path / "a.png")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = subprocess.Popen(
        [sys.executable, "-c", f"open({str(fifo)!r}, 'wb').write(open({str(tmp_path / 'a.png')!r}, 'rb').read())"]
    )
    [entry] = expand_paths([str(fifo)])
    writer.wait(timeout=60)
    assert entry.error is None and entry.source == (tmp_path / "a.png").read_bytes()
    assert np.array_equal(np.asarray(load_image(entry.source)), photo())


# ---- formats -------------------------------------------------------------------------------------------------------
def test_every_format_pillow_decodes_is_found_in_folders(tmp_path):
    extensions = image_extensions()
    assert {".jpg", ".png", ".avif", ".jp2", ".jfif", ".mpo", ".heic"} <= extensions
    assert not {".pdf", ".mpg", ".h5", ".txt"} & extensions  # written only, identified only, needs a handler
    Image.fromarray(photo(32, 32)).save(tmp_path / "a.jp2")
    Image.fromarray(photo(32, 32)).save(tmp_path / "b.jfif", "JPEG")
    Image.fromarray(photo(32, 32)).save(tmp_path / "c.PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    names = [Path(e.name).name for e in expand_paths([str(tmp_path)])]
    assert names == ["a.jp2", "b.jfif", "c.PNG"]
    assert all(load_image(e.source).size == (32, 32) for e in expand_paths([str(tmp_path)]))


def test_heic_names_the_package_that_reads_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # not installed (import raises ImportError)
    (tmp_path / "phone.heic").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64))
    code, rows, _ = score_rows(capsys, str(tmp_path))
    assert code == 1 and Path(rows[0]["path"]).name == "phone.heic"
    assert rows[0]["error"] == (
        "HEIC/HEIF image: Pillow reads it only with the optional package pillow-heif (pip install pillow-heif)"
    )


# ---- folders -------------------------------------------------------------------------------------------------------
def test_symlinked_folders_are_followed_once_and_loops_end(tmp_path):
    root = tmp_path / "photos"
    (root / "trip").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    Image.fromarray(photo(32, 32)).save(root / "trip" / "a.png")
    Image.fromarray(photo(32, 32)).save(tmp_path / "elsewhere" / "b.png")
    (root / "trip" / "loop").symlink_to(root)  # a loop back to the top
    (root / "a-link").symlink_to(root / "trip")  # sorts before the real folder: the real path is still kept
    (root / "more").symlink_to(tmp_path / "elsewhere")  # a folder only reachable through a link
    names = [str(Path(e.name).relative_to(root)) for e in expand_paths([str(root)])]
    assert names == ["more/b.png", "trip/a.png"]
    matches = [str(Path(e.name).relative_to(root)) for e in expand_paths([str(root / "**" / "*.png")])]
    assert matches == ["more/b.png", "trip/a.png"]  # a ** glob through the loop: each file once


def test_hidden_files_and_folders_are_skipped_unless_asked(capsys, tmp_path):
    (tmp_path / ".thumbnails").mkdir()
    for name in ("a.jpg", "._a.jpg", ".thumbnails/a.jpg"):
        Image.fromarray(photo(32, 32)).save(tmp_path / name)
    assert [Path(e.name).name for e in expand_paths([str(tmp_path)])] == ["a.jpg"]
    every = [str(Path(e.name).relative_to(tmp_path)) for e in expand_paths([str(tmp_path)], hidden=True)]
    assert every == ["._a.jpg", ".thumbnails/a.jpg", "a.jpg"]
    code, rows, _ = score_rows(capsys, "--hidden", "--crops", "center", str(tmp_path))
    assert code == 0 and len(rows) == 3
    code, rows, _ = score_rows(capsys, "--crops", "center", str(tmp_path / "*.jpg"))
    assert [Path(r["path"]).name for r in rows] == ["a.jpg"]


def test_manifest_paths_are_relative_to_the_manifest_and_a_missing_one_names_the_path_tried(tmp_path, monkeypatch):
    (tmp_path / "lists").mkdir()
    Image.fromarray(photo(32, 32)).save(tmp_path / "lists" / "a.png")
    manifest = tmp_path / "lists" / "images.csv"
    manifest.write_text("path,scene\na.png,\ngone.png,\n")
    monkeypatch.chdir(tmp_path)  # not the manifest's folder
    found, missing = read_manifest("lists/images.csv")
    assert found.error is None and Path(found.source) == Path("lists") / "a.png"
    assert missing.name == "gone.png" and missing.error == f"no such file or folder: {Path('lists') / 'gone.png'}"


# ---- truncated and empty files -------------------------------------------------------------------------------------
def test_truncated_and_tiny_files_are_one_line_errors_never_internal_ones(tmp_path, capsys):
    paths = []
    for fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
        buffer = io.BytesIO()
        Image.fromarray(photo()).save(buffer, fmt)
        data = buffer.getvalue()
        for n in (0, 1, 3, 10, 40, len(data) // 2):
            paths.append(tmp_path / f"cut{n}.{fmt.lower()}")
            paths[-1].write_bytes(data[:n])
    code, rows, err = score_rows(capsys, *map(str, paths), "--crops", "center")
    assert code == 1 and len(rows) == len(paths)
    for row in rows:
        why = row["error"]
        assert why and "\n" not in why and "unpack" not in why and "buffer" not in why, why
        assert why.startswith(("empty file", "truncated")), why  # the same kind of reason as other damaged files
    assert rows[2]["error"] == "truncated or empty file: 3 bytes, too short for an image"  # PNG's signature is 8 bytes
    assert rows[3]["error"] == "truncated or corrupt PNG image: its header cannot be read (10 bytes)"
    assert "warning" not in err  # PIL's warnings on a damaged header are not printed beside its error
    with pytest.raises(OSError, match="truncated or empty file: 1 byte,"):
        load_image(data[:1])
