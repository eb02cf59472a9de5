"""Dataset readers on tiny copies of each release's native layout, splits and the meta CSV, and the registry."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gamma_iqa.data import datasets as data
from gamma_iqa.data.datasets import (
    folder_csv_dataset,
    get_dataset,
    list_datasets,
    load_records,
    register_dataset,
    select,
)

sio = pytest.importorskip("scipy.io", reason="the LIVE readers need scipy (pip install 'gamma-iqa[data]')")
openpyxl = pytest.importorskip("openpyxl", reason="the CSIQ/SPAQ readers need openpyxl (pip install 'gamma-iqa[data]')")


def image(path, seed=0, size=(24, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def xlsx(path, rows, sheet="Sheet1"):
    path.parent.mkdir(parents=True, exist_ok=True)
    book = openpyxl.Workbook()
    ws = book.active
    ws.title = sheet
    for row in rows:
        ws.append(row)
    book.save(path)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# Each builder writes a release's label files and a few of its images under `root`, and returns the records a reader
# must find: {image path relative to the dataset folder: raw MOS}.
def build_live(root):
    d = root / "databaserelease2"
    scores = np.linspace(1, 100, 982)
    orgs = np.ones(982)
    want = {}
    for i, name in [
        (0, "jp2k/img1.bmp"),
        (226, "jp2k/img227.bmp"),
        (227, "jpeg/img1.bmp"),
        (460, "wn/img1.bmp"),
        (634, "gblur/img1.bmp"),
        (981, "fastfading/img174.bmp"),
    ]:
        orgs[i] = 0
        want[name] = scores[i]
        image(d / name, i)
    sio.savemat(d / "dmos_realigned.mat", {"dmos_new": scores[None], "orgs": orgs[None], "dmos_std": scores[None]})
    return want


def build_csiq(root):
    d = root / "CSIQ"
    rows = [
        ("1600", "noise", 1, 0.06),
        ("aerial_city", "jpeg 2000", 3, 0.4),
        ("1600", "jpeg", 2, 0.3),
        ("cactus", "fnoise", 5, 0.8),
        ("cactus", "blur", 4, 0.7),
        ("woman", "contrast", 2, 0.2),
    ]
    files = [
        "awgn/1600.AWGN.1.png",
        "jpeg2000/aerial_city.jpeg2000.3.png",
        "jpeg/1600.JPEG.2.png",
        "fnoise/cactus.fnoise.5.png",
        "blur/cactus.BLUR.4.png",
        "contrast/woman.contrast.2.png",
    ]
    sheet = [["CSIQ DMOS"], [], ["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"]]
    sheet += [[1600 if n == "1600" else n, 1, t, lev, 0.01, m] for n, t, lev, m in rows]  # XLSX keeps 1600 a number
    xlsx(d / "csiq.DMOS.xlsx", sheet, "all_by_image")
    for i, f in enumerate(files):
        image(d / "dst_imgs" / f, i)
    return {f"dst_imgs/{f}": m for f, (*_, m) in zip(files, rows, strict=True)}


def build_tid2013(root):
    d = root / "tid2013"
    write(d / "mos_with_names.txt", "5.51429 i01_01_1.bmp\n4.5 i01_02_3.bmp\n0.24242 i25_24_5.bmp\n")
    image(d / "distorted_images/i01_01_1.bmp", 1)
    image(d / "distorted_images/I25_24_5.BMP", 2)  # the release mixes the case of names
    image(d / "reference_images/I01.BMP", 3)
    return {
        "distorted_images/i01_01_1.bmp": 5.51429,
        "distorted_images/i01_02_3.bmp": 4.5,
        "distorted_images/I25_24_5.BMP": 0.24242,
    }


def build_kadid10k(root):
    d = root / "kadid10k"
    write(d / "dmos.csv", "dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.57,0.496\nI81_25_05.png,I81.png,1.0,0\n")
    image(d / "images/I01_01_01.png")
    image(d / "images/I81_25_05.png", 1)
    return {"images/I01_01_01.png": 4.57, "images/I81_25_05.png": 1.0}


def build_livec(root):
    d = root / "ChallengeDB_release"
    names = [f"t{i}.bmp" for i in range(7)] + ["10.bmp", "100.bmp", "1164.bmp"]
    mos = np.arange(10, dtype=float) * 9.5
    cells = np.empty((len(names), 1), dtype=object)
    cells[:, 0] = names
    (d / "Data").mkdir(parents=True)
    sio.savemat(d / "Data/AllImages_release.mat", {"AllImages_release": cells})
    sio.savemat(d / "Data/AllMOS_release.mat", {"AllMOS_release": mos[None]})
    for n in names[7:]:
        image(d / "Images" / n)
    return {f"Images/{n}": m for n, m in zip(names[7:], mos[7:], strict=True)}


def build_koniq10k(root):
    d = root / "koniq10k"
    names = ["10004473376.jpg", "10007357496.jpg", "826373.jpg", "9996001596.jpg"]
    z = [62.3, 55.1, 10.2, 88.0]
    header = '"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"\n'
    write(
        d / "koniq10k_scores_and_distributions.csv",
        header + "".join(f'"{n}",0,1,2,3,4,10,3.1,0.5,{s}\n' for n, s in zip(names, z, strict=True)),
    )
    sets = ["training", "validation", "test", "training"]
    write(
        d / "koniq10k_distributions_sets.csv",
        '"image_name","MOS","set"\n' + "".join(f'"{n}",3.1,"{s}"\n' for n, s in zip(names, sets, strict=True)),
    )
    for n in names:
        image(d / "512x384" / n)
        image(d / "1024x768" / n)  # both versions present: the 512x384 one is the paper's
    return {f"512x384/{n}": s for n, s in zip(names, z, strict=True)}


def build_spaq(root):
    d = root / "SPAQ"
    xlsx(
        d / "Annotations/MOS and Image attribute scores.xlsx",
        [["Image name", "MOS", "Brightness"], ["00001.jpg", 48.86, 50], ["11125.jpg", 96.0, 40]],
    )
    image(d / "TestImage/00001.jpg")
    image(d / "TestImage/11125.jpg")
    return {"TestImage/00001.jpg": 48.86, "TestImage/11125.jpg": 96.0}


def build_gfiqa20k(root):
    d = root / "GFIQA-20k"
    write(d / "mos_rating.csv", "img_name,mos,variance\n831481558_0.png,0.5299,0.06\n788533744_1.png,0.9413,0.01\n")
    image(d / "image/831481558_0.png")
    image(d / "image/788533744_1.png")
    return {"image/831481558_0.png": 0.5299, "image/788533744_1.png": 0.9413}


def build_agiqa3k(root):
    d = root / "AGIQA-3K"
    write(
        d / "data.csv",
        "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align\n"
        "AttnGAN_normal_000.jpg,statue of a man,,,,0.9656,0.22,0.41,0.62\n"
        'sd1.5_lowstep_063.jpg,"a cat, anime style",,,anime style,3.5,0.5,2.1,0.3\n',
    )
    image(d / "AttnGAN_normal_000.jpg")
    image(d / "sd1.5_lowstep_063.jpg")
    return {"AttnGAN_normal_000.jpg": 0.9656, "sd1.5_lowstep_063.jpg": 3.5}


def build_uwiqa(root):
    d = root / "UWIQA"
    xlsx(d / "UWIQA.xlsx", [["image", "mos"], ["1.png", 0.3], ["2.png", 0.7], ["3.png", 0.5]])
    for i in (1, 2, 3):
        image(d / f"image/{i}.png", i)
    return {"image/1.png": 0.3, "image/2.png": 0.7, "image/3.png": 0.5}


def build_aadb(root):
    d = root / "AADB"
    lists = d / "imgListFiles_label"
    write(lists / "imgListTrainRegression_score.txt", "farm1_a.jpg 0.65\nfarm1_b.jpg 0.6\n")
    write(lists / "imgListValidationRegression_score.txt", "farm1_c.jpg 0.2\n")
    write(lists / "imgListTestNewRegression_score.txt", "farm1_d.jpg 1\nfarm1_e.jpg 0\n")
    for n in "abcde":
        image(d / f"datasetImages_originalSize/farm1_{n}.jpg")
    return {
        f"datasetImages_originalSize/farm1_{n}.jpg": s for n, s in zip("abcde", [0.65, 0.6, 0.2, 1, 0], strict=True)
    }


def build_ava(root):
    d = root / "AVA_dataset"
    write(
        d / "AVA.txt",
        "1 953619 0 1 5 17 38 36 15 6 5 1 1 22 1396\n"
        "2 953958 10 7 15 26 26 21 10 8 1 2 15 21 1396\n"
        "3 954184 0 0 0 0 0 0 0 0 0 0 0 0 1396\n"  # no votes: no MOS
        "4 954113 0 0 0 1 2 3 4 5 6 7 0 0 1396\n",
    )
    write(d / "aesthetics_image_lists/generic_test.jpgl", "953958\n954113\n")
    for n in ("953619", "953958", "954113"):
        image(d / f"images/{n}.jpg")
    votes = {
        "953619": [0, 1, 5, 17, 38, 36, 15, 6, 5, 1],
        "953958": [10, 7, 15, 26, 26, 21, 10, 8, 1, 2],
        "954113": [0, 0, 0, 1, 2, 3, 4, 5, 6, 7],
    }
    return {f"images/{n}.jpg": np.dot(np.arange(1, 11), v) / sum(v) for n, v in votes.items()}


def build_pipal(root):
    d = root / "PIPAL"
    write(d / "Train_Label/A0001.txt", "A0001_00_00.bmp,1520.0648\nA0001_00_01.bmp,1437.0798\n")
    write(d / "Train_Label/A0002.txt", "A0002_10_02.bmp,916.7136\n")
    image(d / "Train_Ref/A0001.bmp")
    for n in ("A0001_00_00", "A0001_00_01"):
        image(d / f"Distortion_1/{n}.bmp")
    image(d / "Distortion_3/A0002_10_02.bmp")
    return {
        "Distortion_1/A0001_00_00.bmp": 1520.0648,
        "Distortion_1/A0001_00_01.bmp": 1437.0798,
        "Distortion_3/A0002_10_02.bmp": 916.7136,
    }


BUILDERS = {name[6:]: fn for name, fn in list(globals().items()) if name.startswith("build_")}


def test_every_registered_dataset_has_a_native_layout_test():
    assert sorted(BUILDERS) == sorted(n for n in list_datasets() if n != data.FOLDER_CSV)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_reader_reads_the_native_layout(tmp_path, name):
    spec = get_dataset(name)
    want = BUILDERS[name](tmp_path)
    folder, records = load_records(spec, tmp_path)
    assert {r.image: r.mos for r in records} == pytest.approx(want)
    assert len(records) == len(want)  # nothing extra: reference copies, training images, unrated images are out
    for r in records:
        assert r.path == folder / r.image
        lo, hi = spec.mos_range
        y = (r.mos - lo) / (hi - lo)
        assert r.mos_norm == pytest.approx(1 - y if spec.lower_better else y)
    # The split file is written beside the labels and read back identically on the next run.
    meta = folder / f"gamma-iqa-{name}.csv"
    assert meta.is_file()
    assert load_records(spec, tmp_path)[1] == records


def test_images_are_found_where_they_are(tmp_path):
    # Every listed image that the builders created resolves to an existing file (the rest are reported missing).
    for name, build in BUILDERS.items():
        root = tmp_path / name
        build(root)
        _, records = load_records(get_dataset(name), root)
        present = [r for r in records if r.path.is_file()]
        assert len(present) >= len(records) - 1, name  # TID2013's tiny copy leaves one image out on purpose


def test_official_splits(tmp_path):
    build_koniq10k(tmp_path)
    _, records = load_records(get_dataset("koniq10k"), tmp_path)
    assert {r.image.split("/")[1]: r.splits for r in records} == {
        "10004473376.jpg": ("train",),
        "10007357496.jpg": ("train",),
        "826373.jpg": ("test",),
        "9996001596.jpg": ("train",),
    }
    build_aadb(tmp_path)
    _, records = load_records(get_dataset("aadb"), tmp_path)
    assert sorted(r.image[-5] for r in select(records, 1, "test")) == ["d", "e"]
    build_ava(tmp_path)
    _, records = load_records(get_dataset("ava"), tmp_path)
    assert sorted(r.image for r in select(records, 1, "test")) == ["images/953958.jpg", "images/954113.jpg"]
    with pytest.raises(ValueError, match=r"ava has the official split; `split` 2 is out of range"):
        select(records, 2, name="ava")


def test_random_splits_are_seeded_80_20_and_independent_of_label_order():
    names = [f"img{i:03d}.png" for i in range(103)]
    splits = data.make_splits(names)
    assert all(len(s) == 10 for s in splits)
    for k in range(10):
        assert sum(s[k] == "test" for s in splits) == 103 - round(0.8 * 103)
    assert len({tuple(s[k] for s in splits) for k in range(10)}) == 10  # ten different splits
    shuffled = names[::-1]
    again = dict(zip(shuffled, data.make_splits(shuffled), strict=True))
    assert [again[n] for n in names] == splits


def test_edited_split_file_is_used_and_a_broken_one_is_an_error(tmp_path):
    build_kadid10k(tmp_path)
    spec = get_dataset("kadid10k")
    folder, _ = load_records(spec, tmp_path)
    meta = folder / "gamma-iqa-kadid10k.csv"
    lines = meta.read_text().splitlines()
    assert lines[0].startswith("# gamma-iqa split file ")  # the label files it was drawn from
    assert lines[1].split(",") == ["image", "mos", "mos_norm", *[f"split_{k:02d}" for k in range(1, 11)]]
    meta.write_text(  # edited by hand, without that line: used as it is
        "image,mos,mos_norm,split_01\nimages/I01_01_01.png,4.57,0.8925,test\nimages/I81_25_05.png,1,0,train\n"
    )
    _, records = load_records(spec, tmp_path)
    assert [r.image for r in select(records, 1)] == ["images/I01_01_01.png"]
    meta.write_text("image,mos,mos_norm,split_01\nimages/I01_01_01.png,4.57,0.8925,val\n")
    with pytest.raises(ValueError, match="line 2: split values must be train or test"):
        load_records(spec, tmp_path)


def test_a_registered_releases_split_file_follows_its_label_files(tmp_path):
    build_kadid10k(tmp_path)
    spec = get_dataset("kadid10k")
    loaded = data.load_splits(spec, tmp_path)
    assert loaded.state == "written"
    recorded = json.loads(loaded.path.read_text().splitlines()[0].removeprefix("# gamma-iqa split file "))
    [label_file] = recorded["files"]  # the label file the reader read, relative to the dataset folder
    assert data.load_splits(spec, tmp_path).state == "read"
    labels = loaded.folder / label_file
    before = {r.image: r.mos for r in loaded.records}
    labels.write_text(labels.read_text().replace(",4.57,", ",1.5,"))  # one MOS changed in the release's labels
    again = data.load_splits(spec, tmp_path)
    assert again.state == f"rebuilt: {Path(label_file).name} changed since it was written"
    changed = {r.image: r.mos for r in again.records if r.mos != before[r.image]}
    assert changed == {"images/I01_01_01.png": 1.5}
    assert data.load_splits(spec, tmp_path).state == "read"


def test_read_only_dataset_folder_writes_the_split_file_to_the_cache(tmp_path, monkeypatch):
    build_kadid10k(tmp_path)
    monkeypatch.setenv("GAMMA_IQA_HOME", str(tmp_path / "home"))
    folder = tmp_path / "kadid10k"
    write_meta = data._write_meta

    def read_only_dataset_folder(path, records, source=None):
        if path.parent == folder:  # (chmod cannot make a folder read-only for root, who runs CI)
            raise PermissionError(f"read-only: {path}")
        write_meta(path, records, source)

    monkeypatch.setattr(data, "_write_meta", read_only_dataset_folder)
    _, records = load_records(get_dataset("kadid10k"), tmp_path)
    assert not (folder / "gamma-iqa-kadid10k.csv").exists()
    (cached,) = (tmp_path / "home/meta").glob("gamma-iqa-kadid10k-*.csv")
    assert len(cached.read_text().splitlines()) == 2 + len(records)  # its source line, the header, the records
    cached.write_text("image,mos,mos_norm,split_01\nimages/I81_25_05.png,1,0,test\n")  # the cache is read back
    assert [r.image for r in load_records(get_dataset("kadid10k"), tmp_path)[1]] == ["images/I81_25_05.png"]


def test_folder_csv(tmp_path):
    image(tmp_path / "a.png")
    image(tmp_path / "sub/b.png", 1)
    write(tmp_path / "labels.csv", "image,mos,split\na.png,2,test\nsub/b.png,4.5,train\n")
    spec = folder_csv_dataset(tmp_path / "labels.csv", mos_range=(1, 5), scene="face", lower_better=True)
    folder, records = load_records(spec, tmp_path)
    assert folder == tmp_path and [(r.image, r.mos_norm) for r in records] == [("a.png", 0.75), ("sub/b.png", 0.125)]
    assert [r.image for r in select(records)] == ["a.png"]
    write(tmp_path / "bad.csv", "file,score\na.png,2\n")
    with pytest.raises(data.LabelFileError, match=r"bad.csv, line 1: no column 'image' in the header \(file, score\)"):
        load_records(folder_csv_dataset(tmp_path / "bad.csv", mos_range=(1, 5), scene="face"), tmp_path / "sub")


def test_registry():
    assert list_datasets()[:12] == [
        "live",
        "csiq",
        "tid2013",
        "kadid10k",
        "livec",
        "koniq10k",
        "spaq",
        "gfiqa20k",
        "agiqa3k",
        "uwiqa",
        "aadb",
        "ava",
    ]
    assert {n: get_dataset(n).scene for n in ("live", "agiqa3k", "uwiqa", "gfiqa20k", "ava")} == {
        "live": "natural",
        "agiqa3k": "aigc",
        "uwiqa": "underwater",
        "gfiqa20k": "face",
        "ava": "aesthetic",
    }
    assert [n for n in list_datasets()[:-1] if get_dataset(n).lower_better] == ["live", "csiq"]
    assert {n: get_dataset(n).resize for n in list_datasets()[:-1] if get_dataset(n).resize} == {
        "spaq": 384,
        "uwiqa": 224,
        "ava": 224,
    }
    assert get_dataset("KonIQ10K") is get_dataset("koniq10k")
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(get_dataset("live"))
    with pytest.raises(ValueError, match="unknown dataset 'koniq'; valid: live, csiq"):
        get_dataset("koniq")
    with pytest.raises(ValueError, match="unknown scene 'space'"):
        dataclasses.replace(get_dataset("live"), name="x", scene="space")


# Every field of every registered dataset, pinned: (title, scene, mos_range, lower_better, num_images, folders, reader
# without its read_ prefix, split, resize), as the positional registrations had them before they became keyword calls.
REGISTRY = {
    "live": ("LIVE", "natural", (1, 100), True, 779, ("databaserelease2", "LIVE"), "live", "random", None),
    "csiq": ("CSIQ", "natural", (0, 1), True, 866, ("CSIQ",), "csiq", "random", None),
    "tid2013": ("TID2013", "natural", (0, 9), False, 3000, ("tid2013",), "tid2013", "random", None),
    "kadid10k": ("KADID", "natural", (1, 5), False, 10125, ("kadid10k", "KADID-10k"), "kadid", "random", None),
    "livec": ("LIVEC", "natural", (0, 100), False, 1162, ("ChallengeDB_release", "LIVEC"), "livec", "random", None),
    "koniq10k": ("KonIQ", "natural", (0, 100), False, 10073, ("koniq10k", "KonIQ-10k"), "koniq", "official", None),
    "spaq": ("SPAQ", "natural", (0, 100), False, 11125, ("SPAQ",), "spaq", "random", 384),
    "gfiqa20k": ("GFIQA-20k", "face", (0, 1), False, 19998, ("GFIQA-20k", "GFIQA"), "name_mos_table", "random", None),
    "agiqa3k": ("AGIQA-3k", "aigc", (0, 5), False, 2982, ("AGIQA-3K", "AGIQA3K"), "agiqa3k", "random", None),
    "uwiqa": ("UWIQA", "underwater", (0, 1), False, 890, ("UWIQA",), "name_mos_table", "random", 224),
    "aadb": ("AADB", "aesthetic", (0, 1), False, 9958, ("AADB",), "aadb", "official", None),
    "ava": ("AVA", "aesthetic", (0, 10), False, 255530, ("AVA_dataset", "AVA"), "ava", "official", 224),
    "pipal": ("PIPAL", "natural", (900, 1900), False, 23200, ("PIPAL",), "pipal", "random", None),
}


def test_registry_fields_are_pinned():
    assert list_datasets() == [*REGISTRY, "folder+csv"]
    for name, expected in REGISTRY.items():
        spec = get_dataset(name)
        fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
        fields["reader"] = fields["reader"].__name__.removeprefix("read_")
        assert fields.pop("name") == name
        assert (fields.pop("label_file"), fields.pop("label_columns")) == (None, ())  # own data's fields
        assert tuple(fields.values()) == expected, name


def test_missing_release_files_are_one_line_errors(tmp_path):
    (tmp_path / "kadid10k").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no dmos.csv under .*kadid10k: is this the dataset's release folder"):
        load_records(get_dataset("kadid10k"), tmp_path)
    with pytest.raises(FileNotFoundError, match=r"live: no folder databaserelease2 or LIVE in"):
        load_records(get_dataset("live"), tmp_path)


def test_missing_optional_package_names_it(tmp_path, monkeypatch):
    build_spaq(tmp_path)
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # makes `import openpyxl` fail as if it were not installed
    with pytest.raises(
        ImportError, match=r"needs openpyxl: pip install openpyxl \(or pip install 'gamma-iqa\[data\]'\)"
    ):
        load_records(get_dataset("spaq"), tmp_path)


def test_release_unpacked_one_folder_deeper_and_the_shallowest_label_file_wins(tmp_path):
    want = build_kadid10k(tmp_path / "kadid10k")  # kadid10k/kadid10k/..., as a zip often unpacks
    write(tmp_path / "kadid10k/backup/old/dmos.csv", "dist_img,ref_img,dmos,var\nold.png,I01.png,3,0\n")
    folder, records = load_records(get_dataset("kadid10k"), tmp_path)
    assert folder == tmp_path / "kadid10k"
    assert {r.image: r.mos for r in records} == {f"kadid10k/{k}": v for k, v in want.items()}
    assert all(r.path.is_file() for r in records)
