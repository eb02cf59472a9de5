"""Scoring as a product: inputs of every kind, crops, bad input, invariance, resume, manifests, torchrun, HTML."""

import csv
import io
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gamma_iqa
from gamma_iqa.cli import main
from gamma_iqa.data import transforms
from gamma_iqa.data.transforms import image_to_tensor, load_image, make_crops

from .conftest import images, run_gamma_iqa


def photo(h: int = 90, w: int = 120, seed: int = 0) -> np.ndarray:
    """A uint8 RGB image with structure: (h, w, 3)."""
    t = images(1, size=max(h, w), seed=seed)[0, :, :h, :w]
    return (t * 255).round().byte().permute(1, 2, 0).numpy()


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.png", "b.jpg", "sub/c.WEBP", "d.bmp", "e.tif", "sub/f.png", "g.png", "h.jpeg"]):
        Image.fromarray(photo(70 + 5 * i, 100 - 3 * i, seed=i)).save(root / name)
    (root / "notes.txt").write_text("not an image")
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def score_csv(capsys, *argv: str) -> tuple[int, list[dict], str]:
    code, out, err = run(capsys, "score", "--model", "gamma-test", *argv)
    return code, list(csv.DictReader(io.StringIO(out))), err


# ---- inputs --------------------------------------------------------------------------------------------------------
def test_folders_recursive_sorted_and_globs(capsys, folder):
    code, rows, _ = score_csv(capsys, str(folder), "--crops", "center", "--workers", "0")
    assert code == 0
    assert [Path(r["path"]).relative_to(folder).as_posix() for r in rows] == [
        "a.png",
        "b.jpg",
        "d.bmp",
        "e.tif",
        "g.png",
        "h.jpeg",
        "sub/c.WEBP",
        "sub/f.png",
    ]
    code, rows, _ = score_csv(capsys, str(folder / "*.png"), "--crops", "center", "--workers", "0")
    assert [Path(r["path"]).name for r in rows] == ["a.png", "g.png"]


def test_modes_and_formats_become_rgb(tmp_path):
    rgb = photo(80, 96)
    model = gamma_iqa.create_model("gamma-test")
    Image.fromarray(rgb).save(tmp_path / "ref.png")
    want = model.score(tmp_path / "ref.png", crops=3)[0]
    # Lossless containers of the same pixels give the same score.
    for name in ["x.bmp", "x.tiff", "x.webp"]:
        Image.fromarray(rgb).save(tmp_path / name, **({"lossless": True} if name.endswith("webp") else {}))
        assert model.score(tmp_path / name, crops=3)[0] == want, name
    # RGBA is composited on white: a fully transparent image scores as plain white.
    Image.new("RGBA", (80, 80), (10, 200, 30, 0)).save(tmp_path / "clear.png")
    Image.new("RGB", (80, 80), (255, 255, 255)).save(tmp_path / "white.png")
    assert model.score(tmp_path / "clear.png", crops=2) == model.score(tmp_path / "white.png", crops=2)
    # Greyscale, palette, 16-bit and CMYK all load as 3-channel RGB.
    grey = Image.fromarray(rgb).convert("L")
    grey.save(tmp_path / "grey.png")
    Image.fromarray(np.asarray(grey).astype(np.uint16) * 257).save(tmp_path / "deep.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.gif")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    for name in ["grey.png", "deep.png", "pal.gif", "cmyk.jpg"]:
        im = load_image(tmp_path / name)
        assert im.mode == "RGB" and im.size == (96, 80), name
    assert np.array_equal(np.asarray(load_image(tmp_path / "deep.png")), np.asarray(load_image(tmp_path / "grey.png")))


def test_exif_orientation_is_applied(tmp_path):
    rgb = photo(60, 100)
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    im.save(tmp_path / "plain.jpg", quality=95)
    assert load_image(tmp_path / "rot.jpg").size == (60, 100)
    assert np.array_equal(
        np.asarray(load_image(tmp_path / "rot.jpg")),
        np.asarray(load_image(tmp_path / "plain.jpg").transpose(Image.Transpose.ROTATE_270)),
    )


def test_python_inputs_agree_with_files(tmp_path):
    model = gamma_iqa.create_model("gamma-test")
    arrays = [photo(70, 90, seed=s) for s in range(3)]
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    from_files = model.score(sorted(tmp_path.glob("*.png")), scene="face", crops=4)
    tensors = [image_to_tensor(Image.fromarray(a)) for a in arrays]
    assert model.score([Image.fromarray(a) for a in arrays], scene="face", crops=4) == from_files
    assert model.score(arrays, scene="face", crops=4) == from_files
    assert model.score([a.astype(np.float32) / 255 for a in arrays], scene="face", crops=4) == from_files
    assert model.score(tensors, scene="face", crops=4) == from_files
    assert model.score(torch.stack(tensors), scene="face", crops=4) == from_files
    assert model.score(tmp_path, scene="face", crops=4) == from_files  # a folder
    assert all(isinstance(s, float) for s in from_files)
    with pytest.raises(ValueError, match=r"missing\.png: no such file"):
        model.score([tmp_path / "0.png", tmp_path / "missing.png"])
    with pytest.raises(ValueError, match=r"<input 0>: an image tensor must be \(3, H, W\) RGB"):
        model.score([torch.rand(4, 64, 64)])


# ---- crops ---------------------------------------------------------------------------------------------------------
def test_crops_are_seeded_by_content_not_position(capsys, folder):
    a = str(folder / "a.png")
    _, alone, _ = score_csv(capsys, a, "--workers", "0")
    _, among, _ = score_csv(capsys, str(folder / "g.png"), a, a, "--workers", "0")
    _, other_seed, _ = score_csv(capsys, a, "--seed", "5", "--workers", "0")
    assert among[1]["score"] == among[2]["score"] == alone[0]["score"]
    assert other_seed[0]["score"] != alone[0]["score"]


def test_crop_modes_match_the_model(tmp_path):
    model = gamma_iqa.create_model("gamma-test")
    im = Image.fromarray(photo(80, 100))
    centre = image_to_tensor(im)[:, 8:72, 18:82]
    with torch.no_grad():
        assert model.score(im, crops="center") == [float(model(centre[None]).mean())]
        assert model.score(im, crops="none") == [float(model(image_to_tensor(im)[None]).mean())]
        prepared = make_crops(im, 6, 64, seed=2)
        assert model.score(im, crops=6, seed=2) == [float(model(prepared.crops).mean())]


def test_small_images_upscaled_and_flagged(capsys, tmp_path):
    Image.fromarray(photo(30, 50)).save(tmp_path / "small.png")
    code, rows, _ = score_csv(capsys, str(tmp_path / "small.png"), "--crops", "3")
    assert code == 0 and rows[0]["crops"] == "3 (upscaled)"
    prepared = make_crops(Image.fromarray(photo(30, 50)), 3, 64)
    assert prepared.upscaled and prepared.crops.shape == (3, 3, 64, 64)


def test_large_images_are_cut_before_conversion(monkeypatch):
    seen = []
    real = transforms.image_to_tensor
    monkeypatch.setattr(transforms, "image_to_tensor", lambda im: seen.append(im.size) or real(im))
    big = Image.new("RGB", (6000, 4000), (120, 60, 30))
    prepared = make_crops(big, 5, 64)
    assert prepared.crops.shape == (5, 3, 64, 64)
    assert seen == [(64, 64)] * 5  # never the whole 24-megapixel image as floats


# ---- bad input -----------------------------------------------------------------------------------------------------
def test_bad_inputs_get_rows_and_the_run_goes_on(capsys, folder, tmp_path, monkeypatch):
    good = folder / "a.png"
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "trunc.jpg").write_bytes((folder / "b.jpg").read_bytes()[:300])
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (tmp_path / "text.jpg").write_text("hello, this is a text file")  # longer than any header: not a cut image
    locked = tmp_path / "locked"
    locked.mkdir()
    real_scandir = os.scandir

    def scandir(path="."):  # as root nothing is unreadable, so simulate the OS saying no
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(locked))
        return real_scandir(path)

    monkeypatch.setattr("gamma_iqa.data.inputs.os.scandir", scandir)
    names = ["empty.png", "trunc.jpg", "corrupt.png", "text.jpg", "missing.jpg", "locked"]
    code, rows, err = score_csv(capsys, str(good), *[str(tmp_path / n) for n in names], str(good), "--workers", "0")
    assert code == 1
    assert [Path(r["path"]).name for r in rows] == ["a.png", *names, "a.png"]
    assert rows[0]["score"] == rows[-1]["score"] and rows[0]["error"] == ""
    errors = {Path(r["path"]).name: r["error"] for r in rows[1:-1]}
    assert errors["empty.png"] == "empty file (0 bytes)"
    assert errors["trunc.jpg"].startswith("truncated or corrupt image")
    assert errors["text.jpg"] == "not an image, or an unsupported format"
    assert errors["missing.jpg"] == "no such file or folder"
    assert errors["locked"] == "cannot read folder (Permission denied)"
    assert all(r["score"] == "" for r in rows[1:-1])
    *lines, summary = err.splitlines()
    assert len(lines) == len(names) and all(line.startswith("error: ") for line in lines)
    assert summary == f"gamma-iqa score: {len(names)} of {len(names) + 2} images failed"


def test_usage_errors_exit_2(capsys, folder):
    for argv, message in [
        (["--scene", "space"], "unknown scene 'space'"),
        (["--crops", "0"], "--crops must be"),
        (["--resume"], "--resume needs --output"),
        (["--resume", "--output", str(folder / "x.json"), "--format", "json"], "--resume works with --format csv"),
        (["--dtype", "fp16", "--device", "cpu"], "fp16 needs a GPU"),
        (["--manifest", str(folder / "none.csv")], "cannot read"),
    ]:
        code, out, err = run(capsys, "score", str(folder), "--model", "gamma-test", *argv)
        assert (code, out) == (2, ""), argv
        assert message in err and err.count("\n") == 1, err
    code, _, err = run(capsys, "score", "--model", "gamma-test")
    assert code == 2 and "give image paths" in err


# ---- invariance and resume -----------------------------------------------------------------------------------------
def test_batch_size_workers_and_reruns_give_identical_scores(capsys, folder):
    outputs = set()
    for batch, workers in [(1, 0), (7, 0), (1, 1), (7, 2), (3, 2)]:
        code, out, _ = run(
            capsys,
            "score",
            str(folder),
            "--model",
            "gamma-test",
            "--crops",
            "4",
            "--batch-size",
            str(batch),
            "--workers",
            str(workers),
        )
        assert code == 0
        outputs.add(out)
    assert len(outputs) == 1


def test_resume_after_a_kill_gives_the_uninterrupted_file(capsys, folder, tmp_path):
    full = tmp_path / "full.csv"
    args = ["score", str(folder), str(tmp_path / "gone.png"), "--model", "gamma-test", "--crops", "3", "--workers", "0"]
    assert run(capsys, *args, "--output", str(full))[0] == 1
    text = full.read_text()
    for fmt, cut in [("csv", 4), ("jsonl", 2)]:
        target = tmp_path / f"part.{fmt}"
        assert run(capsys, *args, "--output", str(target), "--format", fmt)[0] == 1
        whole = target.read_text()
        lines = whole.splitlines(keepends=True)
        target.write_text("".join(lines[:cut]) + lines[cut][:9])  # killed halfway through a row
        code, _, err = run(capsys, *args, "--output", str(target), "--format", fmt, "--resume")
        # The missing image's error row came before the cut: the status and the line still count it, as they would
        # at the end of an uninterrupted run.
        assert code == 1 and target.read_text() == whole and "nothing left" not in err
        assert err.splitlines()[-1] == "gamma-iqa score: 1 of 9 images failed"
        code, _, err = run(capsys, *args, "--output", str(target), "--format", fmt, "--resume")  # all done
        assert code == 1 and target.read_text() == whole
        assert err.splitlines() == [
            f"gamma-iqa score: nothing left to score: {target} already has a row for all 9 inputs",
            "gamma-iqa score: 1 of 9 images failed",
        ]
    good = [
        str(folder),
        "--model",
        "gamma-test",
        "--crops",
        "3",
        "--workers",
        "0",
        "--output",
        str(tmp_path / "ok.csv"),
    ]
    assert run(capsys, "score", *good)[0] == 0
    code, _, err = run(capsys, "score", *good, "--resume")
    assert (
        code == 0
        and err == f"gamma-iqa score: nothing left to score: {tmp_path / 'ok.csv'} already has a row for all 8 inputs\n"
    )
    assert text.count("\n") == 10  # header, 8 images, the missing one


# ---- manifests -----------------------------------------------------------------------------------------------------
def test_manifest_with_mixed_scenes(capsys, folder, tmp_path):
    manifest = folder / "list.csv"
    manifest.write_text("path,scene\na.png,face\nsub/c.WEBP,aigc\nb.jpg,\nd.bmp,space\n")
    code, rows, _ = score_csv(capsys, "--manifest", str(manifest), "--crops", "2", "--scene", "underwater")
    assert code == 1
    assert [(r["path"], r["scene"]) for r in rows] == [
        ("a.png", "face"),
        ("sub/c.WEBP", "aigc"),
        ("b.jpg", "underwater"),
        ("d.bmp", "space"),
    ]
    assert "unknown scene 'space'" in rows[3]["error"] and "valid scenes" in rows[3]["error"]
    model = gamma_iqa.create_model("gamma-test")
    assert float(rows[0]["score"]) == model.score(folder / "a.png", scene="face", crops=2)[0]
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text("".join(json.dumps({"path": str(folder / p), "scene": s}) + "\n" for p, s in [("a.png", "face")]))
    code, rows, _ = score_csv(capsys, "--manifest", str(jsonl), "--crops", "2")
    assert code == 0 and float(rows[0]["score"]) == model.score(folder / "a.png", scene="face", crops=2)[0]


# ---- scale-out and report ------------------------------------------------------------------------------------------
def test_torchrun_two_processes_match_one(folder, tmp_path):
    common = [str(folder), str(tmp_path / "missing.png"), "--model", "gamma-test", "--crops", "3", "--workers", "0"]
    one = run_gamma_iqa(["score", *common, "--output", str(tmp_path / "one.csv")])
    two = run_gamma_iqa(["score", *common, "--output", str(tmp_path / "two.csv")], processes=2, port=29731)
    assert one.returncode == 1, one.stderr
    assert two.returncode != 0, two.stderr  # the missing file fails the run on both sides
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "one.csv").read_text()


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cards, self.imgs, self.error_rows, self.external = [], [], 0, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and a.get("class") == "card":
            self.cards.append(float(a["data-score"]))
        if tag == "img" and a.get("src"):
            self.imgs.append(a["src"])
        if tag == "tr":
            self.error_rows += 1
        if tag in ("link", "script") or (a.get("src", "data:").split(":")[0] not in ("data",)):
            self.external.append(tag)


def test_html_report(capsys, folder, tmp_path):
    report = tmp_path / "report.html"
    code, rows, _ = score_csv(capsys, str(folder), str(tmp_path / "nope.png"), "--html", str(report), "--crops", "2")
    assert code == 1
    page = _Page()
    page.feed(report.read_text())
    scores = sorted((float(r["score"]) for r in rows if r["score"]), reverse=True)
    assert page.cards == pytest.approx(scores, abs=1e-6) and len(page.cards) == 8
    assert len(page.imgs) == 8 and all(src.startswith("data:image/jpeg;base64,") for src in page.imgs)
    assert page.error_rows == 1 and page.external == []


def test_html_report_renders_in_chromium(capsys, folder, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian chromium is not installed (.ci/run installs it)")
    report = tmp_path / "report.html"
    assert score_csv(capsys, str(folder), "--html", str(report), "--crops", "center")[0] == 0
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1000,700",
            f"--screenshot={shot}",
            report.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    # The thumbnails are photos: thousands of distinct colours, where text and bars alone give a few hundred.
    assert len(np.unique(pixels, axis=0)) > 2000


# ---- a decoding worker that dies (killed for memory, say) -----------------------------------------------------------
def _workers_die_at(monkeypatch: pytest.MonkeyPatch, item: int) -> None:
    """Make the DataLoader worker that decodes dataset item `item` exit at once, as one killed for memory does."""
    from gamma_iqa.engine import scoring

    decode = scoring._Images.__getitem__

    def dying(self, i):
        if i == item:
            os._exit(3)  # in the worker process (forked: it has this patch too)
        return decode(self, i)

    monkeypatch.setattr(scoring._Images, "__getitem__", dying)


def test_a_dead_worker_is_one_line_and_the_rows_so_far_stand(capsys, monkeypatch, folder, tmp_path):
    out = tmp_path / "scores.csv"
    argv = [str(folder), "--crops", "center", "--workers", "1", "--batch-size", "1", "--output", str(out)]
    _workers_die_at(monkeypatch, 4)
    code, _, err = score_csv(capsys, *argv)
    assert code == 1 and err.count("\n") == 1, err
    head, _, tail = err.partition(" died unexpectedly (exit code 3: out of memory?): the ")
    assert head.startswith("gamma-iqa score: error: a decoding worker (pid ") and tail, err
    written = int(tail.split()[0])
    assert tail.endswith(f"so far are in {out}; rerun with --resume, and fewer --workers or --workers 0\n"), err
    kept = list(csv.DictReader(out.open()))
    assert len(kept) == written <= 4 and all(r["score"] and not r["error"] for r in kept)
    monkeypatch.undo()
    code, _, err = score_csv(capsys, *argv, "--resume")
    assert code == 0, err
    assert [Path(r["path"]).name for r in csv.DictReader(out.open())] == [p.name for p in sorted_images(folder)]


def sorted_images(folder: Path) -> list[Path]:
    """The images `score FOLDER` takes, in its order (recursive, sorted by relative path)."""
    suffixes = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif"}
    return sorted((p for p in folder.rglob("*") if p.suffix.lower() in suffixes), key=lambda p: p.relative_to(folder))


def test_a_dead_worker_while_scoring_to_stdout(capsys, monkeypatch, folder):
    _workers_die_at(monkeypatch, 2)
    code, rows, err = score_csv(capsys, str(folder), "--crops", "center", "--workers", "1", "--batch-size", "1")
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("gamma-iqa score: error: a decoding worker (pid ") and "died unexpectedly" in err
    assert err.endswith(
        f"after {len(rows)} row{'' if len(rows) == 1 else 's'}; rerun with fewer --workers or --workers 0\n"
    )


@pytest.mark.parametrize(
    ("message", "line"),
    [
        (
            "DataLoader worker (pid 12) exited unexpectedly with exit code 1. Details are lost due to multiprocessing.",
            "a decoding worker (pid 12) died unexpectedly (exit code 1: out of memory?)",
        ),
        (
            "DataLoader worker (pid 12) is killed by signal: Killed. ",
            "a decoding worker (pid 12) died unexpectedly (killed by signal Killed: out of memory?)",
        ),
        ("DataLoader worker (pid(s) 12, 13) exited unexpectedly", "a decoding worker (pid 12, 13) died unexpectedly"),
        ("CUDA out of memory", None),
    ],
)
def test_torchs_dead_worker_messages(message, line):
    from gamma_iqa import cli
    from gamma_iqa.engine.scoring import WorkerDied

    got = cli._worker_died(RuntimeError(message))
    assert got == line or (line is not None and got.startswith(line))
    assert cli._worker_died(ValueError(message)) is None
    assert cli._worker_died(WorkerDied("a decoding worker (pid 5) died")) == "a decoding worker (pid 5) died"


def test_format_follows_the_outputs_extension_unless_given(capsys, folder, tmp_path):
    args = ["score", str(folder / "a.png"), "--model", "gamma-test", "--crops", "2", "--workers", "0", "--output"]
    expected = gamma_iqa.create_model("gamma-test").score(folder / "a.png", crops=2)[0]
    for name, given, read in [
        ("s.jsonl", [], lambda t: json.loads(t.splitlines()[0])["score"]),
        ("s.JSON", [], lambda t: json.loads(t)[0]["score"]),
        ("s.txt", [], lambda t: float(next(csv.DictReader(io.StringIO(t)))["score"])),
        ("t.jsonl", ["--format", "csv"], lambda t: float(next(csv.DictReader(io.StringIO(t)))["score"])),
    ]:
        out = tmp_path / name
        assert run(capsys, *args, str(out), *given)[0] == 0
        assert read(out.read_text()) == expected
    whole = (tmp_path / "s.jsonl").read_text()
    code, _, err = run(capsys, *args, str(tmp_path / "s.jsonl"), "--resume")  # resumes as JSON lines, no --format
    assert code == 0 and "nothing left to score" in err and (tmp_path / "s.jsonl").read_text() == whole
