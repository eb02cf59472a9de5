"""The corpus tooling: .rcc reading, photo and licence rules, distortions, FR metrics, the pipeline, a tiny build.

The shared distort-and-label pipeline is checked directly and through both scripts; the tiny build runs
scripts/build_corpus.py on a tiny .deb.
"""

import csv
import hashlib
import io
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.functional.image import visual_information_fidelity

from gamma_iqa.corpus import fidelity as fidelity_module
from gamma_iqa.corpus import gcompris
from gamma_iqa.corpus.extra import ExtraPhoto, scikit_image_photos
from gamma_iqa.corpus.fidelity import delta_e, fidelity, gmsd, ms_ssim, pseudo_mos, psnr, vif
from gamma_iqa.corpus.pipeline import distort_and_label, label_view, load_photo, store
from gamma_iqa.corpus.rcc import parse_rcc
from gamma_iqa.data.datasets import folder_csv_dataset, load_records
from gamma_iqa.data.distortions import DISTORTIONS, FAMILIES, distort, level_strength
from gamma_iqa.data.transforms import load_image

from .conftest import load_script
from .test_inputs_colour import PROPHOTO, as_prophoto
from .test_inputs_colour import photo as colour_photo

build_corpus = load_script("build_corpus")
VIF_F32_TOL = 2e-3  # float32 VIF against float64: 5.5e-4 apart at most where measured (see the test)


# ---- a tiny .rcc, written from the format description ----------------------------------------------------------
def make_rcc(files: dict[str, bytes], *, version: int = 3, compress: tuple[str, ...] = ()) -> bytes:
    """A Qt resource bundle holding `files` ({'a/b.txt': bytes}); paths in `compress` are zlib entries."""
    tree: dict = {}
    for path, blob in files.items():
        node = tree
        *dirs, leaf = path.split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = blob
    names, name_offsets, payload = bytearray(), {}, bytearray()

    def name_offset(name: str) -> int:
        if name not in name_offsets:
            name_offsets[name] = len(names)
            text = name.encode("utf-16-be")
            names.extend(struct.pack(">HI", len(text) // 2, 0) + text)
        return name_offsets[name]

    nodes: list[bytes | None] = [None]  # breadth-first, children of a directory contiguous, as rcc lays them out
    queue = [(0, "", tree, "")]
    while queue:
        index, name, node, path = queue.pop(0)
        if isinstance(node, dict):
            first = len(nodes)
            nodes.extend([None] * len(node))
            for i, (child, sub) in enumerate(sorted(node.items())):
                queue.append((first + i, child, sub, f"{path}/{child}".lstrip("/")))
            entry = struct.pack(">IHII", name_offset(name) if index else 0, 2, len(node), first)
        else:
            flags, blob = 0, node
            if path in compress:
                flags, blob = 1, struct.pack(">I", len(node)) + zlib.compress(node)
            entry = struct.pack(">IHHHI", name_offset(name), flags, 0, 0, len(payload))
            payload.extend(struct.pack(">I", len(blob)) + blob)
        nodes[index] = entry + (b"\0" * 8 if version >= 2 else b"")
    header_size = 24 if version >= 3 else 20
    tree_bytes = b"".join(nodes)
    names_at = header_size
    payload_at = names_at + len(names)
    tree_at = payload_at + len(payload)
    header = (
        b"qres" + struct.pack(">IIII", version, tree_at, payload_at, names_at) + (b"\0" * 4 if version >= 3 else b"")
    )
    return header + bytes(names) + bytes(payload) + tree_bytes


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rcc_parser_reads_files_folders_names_and_zlib(version):
    files = {"gcompris/a/readme.txt": b"hello", "gcompris/a/b/é.bin": bytes(range(256)) * 40, "top.txt": b""}
    data = make_rcc(files, version=version, compress=("gcompris/a/b/é.bin",))
    assert parse_rcc(data) == files


def test_rcc_parser_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="qres"):
        parse_rcc(b"RIFF" + bytes(40))
    data = bytearray(make_rcc({"x.txt": b"abc"}, compress=("x.txt",)))
    flags_at = len(data) - 22 + 4  # the file node is the last one; its flags follow the name offset
    data[flags_at : flags_at + 2] = struct.pack(">H", 4)
    with pytest.raises(ValueError, match="zstd"):
        parse_rcc(bytes(data))


# ---- photo rule and licences -----------------------------------------------------------------------------------
COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 2014 The GCompris team
License: GPL-3+

Files: src/activities/erase/resource/bear001.jpg
       src/activities/erase/resource/cat*.jpg
Copyright: Some Photographer
           Another One
License: CC-BY-SA-3.0

License: GPL-3+
 text of the licence
"""


def test_photo_rule_ids_and_licences():
    root = gcompris.ROOT
    assert gcompris.is_photo(root + "erase/resource/cat1.webp", (320, 240), 224)
    assert gcompris.is_photo(root + "explore_monuments/resource/france/eiffel.webp", (800, 600), 224)
    assert not gcompris.is_photo(root + "erase/resource/cat1.webp", (300, 200), 224)  # too small
    assert not gcompris.is_photo(root + "lang/resource/words_sample/apple.webp", (800, 600), 224)  # cartoons
    assert not gcompris.is_photo(root + "paintings/resource/image/monet.webp", (800, 600), 224)
    assert not gcompris.is_photo(root + "erase/resource/cat1.svg", (800, 600), 224)
    # a mixed folder: its photographs by name, its drawings out
    assert gcompris.is_photo(root + "louis-braille/resource/teach.webp", (251, 255), 160)
    assert not gcompris.is_photo(root + "louis-braille/resource/chart.webp", (254, 255), 160)
    assert gcompris.photo_id(root + "explore_monuments/resource/france/eiffel.webp") == (
        "explore_monuments-france-eiffel"
    )
    stanzas = gcompris.parse_copyright(COPYRIGHT)
    assert len(stanzas) == 2
    licence = gcompris.licence_of
    assert licence("gcompris/src/activities/erase/resource/cat2.webp", stanzas) == ("CC-BY-SA-3.0", "Some Photographer")
    assert licence("gcompris/src/activities/erase/resource/bear001.webp", stanzas)[0] == "CC-BY-SA-3.0"
    assert licence("gcompris/src/activities/erase/resource/dog.webp", stanzas) == ("GPL-3+", "2014 The GCompris team")


def test_photo_types_draws_k_types_per_photo():
    types = list(DISTORTIONS)
    assert gcompris.photo_types(types, 0, 0, 3) == types and gcompris.photo_types(types, 25, 0, 3) == types
    assert gcompris.photo_types(types[:4], 9, 0, 3) == types[:4]  # k beyond the types: all of them
    drawn = [gcompris.photo_types(types, 3, 7, i) for i in range(20)]
    for chosen in drawn:
        positions = [types.index(t) for t in chosen]
        assert len(chosen) == 3 and positions == sorted(set(positions))  # distinct, in `types`' order
    assert drawn == [gcompris.photo_types(types, 3, 7, i) for i in range(20)]  # a function of (seed, index)
    assert len({tuple(c) for c in drawn}) >= 15  # photos draw other types
    assert len({t for c in drawn for t in c}) >= 20
    assert [gcompris.photo_types(types, 3, 8, i) for i in range(20)] != drawn  # and other seeds too


def test_photo_types_appends_the_always_types_not_drawn():
    types, always = list(DISTORTIONS), ["pixelate", "jpeg", "white_noise"]
    for i in range(20):
        drawn = gcompris.photo_types(types, 3, 7, i)
        both = gcompris.photo_types(types, 3, 7, i, always)
        assert both[:3] == drawn  # the draw, its order and so its random streams, as without `always`
        assert both[3:] == [t for t in always if t not in drawn]  # the others after it, in `always`' order
        assert len(set(both)) == len(both) and set(always) <= set(both)
    assert any(len(gcompris.photo_types(types, 3, 7, i, always)) < 6 for i in range(20))  # drawn ones not repeated
    assert gcompris.photo_types(types, 0, 7, 3, always) == types  # all types already: each once, in `types`' order
    small = ["gaussian_blur", "jpeg"]  # k = 0: all of `types`, then those of `always` not among them
    assert gcompris.photo_types(small, 0, 7, 3, always) == ["gaussian_blur", "jpeg", "pixelate", "white_noise"]


# ---- distortions -----------------------------------------------------------------------------------------------
def sample(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A photo-like (H, W, 3) float32 image: smooth colour gradients, edges, a textured patch."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    img = np.stack([0.2 + 0.6 * xx, 0.3 + 0.5 * yy, 0.6 - 0.4 * xx * yy], axis=-1)
    img[h // 4 : h // 2, w // 5 : w // 2] = (0.85, 0.2, 0.15)
    img[h // 2 :, w // 2 :] += 0.15 * rng.standard_normal((h - h // 2, w - w // 2, 1))
    return np.clip(img, 0, 1).astype(np.float32)


def test_twenty_five_types_in_seven_families():
    assert len(DISTORTIONS) == 25 and len(FAMILIES) == 7
    assert sorted(t for ts in FAMILIES.values() for t in ts) == sorted(DISTORTIONS)
    assert [level_strength(k) for k in range(1, 6)] == [0.2, 0.4, 0.6, 0.8, 1.0]
    with pytest.raises(ValueError):
        level_strength(6)


@pytest.mark.parametrize("kind", list(DISTORTIONS))
def test_distortion_shape_range_and_severity(kind):
    x = sample()
    outs = [distort(x, kind, s, np.random.default_rng(3)) for s in (0.2, 1.0)]
    for y in outs:
        assert y.shape == x.shape and y.dtype == np.float32 and y.min() >= 0 and y.max() <= 1
        assert not np.array_equal(y, x)
    mild, severe = (pseudo_mos(fidelity(x, y)) for y in outs)
    assert severe < mild < 1, f"{kind}: level 5 {severe:.3f} should be worse than level 1 {mild:.3f}"
    again = distort(x, kind, 0.2, np.random.default_rng(3))
    assert np.array_equal(again, outs[0])  # reproducible from the generator


def test_distort_checks_its_arguments():
    with pytest.raises(ValueError, match="unknown distortion"):
        distort(sample(), "sepia", 0.5, np.random.default_rng())
    with pytest.raises(ValueError, match="strength"):
        distort(sample(), "jpeg", 0.0, np.random.default_rng())


# ---- full-reference metrics ------------------------------------------------------------------------------------
def test_identity_is_the_best_score():
    x = sample(128, 160)
    assert ms_ssim(x, x) == pytest.approx(1.0)
    assert gmsd(x, x) == pytest.approx(0.0, abs=1e-12) and vif(x, x) == pytest.approx(1.0)
    assert psnr(x, x) == float("inf") and delta_e(x, x) == pytest.approx(0.0, abs=1e-9)
    assert pseudo_mos(fidelity(x, x)) == pytest.approx(1.0)


def test_more_distortion_scores_worse_on_every_metric():
    x = sample(128, 160)
    rng = np.random.default_rng
    blur = [fidelity(x, distort(x, "gaussian_blur", s, rng(0))) for s in (0.2, 0.6, 1.0)]
    metrics = (("ms_ssim", True), ("gmsd", False), ("vif", True), ("psnr", True), ("delta_e", False))
    for name, higher_better in metrics:
        values = [b[name] for b in blur]
        assert values == sorted(values, reverse=higher_better), name
    # hue and saturation changes are what delta_e is in the ensemble for
    grey = distort(x, "desaturate", 1.0, rng(0))
    assert delta_e(x, grey) > 5 and pseudo_mos(fidelity(x, grey)) < 0.9
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(x, x[:64])


def test_vif_in_float32_agrees_with_float64():
    # vif computes in float32; before, torchmetrics ran on float64 luma. Measured over the 25 types at 0.2 / 0.6 / 1.0:
    # at most 5.5e-4 apart on this image, 4.7e-4 on the sample photo at 256 px (with or without a flat grey patch).
    x = sample(96, 128, seed=5)
    worst = (("contrast_change", 0.2), ("brighten", 0.6), ("oversaturate", 1.0), ("quantization", 1.0))
    for kind, strength in (*worst, ("gaussian_blur", 0.6), ("white_noise", 1.0)):
        y = np.round(distort(x, kind, strength, np.random.default_rng(0)) * 255).astype(np.float32) / 255
        a, b = (fidelity_module._luma(t) for t in fidelity_module._check(x, y))
        assert a.dtype == torch.float64
        assert vif(x, y) == pytest.approx(float(visual_information_fidelity(b, a)), abs=VIF_F32_TOL), kind


# ---- the shared distort-and-label pipeline ----------------------------------------------------------------------
def test_distort_and_label_stores_and_labels_the_stored_pixels(tmp_path):
    ref = store(sample(96, 128), tmp_path / "ref.png")
    versions = distort_and_label(
        ref, ["jpeg", "motion_blur"], [0.3, 0.9], lambda kind, k, s: tmp_path / f"{kind}-{k}-{s}.png", seed=7, index=2
    )
    assert [(v.distortion, v.strength) for v in versions] == [
        ("jpeg", 0.3), ("jpeg", 0.9), ("motion_blur", 0.3), ("motion_blur", 0.9)
    ]  # fmt: skip
    for v in versions:
        stored = np.asarray(Image.open(v.path).convert("RGB"), dtype=np.float32) / 255
        assert v.values == fidelity(ref, stored) and v.mos == round(pseudo_mos(v.values), 6)
    assert versions[1].mos < versions[0].mos and versions[3].mos < versions[2].mos
    # The same photo, seed and index give the same labels whatever the files are called (both scripts rely on it);
    # another index draws other random choices (here, motion blur's angle).
    again = distort_and_label(ref, ["jpeg", "motion_blur"], [0.3, 0.9], lambda k, i, s: tmp_path / f"b{k}{i}.png",
                              seed=7, index=2)  # fmt: skip
    assert [v.mos for v in again] == [v.mos for v in versions]
    other = distort_and_label(ref, ["motion_blur"], [0.9], lambda k, i, s: tmp_path / "c.png", seed=7, index=3)
    assert other[0].values != versions[3].values


def test_distort_and_label_from_a_later_type_draws_its_streams(tmp_path):
    ref = store(sample(96, 128), tmp_path / "ref.png")
    kinds, strengths = ["jpeg", "white_noise", "motion_blur"], [0.5, 1.0]

    def run(name, kinds, first=0):
        return distort_and_label(ref, kinds, strengths, lambda k, i, s: tmp_path / f"{name}-{k}-{i}.png", seed=4,
                                 index=1, first=first)  # fmt: skip

    def seen(versions):  # all but the path, and the stored pixels
        return [(v.distortion, v.strength, v.mos, v.fr_mos, v.values, np.asarray(Image.open(v.path)).tobytes())
                for v in versions]  # fmt: skip

    whole = seen(run("all", kinds))
    assert seen(run("tail", kinds[1:], first=1)) == whole[2:]  # white noise's field, motion blur's angle as at once
    assert seen(run("last", kinds[2:], first=2)) == whole[4:]
    assert seen(run("zero", kinds[1:]))[:2] != whole[2:4]  # from stream 0 instead: another noise field


def test_store_returns_what_a_reader_gets(tmp_path):
    x = sample(50, 70, seed=2) * 0.999 + 0.0003  # values between the 8-bit levels
    for suffix in (".png", ".jpg"):
        back = store(x, tmp_path / f"x{suffix}")
        read = np.asarray(Image.open(tmp_path / f"x{suffix}").convert("RGB"), dtype=np.float32) / 255
        assert back.dtype == np.float32 and np.array_equal(back, read), suffix
    assert np.abs(store(x, tmp_path / "y.png") - x).max() <= 0.5 / 255 + 1e-6  # PNG: rounded, nothing else


def test_load_photo_decodes_as_scoring_does_through_an_embedded_profile(tmp_path):
    srgb = colour_photo()
    wide = as_prophoto(srgb)  # ProPhoto pixels: raw, they are far from the photo
    wide.save(tmp_path / "prophoto.png", icc_profile=PROPHOTO)
    blob = (tmp_path / "prophoto.png").read_bytes()
    scored = np.asarray(load_image(tmp_path / "prophoto.png"), np.float32) / 255  # what `score` decodes
    for source in (tmp_path / "prophoto.png", blob):  # a path (evaluate_default) or bytes (the corpus build)
        assert np.array_equal(load_photo(source, 96), scored)
    assert np.abs(scored * 255 - srgb).mean() < 1.0 < np.abs(np.asarray(wide, np.float32) - srgb).mean()
    small = load_photo(blob, 48)
    assert small.shape == (36, 48, 3) and small.dtype == np.float32


def test_label_view_scales_down_only_what_exceeds_its_side():
    x = sample(96, 128)
    assert label_view(x, None) is x and label_view(x, 128) is x and label_view(x, 500) is x
    small = label_view(x, 64)
    assert small.shape == (48, 64, 3) and small.dtype == np.float32 and small.min() >= 0 and small.max() <= 1
    tall = label_view(sample(128, 40), 50)
    assert tall.shape == (50, 16, 3)  # long side `side`, aspect kept (40 * 50 / 128 = 15.6)
    assert abs(float(small.mean()) - float(x.mean())) < 0.01  # a scaled-down view, not a crop
    pil = Image.fromarray(np.round(x * 255).astype(np.uint8)).resize((64, 48), Image.Resampling.LANCZOS)
    assert np.array_equal(small * 255, np.asarray(pil, dtype=np.float32))  # Lanczos on the 8-bit image


def test_distort_and_label_at_a_viewing_size(tmp_path):
    ref = store(sample(96, 128), tmp_path / "ref.png")
    kinds, strengths = ["gaussian_blur", "white_noise"], [0.2, 0.6, 1.0]

    def label(side):
        return distort_and_label(ref, kinds, strengths, lambda k, i, s: tmp_path / f"{side}-{k}-{i}.png", seed=1,
                                 index=0, label_side=side)  # fmt: skip

    stored = label(None)
    assert [(v.values, v.mos) for v in label(128)] == [(v.values, v.mos) for v in stored]  # within the side: as stored
    seen = label(64)
    assert [v.mos for v in seen] != [v.mos for v in stored]
    for v in seen:
        image = np.asarray(Image.open(v.path).convert("RGB"), dtype=np.float32) / 255
        assert image.shape == (96, 128, 3)  # stored at full size, labelled on the 64 x 48 view
        assert v.values == fidelity(label_view(ref, 64), label_view(image, 64))
    for kind in kinds:
        mos = [v.mos for v in seen if v.distortion == kind]
        assert mos == sorted(mos, reverse=True) and max(mos) < 1.0
    # a blur seen smaller is a milder blur
    assert seen[0].fr_mos > stored[0].fr_mos


def test_build_corpus_and_evaluate_default_label_one_photo_alike(tmp_path):
    evaluate_default = load_script("evaluate_default")
    photo = tmp_path / "p.png"
    Image.fromarray((sample(240, 256, seed=4) * 255).astype(np.uint8)).save(photo)
    items = evaluate_default.build_items([("p", photo)], tmp_path / "eval", types=("white_noise", "jpeg"),
                                         strengths=(0.5, 1.0), untouched=False)  # fmt: skip
    corpus = tmp_path / "corpus"
    for sub in ("rows", "images", "reference"):
        (corpus / sub).mkdir(parents=True)
    # levels 1 and 2 of 2 are strengths 0.5 and 1.0; seed 0 and index 0, as the evaluation's first photo
    rows = gcompris.build_photo(("p", photo.read_bytes(), corpus, ["white_noise", "jpeg"], 2, 384, "png", 0, 0, None))
    assert rows[0]["level"] == 0 and rows[0]["mos"] == 1.0 and rows[0]["image"] == "reference/p.png"  # untouched
    assert [(r["distortion"], r["strength"], r["mos"]) for r in rows[1:]] == [
        (it.distortion, it.strength, it.mos) for it in items
    ]


# ---- a tiny build from a tiny .deb -----------------------------------------------------------------------------
needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed (Debian tools)")


def tiny_deb(tmp_path):
    """A tiny gcompris-qt-data .deb: two photos (erase-bird, erase-cat1, 240 x 256) and a cartoon, with licences."""
    pkg = tmp_path / "pkg"
    files = {}
    for i, name in enumerate(["erase/resource/cat1.webp", "erase/resource/bird.webp", "lang/resource/apple.webp"]):
        buf = tmp_path / f"{i}.webp"
        Image.fromarray((sample(240, 256, seed=i) * 255).astype(np.uint8)).save(buf, lossless=True)
        files["gcompris/src/activities/" + name] = buf.read_bytes()
    rcc = pkg / gcompris.RCC_DIR / "test.rcc"
    rcc.parent.mkdir(parents=True)
    rcc.write_bytes(make_rcc(files))
    (pkg / gcompris.COPYRIGHT).parent.mkdir(parents=True)
    (pkg / gcompris.COPYRIGHT).write_text(COPYRIGHT)
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN" / "control").write_text(
        "Package: gcompris-qt-data\nVersion: 0.1\nArchitecture: all\nMaintainer: test <t@example.org>\n"
        "Description: test\n"
    )
    deb = tmp_path / "gcompris-qt-data_0.1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(deb)], check=True, capture_output=True)
    return deb


@needs_dpkg
def test_tiny_build_from_a_tiny_package(tmp_path):
    deb = tiny_deb(tmp_path)
    out = tmp_path / "corpus"
    build_corpus.main(["--out", str(out), "--deb", str(deb), "--types", "jpeg,white_noise", "--levels", "2",
                       "--val-fraction", "0.5", "--extra", "none", "--always-types", "none"])  # fmt: skip
    rows = list(csv.DictReader((out / "labels.csv").open()))
    assert len(rows) == 2 * (1 + 2 * 2)  # the cartoon folder is not a photo folder; each photo untouched + 2 x 2
    assert {r["reference"] for r in rows} == {"reference/erase-bird.png", "reference/erase-cat1.png"}
    assert sorted({r["split"] for r in rows}) == ["test", "train"]
    for photo in ("erase-bird", "erase-cat1"):
        mine = [r for r in rows if r["photo"] == photo]
        top = [r for r in mine if r["level"] == "0"]  # the untouched photo: the reference file, top of the scale
        assert [(r["image"], r["distortion"], float(r["mos"]), float(r["strength"])) for r in top] == [
            (f"reference/{photo}.png", "none", 1.0, 0.0)
        ]
        for kind in ("jpeg", "white_noise"):
            mos = [float(r["mos"]) for r in mine if r["distortion"] == kind]
            assert [r["level"] for r in mine if r["distortion"] == kind] == ["1", "2"]
            assert 0 <= mos[1] < mos[0] < 1
    licences = list(csv.DictReader((out / "licences.csv").open()))
    assert {r["license"] for r in licences} == {"CC-BY-SA-3.0", "GPL-3+"}
    spec = folder_csv_dataset(out / "labels.csv", mos_range=(0, 1), scene="natural", name="gcompris")
    _, records = load_records(spec, out, meta_dir=tmp_path / "meta")
    assert len(records) == 10 and all(r.path.is_file() for r in records)
    assert all((r.splits[0] == "test") == (r.image in {x["image"] for x in rows if x["split"] == "test"})
               for r in records)  # fmt: skip
    # A rerun (here with 2 worker processes) reuses finished photos: same labels, their images not rewritten; a photo
    # whose rows file is gone is rebuilt; other arguments rebuild everything.
    labels = (out / "labels.csv").read_text()
    kept = out / "images" / "erase-cat1__jpeg__1.png"
    stamp = kept.stat().st_mtime_ns
    (out / "rows" / "erase-bird.json").unlink()
    (out / "gamma-iqa-gcompris.csv").write_text("image,mos,mos_norm,split_01\n")  # a split file of the old labels
    build_corpus.main(["--out", str(out), "--deb", str(deb), "--types", "jpeg,white_noise", "--levels", "2",
                       "--val-fraction", "0.5", "--workers", "2", "--extra", "none",
                       "--always-types", "none"])  # fmt: skip
    assert (out / "labels.csv").read_text() == labels
    assert not (out / "gamma-iqa-gcompris.csv").exists()  # removed with the labels it was drawn from
    assert kept.stat().st_mtime_ns == stamp and (out / "rows" / "erase-bird.json").is_file()
    build_corpus.main(["--out", str(out), "--deb", str(deb), "--types", "jpeg", "--levels", "2", "--extra", "none",
                       "--always-types", "none"])  # fmt: skip
    assert len(list(csv.DictReader((out / "labels.csv").open()))) == 2 * (1 + 2) and kept.stat().st_mtime_ns != stamp
    # Types per photo: each photo distorted by its own draw of them; labels at a viewing size, part of a photo's key.
    with pytest.raises(ValueError, match="types_per_photo must be >= 0 \\(0: all\\), got -1"):
        gcompris.build_corpus(tmp_path / "bad", types=["jpeg", "white_noise"], deb=deb, types_per_photo=-1)
    with pytest.raises(ValueError, match="label_side must be at least 128 pixels"):
        gcompris.build_corpus(tmp_path / "bad", types=["jpeg", "white_noise"], deb=deb, label_side=64)
    assert not (tmp_path / "bad").exists()  # refused before anything is written
    three, few = ["jpeg", "white_noise", "gaussian_blur"], tmp_path / "few"
    args = ["--out", str(few), "--deb", str(deb), "--types", ",".join(three), "--levels", "2", "--types-per-photo", "1",
            "--extra", "none", "--always-types", "none"]  # fmt: skip
    build_corpus.main([*args, "--label-side", "128"])
    rows = list(csv.DictReader((few / "labels.csv").open()))
    per_photo = {p: [r["distortion"] for r in rows if r["photo"] == p] for p in ("erase-bird", "erase-cat1")}
    assert sorted(per_photo) == ["erase-bird", "erase-cat1"] and all(len(d) == 3 for d in per_photo.values())
    kinds = {p: {d for d in ds if d != "none"} for p, ds in per_photo.items()}
    assert all(len(k) == 1 for k in kinds.values())  # untouched + 2 levels of one type
    assert sorted(k for ks in kinds.values() for k in ks) == sorted(
        t for i in range(2) for t in gcompris.photo_types(three, 1, 0, i)
    )
    labels = (few / "labels.csv").read_text()
    build_corpus.main(args)  # labelled as stored: rebuilt, other labels
    assert (few / "labels.csv").read_text() != labels

    # Photos from other sources come after the package's, with the licence they carry, split with the rest.
    grey = io.BytesIO()
    Image.fromarray((sample(200, 240, seed=9) * 255).astype(np.uint8)).save(grey, format="PNG")
    extra = ExtraPhoto("skimage_toy", "a test source: toy.png", grey.getvalue(), "CC0", "Somebody")
    gcompris.build_corpus(tmp_path / "x", types=["jpeg"], deb=deb, levels=1, extra=[extra])
    rows = list(csv.DictReader((tmp_path / "x" / "labels.csv").open()))
    assert [r["photo"] for r in rows][-2:] == ["skimage_toy"] * 2 and len(rows) == 3 * 2
    licences = list(csv.DictReader((tmp_path / "x" / "licences.csv").open()))
    assert licences[-1] == {"reference": "reference/skimage_toy.png", "source": "a test source: toy.png",
                            "sha256": hashlib.sha256(grey.getvalue()).hexdigest(), "license": "CC0",
                            "copyright": "Somebody"}  # fmt: skip


@needs_dpkg
def test_tiny_rebuild_adds_always_types_alone(tmp_path):
    deb, three = tiny_deb(tmp_path), "jpeg,white_noise,gaussian_blur"
    args = ["--deb", str(deb), "--types", three, "--levels", "2", "--types-per-photo", "1", "--seed", "1",
            "--val-fraction", "0.5", "--extra", "none"]  # fmt: skip
    out, fresh = tmp_path / "corpus", tmp_path / "fresh"
    build_corpus.main(["--out", str(out), *args, "--always-types", "none"])
    rows = list(csv.DictReader((out / "labels.csv").open()))
    drawn = {r["photo"]: r["distortion"] for r in rows if r["level"] == "1"}
    # seed 1 draws one photo a random type not among the added ones (so those come after it, at streams 1 and 2),
    # the other one of them (so only the other is added)
    assert sorted(drawn.values()) == ["gaussian_blur", "white_noise"]
    before = {f: f.stat().st_mtime_ns for f in (out / "images").iterdir()}
    assert len(before) == 2 * 2
    build_corpus.main(["--out", str(out), *args, "--always-types", "white_noise,jpeg"])
    assert {f: f.stat().st_mtime_ns for f in before} == before  # the drawn types' images kept, not rewritten
    build_corpus.main(["--out", str(fresh), *args, "--always-types", "white_noise,jpeg"])
    assert (out / "labels.csv").read_bytes() == (fresh / "labels.csv").read_bytes()
    for sub in ("images", "reference"):
        files = sorted(f.name for f in (fresh / sub).iterdir())
        assert sorted(f.name for f in (out / sub).iterdir()) == files
        assert all((out / sub / f).read_bytes() == (fresh / sub / f).read_bytes() for f in files), sub
    rows = list(csv.DictReader((out / "labels.csv").open()))
    for photo, kind in drawn.items():
        mine = [(r["distortion"], r["level"]) for r in rows if r["photo"] == photo]
        expected = [kind, *(t for t in ("white_noise", "jpeg") if t != kind)]
        assert mine == [("none", "0")] + [(t, level) for t in expected for level in ("1", "2")]
    with pytest.raises(SystemExit, match="unknown distortion types nope"):
        build_corpus.main(["--out", str(tmp_path / "bad"), *args, "--always-types", "nope"])
    assert not (tmp_path / "bad").exists()


def test_scikit_image_photos_are_real_colour_photos_with_licences():
    pytest.importorskip("skimage", reason="the scikit-image sample photos need scikit-image (gamma-iqa[corpus])")
    photos = scikit_image_photos()
    assert [p.id for p in photos] == ["skimage_astronaut", "skimage_chelsea", "skimage_coffee", "skimage_rocket"]
    for p in photos:
        image = Image.open(io.BytesIO(p.data))
        assert image.mode == "RGB" and min(image.size) >= 300 and p.licence in ("CC0", "public-domain") and p.holder
