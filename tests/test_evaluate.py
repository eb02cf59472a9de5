"""`evaluate` and `gamma-iqa eval` on generated datasets, with the tiny registered model (64 px crops)."""

import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from gamma_iqa import create_model, list_datasets, metrics
from gamma_iqa.cli import main
from gamma_iqa.data.datasets import folder_csv_dataset, user_dataset
from gamma_iqa.data.transforms import load_image, make_crops, resize_short_side
from gamma_iqa.engine.evaluate import DatasetResult, evaluate
from gamma_iqa.outputs.results import PAPER_TABLE1, save_predictions


def photos(folder, n, seed=0):
    """n random-size RGB images (some under 64 px, to be upscaled) with a MOS that follows their brightness."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        w, h = rng.integers(50, 120, 2)
        level = i / n
        pixels = np.clip(rng.normal(255 * level, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
        rows.append((f"img{i:02d}.png", round(1 + 4 * level, 3)))
    return rows


@pytest.fixture
def kadid(tmp_path):
    """A KADID-10k release folder with 20 images: its random split 1 tests 4 of them."""
    folder = tmp_path / "kadid10k"
    rows = photos(folder / "images", 20)
    lines = ["dist_img,ref_img,dmos,var"] + [f"{name},I01.png,{mos},0.1" for name, mos in rows]
    (folder / "dmos.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def split1_test_images(root):
    """The images of split 1's test part, as the split file beside the labels says."""
    with open(root / "kadid10k/gamma-iqa-kadid10k.csv", newline="") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))  # its first line: the label files
        return sorted(r["image"] for r in rows if r["split_01"] == "test")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def eval_kadid(capsys, kadid, *argv):
    """`gamma-iqa eval` of gamma-test on the kadid10k stand-in, plus `argv`."""
    return run(capsys, "eval", "--model", "gamma-test", "--dataset", "kadid10k", "--data-root", str(kadid), *argv)


def test_saved_predictions_reproduce_the_printed_metrics(capsys, kadid, tmp_path):
    preds = tmp_path / "preds.csv"
    code, out, err = eval_kadid(capsys, kadid, "--crops", "3", "--save-predictions", str(preds))
    assert code == 0, err
    (result,) = json.loads(out)
    assert (result["dataset"], result["split"], result["n"], result["missing"]) == ("kadid10k", 1, 4, 0)
    with open(preds, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["dataset"] for r in rows} == {"kadid10k"}
    p = [float(r["prediction"]) for r in rows]
    y = [float(r["mos_norm"]) for r in rows]
    assert [(float(r["mos"]) - 1) / 4 for r in rows] == pytest.approx(y, abs=5e-7)  # 6 significant digits
    assert all(len(r["mos_norm"].lstrip("0.")) <= 6 for r in rows)
    assert result["srcc"] == metrics.srcc(p, y)  # ranks: exact
    assert result["krcc"] == metrics.krcc(p, y)
    assert result["plcc"] == pytest.approx(metrics.plcc(p, y), abs=1e-5)  # labels as written, to 6 digits
    assert result["rmse"] == pytest.approx(metrics.rmse(p, y), abs=1e-6)
    # The split file shows which 4 images were tested.
    assert sorted(r["image"] for r in rows) == split1_test_images(kadid)


def test_saved_mos_norm_has_6_significant_digits_and_mos_and_predictions_are_exact(tmp_path):
    preds = [("a.png", 2.2, 0.1 + 0.2, 0.5392156839370728), ("b.png", 87.125, 0.87125, 1 / 3)]
    nan = float("nan")
    save_predictions([DatasetResult("mine", None, 2, 0, nan, nan, nan, nan, nan, [], preds)], tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text().splitlines() == [
        "dataset,image,mos,mos_norm,prediction",
        "mine,a.png,2.2,0.3,0.5392156839370728",  # 0.30000000000000004 before
        "mine,b.png,87.125,0.87125,0.3333333333333333",
    ]


def test_predictions_are_the_models_crop_means_with_resize_and_scene(tmp_path):
    rows = photos(tmp_path, 20)
    (tmp_path / "labels.csv").write_text("image,mos\n" + "".join(f"{n},{m}\n" for n, m in rows))
    spec = folder_csv_dataset(tmp_path / "labels.csv", mos_range=(1, 5), scene="underwater", resize=90)
    model = create_model("gamma-test")
    (a,) = evaluate(model, [spec], tmp_path, crops=2, seed=5, batch_size=3, split=1)
    (b,) = evaluate(model, [spec], tmp_path, crops=2, seed=5, batch_size=1, workers=1, split=1)
    assert a.n == 4
    for (image, _, _, score), (_, _, _, score_one_by_one) in zip(a.predictions, b.predictions, strict=True):
        prepared = make_crops(resize_short_side(load_image(tmp_path / image), 90), 2, 64, seed=5)
        with torch.no_grad():
            want = float(model(prepared.crops, "underwater").mean())
        assert score == pytest.approx(want, abs=1e-6)
        assert score_one_by_one == pytest.approx(score, abs=1e-6)  # batching never changes a score
    (c,) = evaluate(model, [spec], tmp_path, crops=2, seed=6, batch_size=3, split=1)
    assert [row[3] for row in c.predictions] != [row[3] for row in a.predictions]


def test_missing_images_are_counted_listed_and_exit_1(capsys, kadid):
    eval_kadid(capsys, kadid, "--crops", "1")
    tested = split1_test_images(kadid)
    (kadid / "kadid10k" / tested[0]).unlink()
    (kadid / "kadid10k" / tested[1]).write_bytes(b"this is not a png file at all")  # longer than any header
    code, out, err = eval_kadid(capsys, kadid, "--crops", "1")
    (result,) = json.loads(out)
    assert code == 1 and (result["n"], result["missing"]) == (2, 2)
    assert sorted(result["missing_images"]) == sorted(tested[:2])
    assert f"error: kadid10k: {tested[0]}: no such file" in err
    assert f"error: kadid10k: {tested[1]}: not an image, or an unsupported format" in err
    # Two pairs are too few for the logistic fit: NaN (null in JSON) and a one-line warning naming the dataset.
    assert result["plcc_logistic"] is None
    assert "warning: kadid10k: a 4-parameter logistic fit needs at least 4 pairs; NaN\n" in err


def test_markdown_table_sits_beside_the_paper(capsys, kadid):
    code, out, _ = eval_kadid(capsys, kadid, "--crops", "1", "--format", "md")
    header, _, row = out.splitlines()
    assert code == 0 and "paper Gamma SRCC / PLCC" in header and "paper Gamma† SRCC / PLCC" in header
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["kadid10k", "4", "0"]
    assert cells[-2:] == ["0.960 / 0.962", "0.962 / 0.964"]
    assert set(PAPER_TABLE1) == set(list_datasets()[:12])  # the paper's 12, pinned by name in test_data


def test_folder_csv_from_the_command_line_and_plots(capsys, tmp_path):
    rows = photos(tmp_path / "mine", 10)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "image,mos,split\n" + "".join(f"{n},{m},{'test' if i < 5 else 'train'}\n" for i, (n, m) in enumerate(rows))
    )
    code, out, err = run(
        capsys,
        "eval",
        "--model",
        "gamma-test",
        "--dataset",
        "folder+csv",
        "--data-root",
        str(tmp_path / "mine"),
        "--csv",
        str(labels),
        "--mos-range",
        "1",
        "5",
        "--scene",
        "face",
        "--lower-better",
        "--crops",
        "1",
        "--plot",
        str(tmp_path / "plots"),
    )
    assert code == 0, err
    (result,) = json.loads(out)
    assert result["n"] == 5
    with Image.open(tmp_path / "plots/folder-csv.png") as im:
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    dots = (pixels == (0x1F, 0x77, 0xB4)).all(axis=1).sum()  # the scatter's colour: 5 dots and the legend
    assert dots >= 5 * 9


def test_own_dataset_takes_the_same_keys_on_the_command_line_and_in_python(capsys, tmp_path):
    """`--dataset folder+csv` with --image-column, --mos-column and --resize is `user_dataset` with those keys (as a
    training config's entry): the same predictions, and the resize applied (another resize changes them)."""
    rows = photos(tmp_path / "mine", 20)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,quality\n" + "".join(f"{n},{m}\n" for n, m in rows))
    keys = {"csv": str(labels), "mos_range": [1, 5], "scene": "face", "image_column": "file", "mos_column": "quality"}
    flags = ["--csv", str(labels), "--mos-range", "1", "5", "--scene", "face"]
    flags += ["--image-column", "file", "--mos-column", "quality", "--crops", "2"]
    predictions = {}
    for resize in (60, 100):
        preds = tmp_path / f"preds{resize}.csv"
        code, _, err = run(
            capsys, "eval", "--model", "gamma-test", "--dataset", "folder+csv", "--data-root", str(tmp_path / "mine"),
            *flags, "--resize", str(resize), "--save-predictions", str(preds),
        )  # fmt: skip
        assert code == 0, err
        with open(preds, newline="") as f:
            predictions[resize] = [(r["image"], float(r["prediction"])) for r in csv.DictReader(f)]
    spec, root = user_dataset({**keys, "resize": 60, "name": "mine"}, tmp_path / "mine")
    assert (spec.name, spec.resize, spec.lower_better, root) == ("mine", 60, False, tmp_path / "mine")
    (result,) = evaluate(create_model("gamma-test"), [spec], root, crops=2)
    assert [(image, score) for image, _, _, score in result.predictions] == predictions[60]
    assert [s for _, s in predictions[60]] != [s for _, s in predictions[100]]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"csv": "x.csv", "mos_range": [1, 5]}, "own dataset 'folder\\+csv': missing scene"),
        ({"csv": "x.csv", "mos_range": [1, 5], "scene": "face", "colour": 1}, "unknown colour"),
        ({"csv": "x.csv", "mos_range": [5], "scene": "face"}, r"mos_range must be \[low, high\], got \[5\]"),
        ({"csv": "x.csv", "mos_range": [1, 5], "scene": "face", "resize": 0}, "resize must be a positive"),
        ({"csv": "x.csv", "mos_range": [1, 5], "scene": "face", "lower_better": "no"}, "lower_better must be true"),
        ({"csv": "x.csv", "mos_range": [1, 5], "scene": "space"}, "unknown scene 'space'"),
    ],
)
def test_own_dataset_errors(values, message):
    with pytest.raises(ValueError, match=message):
        user_dataset(values, default_name="folder+csv")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "koniq"], "unknown dataset 'koniq'"),
        (["--dataset", "kadid10k", "--split", "11"], "kadid10k has 10 random splits; --split 11 is out of range"),
        (["--dataset", "folder+csv"], "folder+csv needs --csv FILE, --mos-range LO HI and --scene S"),
        (["--dataset", "live"], "live: no folder databaserelease2 or LIVE in"),
        (["--dataset", "kadid10k", "--crops", "0"], "--crops must be"),
    ],
)
def test_usage_errors_exit_2(capsys, kadid, argv, message):
    code, out, err = run(capsys, "eval", "--model", "gamma-test", "--data-root", str(kadid), *argv)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


def test_no_test_image_found_is_an_error_before_scoring(capsys, kadid):
    for image in (kadid / "kadid10k/images").iterdir():
        image.unlink()
    code, out, err = eval_kadid(capsys, kadid)
    assert code == 2 and out == ""
    assert "kadid10k: none of its 4 test images is in" in err and "check --data-root" in err


def test_list_datasets(capsys):
    code, out, _ = run(capsys, "list", "datasets")
    lines = dict(line.split("\t", 1) for line in out.splitlines())
    assert code == 0 and len(lines) == 14
    assert lines["live"].startswith("natural\t779 images\tMOS [1, 100], lower is better\trandom split")
    assert lines["ava"].startswith("aesthetic\t255530 images\tMOS [0, 10], higher is better\tofficial split")
    assert "--csv FILE" in lines["folder+csv"]


def test_eval_a_dead_worker_is_one_line(capsys, monkeypatch, kadid):
    from gamma_iqa.engine import scoring

    decode = scoring._Images.__getitem__

    def dying(self, i):
        if i == 1:
            os._exit(3)  # in the (forked) DataLoader worker, as one killed for memory
        return decode(self, i)

    monkeypatch.setattr(scoring._Images, "__getitem__", dying)
    code, out, err = eval_kadid(capsys, kadid, "--workers", "1", "--batch-size", "1", "--crops", "center")
    lines = [line for line in err.splitlines() if "error" in line]
    assert code == 1 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("gamma-iqa eval: error: a decoding worker (pid ")
    assert lines[0].endswith(
        "died unexpectedly (exit code 3: out of memory?); rerun with fewer --workers or --workers 0"
    )
