"""Own data (`folder+csv`, a training config's own dataset): the split file follows its label file, eval scores every
image of a label file without a split column, and a malformed label file is one line naming the file, the line and
what was expected (a LabelFileError in Python, exit status 2 on the command line)."""

import csv
import json
import re

import numpy as np
import pytest
from PIL import Image

import gamma_iqa
from gamma_iqa.cli import main
from gamma_iqa.data.datasets import SPLIT_FILE_PREFIX, LabelFileError, folder_csv_dataset, load_splits
from gamma_iqa.data.readers import read_folder_csv, read_groups
from gamma_iqa.engine import train as train_module
from gamma_iqa.engine.evaluate import evaluate
from gamma_iqa.engine.trainconfig import TrainConfig
from gamma_iqa.models import DEFAULT_MODEL


def photos(folder, n=10):
    """n tiny images, brighter with i; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        pixels = np.clip(rng.normal(25 * i, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
        names.append(f"img{i}.png")
    return names


def write_labels(path, names, mos, header="image,mos"):
    path.write_text(header + "\n" + "".join(f"{n},{m}\n" for n, m in zip(names, mos, strict=True)))
    return path


def split_mos(path):
    """{image: mos} of a split file (its first line records the label file it was drawn from)."""
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# gamma-iqa split file {")
    return {r["image"]: float(r["mos"]) for r in csv.DictReader(lines[1:])}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def eval_own(capsys, root, labels, *extra):
    """`gamma-iqa eval` of gamma-test on own data under `root` labelled by `labels` (one crop, in process)."""
    return run(
        capsys, "eval", "--model", "gamma-test", "--dataset", "folder+csv", "--data-root", str(root),
        "--csv", str(labels), "--mos-range", "1", "5", "--scene", "natural", "--crops", "1", "--workers", "0", *extra,
    )  # fmt: skip


# ---- the split file follows its label file -------------------------------------------------------------------------
def test_split_file_follows_its_label_file(tmp_path):
    names = photos(tmp_path / "img")
    rising = [1 + 0.4 * i for i in range(10)]
    a = write_labels(tmp_path / "a.csv", names, rising)
    spec = folder_csv_dataset(a, mos_range=(1, 5), scene="natural")
    first = load_splits(spec, tmp_path / "img")
    assert first.state == "written" and first.path.parent == tmp_path / "img" and first.drawn
    assert first.path.name.startswith(f"{SPLIT_FILE_PREFIX}folder-csv-a-")  # the corpus build's clean-up finds it
    assert split_mos(first.path) == dict(zip(names, rising, strict=True))
    assert load_splits(spec, tmp_path / "img").state == "read"
    # New labels in the same file (the MOS inverted): the split file is drawn again from them.
    write_labels(a, names, rising[::-1])
    again = load_splits(spec, tmp_path / "img")
    assert (again.path, again.state) == (first.path, "rebuilt: a.csv changed since it was written")
    assert [r.mos for r in again.records] == rising[::-1]
    assert split_mos(again.path) == dict(zip(names, rising[::-1], strict=True))
    a_path = again.path
    # A second label file for the same folder has a split file of its own; neither disturbs the other.
    b = write_labels(tmp_path / "b.csv", names, [3.0] * 10)
    other = load_splits(folder_csv_dataset(b, mos_range=(1, 5), scene="natural"), tmp_path / "img")
    assert other.state == "written" and other.path != a_path and {r.mos for r in other.records} == {3.0}
    (tmp_path / "sub").mkdir()
    same_stem = write_labels(tmp_path / "sub" / "a.csv", names, [2.0] * 10)  # same name, another folder
    third = load_splits(folder_csv_dataset(same_stem, mos_range=(1, 5), scene="natural"), tmp_path / "img")
    assert third.path not in (a_path, other.path) and {r.mos for r in third.records} == {2.0}
    back = load_splits(spec, tmp_path / "img")
    assert back.state == "read" and [r.mos for r in back.records] == rising[::-1]
    # Other columns of the same file are other labels.
    write_labels(a, names, [f"{m},{6 - m}" for m in rising], header="image,mos,dmos")
    flipped = load_splits(folder_csv_dataset(a, mos_range=(1, 5), scene="natural", mos_column="dmos"), tmp_path / "img")
    assert flipped.state.startswith("rebuilt: a.csv changed") and [r.mos for r in flipped.records] == [
        6 - m for m in rising
    ]
    by_mos = load_splits(spec, tmp_path / "img")
    assert by_mos.state == "rebuilt: the columns read from a.csv changed (image, mos)"
    assert [r.mos for r in by_mos.records] == rising


def test_split_file_without_its_source_and_a_missing_label_file(tmp_path, monkeypatch):
    names = photos(tmp_path / "img", 4)
    a = write_labels(tmp_path / "a.csv", names, [1, 2, 3, 4])
    spec = folder_csv_dataset(a, mos_range=(1, 5), scene="natural")
    path = load_splits(spec, tmp_path / "img").path
    path.write_text("image,mos,mos_norm,split_01\nimg0.png,5,1,test\n")  # no record of its labels (older versions)
    loaded = load_splits(spec, tmp_path / "img")
    assert loaded.state == "rebuilt: it does not say which label file it was drawn from; a.csv is used"
    assert [r.mos for r in loaded.records] == [1, 2, 3, 4]
    a.unlink()
    with pytest.raises(FileNotFoundError, match=f"label CSV {a} not found"):
        load_splits(spec, tmp_path / "img")  # never the split file of labels that are gone
    # The split file in $GAMMA_IQA_HOME/meta (a read-only data folder) and in `meta_dir` follows its labels too.
    write_labels(a, names, [1, 2, 3, 4])
    meta = load_splits(spec, tmp_path / "img", meta_dir=tmp_path / "meta")
    write_labels(a, names, [4, 3, 2, 1])
    moved = load_splits(spec, tmp_path / "img", meta_dir=tmp_path / "meta")
    assert (
        moved.path == meta.path and moved.state.startswith("rebuilt") and [r.mos for r in moved.records] == [4, 3, 2, 1]
    )


def test_eval_follows_new_labels_and_names_its_split_file(capsys, tmp_path):
    names = photos(tmp_path / "img")
    a = write_labels(tmp_path / "labels.csv", names, [1 + 0.4 * i for i in range(10)])
    code, out, err = eval_own(capsys, tmp_path / "img", a)
    assert code == 0, err
    (rising,) = json.loads(out)
    (line,) = [x for x in err.splitlines() if "split file" in x]
    (split_file,) = (tmp_path / "img").glob(f"{SPLIT_FILE_PREFIX}*.csv")
    assert line.endswith(f"; split file {split_file} (written)")
    write_labels(a, names, [5 - 0.4 * i for i in range(10)])
    code, out, err = eval_own(capsys, tmp_path / "img", a)
    (falling,) = json.loads(out)
    assert code == 0 and f"split file {split_file} (rebuilt: labels.csv changed since it was written)" in err
    assert falling["srcc"] == pytest.approx(-rising["srcc"])  # the same scores against the inverted MOS
    # A --csv that does not exist is an error naming it, though the split file of the old labels is still there.
    code, out, err = eval_own(capsys, tmp_path / "img", tmp_path / "gone.csv")
    assert (code, out, err) == (2, "", f"gamma-iqa eval: error: --csv {tmp_path / 'gone.csv'}: no such file\n")


def test_train_follows_new_labels_and_names_its_split_file(capsys, tmp_path):
    names = photos(tmp_path / "img", 12)
    labels = write_labels(tmp_path / "labels.csv", names, [1 + 0.3 * i for i in range(12)])
    entry = {"name": "mine", "csv": str(labels), "mos_range": [1, 5], "scene": "natural", "root": str(tmp_path / "img")}
    cfg = TrainConfig(model="gamma-test", datasets=(entry,), workers=0, out=str(tmp_path / "run"))

    def train_mos():
        (samples,), _ = train_module._samples(train_module._datasets(cfg), 1, [{}], True)
        return sorted((s.path.name, round(1 + 4 * s.target, 6)) for s in samples)

    before = train_mos()
    assert "mine: split file " in capsys.readouterr().err
    write_labels(labels, names, [5 - 0.3 * i for i in range(12)])
    after = train_mos()
    assert [name for name, _ in after] == [name for name, _ in before]  # the same random split: same image names
    assert after == sorted((n, round(5 - 0.3 * names.index(n), 6)) for n, _ in before)
    assert "(rebuilt: labels.csv changed since it was written)" in capsys.readouterr().err


# ---- own data without a split column: every image ------------------------------------------------------------------
def test_eval_scores_every_image_without_a_split_column(capsys, tmp_path):
    names = photos(tmp_path / "img")
    a = write_labels(tmp_path / "labels.csv", names, [1 + 0.4 * i for i in range(10)])
    code, out, err = eval_own(capsys, tmp_path / "img", a)
    (result,) = json.loads(out)
    assert code == 0 and (result["n"], result["split"]) == (10, None)
    said = "folder+csv: scoring all 10 images (0 missing) of labels.csv: it has no split column, --split K scores "
    assert said + "the test part of random split K instead;" in err
    code, out, err = eval_own(capsys, tmp_path / "img", a, "--split", "3")
    (result,) = json.loads(out)
    assert code == 0 and (result["n"], result["split"]) == (2, 3) and "of the test part of split 3;" in err
    # With a split column its test part is scored, as for a registered dataset; in Python the same.
    write_labels(a, names, [f"{1 + 0.4 * i},{'test' if i % 2 else 'train'}" for i in range(10)], "image,mos,split")
    code, out, err = eval_own(capsys, tmp_path / "img", a)
    (result,) = json.loads(out)
    assert code == 0 and (result["n"], result["split"]) == (5, 1)
    spec = folder_csv_dataset(write_labels(tmp_path / "b.csv", names, range(1, 11)), mos_range=(1, 10), scene="natural")
    (every,) = evaluate(gamma_iqa.create_model("gamma-test"), [spec], tmp_path / "img", crops=1, workers=0)
    assert (every.n, every.split) == (10, None)


# ---- malformed label files: one line, the file, the line, what was expected ----------------------------------------
MALFORMED = {
    "short row": (b"image,mos,split\nimg0.png,4\n", r"line 2: 2 cells; expected at least 3 \(image, mos, split\)"),
    "missing column": (
        b"image,score\nimg0.png,4\n",
        r"line 1: no column 'mos' in the header \(image, score\); expected the columns image, mos",
    ),
    "mos not a number": (b"image,mos\nimg0.png,4\nimg1.png,good\n", r"line 3: mos 'good' is not a number; expected a"),
    "mos not finite": (b"image,mos\nimg0.png,nan\n", r"line 2: mos 'nan' is not a number; expected a finite number"),
    "empty file": (b"", r"line 1: empty file; expected a header row with the columns image, mos"),
    "blank lines only": (b"\n \n", r"line 1: empty file; expected a header row"),
    "header only": (b"image,mos\n", r"line 2: no rows below the header; expected one row per image"),
    "duplicate image": (
        b"image,mos\nimg0.png,4\nimg1.png,3\n./img0.png,2\n",
        r"line 4: image ./img0.png again \(first on line 2\); expected one row per image",
    ),
    "not UTF-8": (b"image,mos\nimg0.png,4\nimg\xe9.png,3\n", r"line 3: byte 0xe9 is not UTF-8; expected UTF-8 text"),
    "split value": (b"image,mos,split\nimg0.png,4,val\n", r"line 2: split 'val'; expected train or test"),
    "extra cell": (
        b"image,mos\nimg0.png,4,\nimg1.png,3,2\n",  # an empty trailing cell is fine, a value beyond the header is not
        r"line 3: 3 cells; expected at most 2, as the header \(image, mos\); quote a cell that holds a comma",
    ),
    "empty image": (b"image,mos\n,4\n", r"line 2: empty image cell; expected an image path"),
    "lines after blank and quoted lines": (
        b'image,mos\n\n"img\n0.png",4\nimg1.png,x\n',
        r"line 5: mos 'x' is not a number",  # blank lines and a cell over two lines still count
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_label_file_is_one_line_naming_file_and_line(capsys, tmp_path, case):
    content, message = MALFORMED[case]
    photos(tmp_path / "img", 2)
    labels = tmp_path / "labels.csv"
    labels.write_bytes(content)
    with pytest.raises(LabelFileError, match=f"^{labels}, {message}") as caught:
        read_folder_csv(tmp_path / "img", labels)
    assert "\n" not in str(caught.value) and isinstance(caught.value, ValueError)
    with pytest.raises(gamma_iqa.LabelFileError, match=message):
        load_splits(folder_csv_dataset(labels, mos_range=(1, 5), scene="natural"), tmp_path / "img")
    code, out, err = eval_own(capsys, tmp_path / "img", labels)
    assert (code, out) == (2, "") and err.startswith(f"gamma-iqa eval: error: {labels}, line ")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_mos_outside_the_given_range_is_refused_naming_file_line_value_and_range(capsys, tmp_path):
    photos(tmp_path / "img", 2)
    labels = tmp_path / "labels.csv"
    labels.write_text("image,mos\nimg0.png,4\nimg1.png,7.5\n")
    message = rf"^{labels}, line 3: mos 7.5 is outside the MOS range \[1, 5\]; fix the value or the range$"
    with pytest.raises(LabelFileError, match=message):
        read_folder_csv(tmp_path / "img", labels, mos_range=(1, 5))
    code, out, err = eval_own(capsys, tmp_path / "img", labels)  # --mos-range 1 5
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert re.match(rf"gamma-iqa eval: error: {message[1:-1]}\n$", err)
    spec = folder_csv_dataset(labels, mos_range=(0, 10), scene="natural")
    assert load_splits(spec, tmp_path / "img").state == "written"  # in range on its scale
    with pytest.raises(LabelFileError, match="outside the MOS range"):  # a narrower range later: checked again
        load_splits(folder_csv_dataset(labels, mos_range=(1, 5), scene="natural"), tmp_path / "img")


def test_a_csv_flag_naming_a_folder_says_it_is_a_folder(capsys, tmp_path):
    photos(tmp_path / "img", 2)
    code, out, err = eval_own(capsys, tmp_path / "img", tmp_path / "img")
    assert (code, out) == (
        2,
        "",
    ) and err == f"gamma-iqa eval: error: --csv {tmp_path / 'img'}: is a folder; give the label CSV file\n"


def test_malformed_label_file_in_a_training_config_is_one_line(capsys, tmp_path):
    photos(tmp_path / "img", 2)
    labels = tmp_path / "labels.csv"
    labels.write_bytes(MALFORMED["short row"][0])
    entry = {"name": "mine", "csv": str(labels), "mos_range": [1, 5], "scene": "natural", "root": str(tmp_path / "img")}
    sets = [f"datasets=[{json.dumps(entry)}]", "model=gamma-test", "workers=0", f"out={tmp_path / 'run'}"]
    code, out, err = run(capsys, "train", *[arg for value in sets for arg in ("--set", value)])
    assert (code, out) == (2, "")
    assert err == f"gamma-iqa train: error: {labels}, line 2: 2 cells; expected at least 3 (image, mos, split)\n"
    labels.write_text("image,mos,photo\nimg0.png,4,p\nimg1.png,3\n")  # the group column's reader checks rows too
    with pytest.raises(LabelFileError, match=r"labels.csv, line 3: 2 cells; expected at least 3 \(image, mos, photo\)"):
        read_groups(labels, "photo")


def test_label_files_that_are_fine(tmp_path):
    """UTF-8 with a BOM, UTF-16 with its BOM (Excel's "Unicode text"), CRLF line ends, blank lines, empty cells."""
    rows = [("img0.png", 4.0), ("sub/ä.png", 2.5)]
    text = "image,mos,note\r\nimg0.png,4,x,\r\n\r\nsub/ä.png,2.5,\r\n"
    for encoding in ("utf-8-sig", "utf-16"):
        (tmp_path / "labels.csv").write_bytes(text.encode(encoding))
        assert read_folder_csv(tmp_path, tmp_path / "labels.csv").items == rows


def test_malformed_split_file_is_one_line(tmp_path):
    names = photos(tmp_path / "img", 4)
    spec = folder_csv_dataset(write_labels(tmp_path / "a.csv", names, [1, 2, 3, 4]), mos_range=(1, 5), scene="natural")
    path = load_splits(spec, tmp_path / "img").path
    source = path.read_text().splitlines()[0]
    path.write_text(f"{source}\nimage,mos,mos_norm,split_01\nimg0.png,1,0,test\nimg1.png,2\n")  # edited by hand
    with pytest.raises(LabelFileError, match=f"split file {path}, line 4: 2 cells; expected 4"):
        load_splits(spec, tmp_path / "img")
    path.write_text(f"{source}\nimage,mos,mos_norm,split_01\nimg0.png,one,0,test\n")
    with pytest.raises(LabelFileError, match=f"split file {path}, line 3: mos 'one' is not a number"):
        load_splits(spec, tmp_path / "img")


def test_eval_without_model_uses_the_default_model_as_score_does(capsys, tmp_path):
    names = photos(tmp_path / "img")
    labels = write_labels(tmp_path / "labels.csv", names, [1 + 0.4 * i for i in range(10)])
    common = ["eval", "--dataset", "folder+csv", "--data-root", str(tmp_path / "img"), "--csv", str(labels)]
    common += ["--mos-range", "1", "5", "--scene", "natural", "--crops", "1", "--workers", "0", "--format", "json"]
    code, default_out, err = run(capsys, *common)
    assert code == 0, err
    code, named_out, _ = run(capsys, *common, "--model", DEFAULT_MODEL)
    assert code == 0 and json.loads(default_out) == json.loads(named_out)
