"""ONNX export (`gamma-iqa export`) and the onnxruntime scoring backend: same scores as PyTorch, sidecar, errors."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="onnx not installed (pip install 'gamma-iqa[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'gamma-iqa[onnx]')")

import gamma_iqa  # noqa: E402
from gamma_iqa.models import export as export_module  # noqa: E402
from gamma_iqa.models.export import OPSET, export_onnx, export_scenes, sidecar_path  # noqa: E402
from gamma_iqa.models.state import state_sha256  # noqa: E402

from .conftest import images, perturb, run_cli  # noqa: E402

TOLERANCE = 1e-4  # the bound on |onnxruntime - PyTorch| per score


@pytest.fixture(scope="module")
def lite() -> gamma_iqa.GammaLite:
    return gamma_iqa.create_model("gamma-lite").eval()  # the shipped weights, in the package


@pytest.fixture(scope="module")
def tiny_multi() -> gamma_iqa.Gamma:
    model = gamma_iqa.create_model("gamma-test").eval()  # six scenes, each its own prompt set
    perturb(model)  # MoAE experts, routers and scales away from their initial values: every part counts
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, lite, tiny_multi) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    out = {}
    for name, model in (("gamma-lite", lite), ("gamma-test", tiny_multi)):
        out[name] = folder / f"{name}.onnx"
        export_onnx(model, out[name])
    return out


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $GAMMA_IQA_HOME: the backend's export cache goes there."""
    monkeypatch.setenv("GAMMA_IQA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def run_onnx(path: Path, crops: np.ndarray, scene: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["scores", "levels"], {"crops": crops, "scene": scene})


@pytest.mark.parametrize("name", ["gamma-lite", "gamma-test"])
@pytest.mark.parametrize("batch", [1, 7])
def test_onnxruntime_scores_equal_pytorch(name, batch, exported, lite, tiny_multi):
    model = lite if name == "gamma-lite" else tiny_multi
    scenes = export_scenes(model)
    x = images(batch, model.image_size, seed=batch)
    index = np.arange(batch, dtype=np.int64) % len(scenes)  # every scene of a multi-scene model, mixed in a batch
    if batch == 1:
        index[:] = len(scenes) - 1
    with torch.inference_mode():
        want, want_levels = model(x, [scenes[i] for i in index], levels=True)
    normalised = ((x - model.mean) / model.std).numpy()
    got, got_levels = run_onnx(exported[name], normalised, index)
    assert got.shape == (batch,) and got_levels.shape == (batch, 5)
    assert np.abs(got - want.numpy()).max() < TOLERANCE
    assert np.abs(got_levels - want_levels.numpy()).max() < TOLERANCE
    assert len(set(np.round(got, 6))) == batch  # distinct images (and scenes) give distinct scores


def test_every_scene_of_a_multi_scene_model(exported, tiny_multi):
    scenes = export_scenes(tiny_multi)
    assert scenes[0] == tiny_multi.config.default_scene and sorted(scenes) == sorted(tiny_multi.scenes)
    x = images(1, tiny_multi.image_size, seed=3).expand(len(scenes), -1, -1, -1)  # one image under every scene
    with torch.inference_mode():
        want = torch.stack([tiny_multi(x[:1], s)[0] for s in scenes])
    got, _ = run_onnx(exported["gamma-test"], ((x - tiny_multi.mean) / tiny_multi.std).numpy(), np.arange(len(scenes)))
    assert np.abs(got - want.numpy()).max() < TOLERANCE
    assert len(set(np.round(got, 6))) == len(scenes)  # the scene input selects different prompt features


def test_sidecar(exported, lite):
    record = json.loads(sidecar_path(exported["gamma-lite"]).read_text())
    assert record["model"] == "gamma-lite" and record["kind"] == "gamma-lite"
    assert record["weights_sha256"] == state_sha256(lite)
    assert record["opset"] == OPSET
    assert record["scenes"] == ["natural"] and record["default_scene"] == "natural"
    assert record["inputs"]["crops"]["shape"] == ["N", 3, 224, 224]
    assert record["inputs"]["scene"]["dtype"] == "int64"
    assert record["outputs"]["levels"]["shape"] == ["N", 5]
    assert record["preprocessing"]["mean"] == pytest.approx(list(lite.config.mean))
    assert record["preprocessing"]["std"] == pytest.approx(list(lite.config.std))
    assert record["level_values"] == pytest.approx(lite.score_level.tolist())
    assert "10 random 224x224 crops" in record["preprocessing"]["crops"]


def test_export_one_scene(tmp_path, tiny_multi):
    path = tmp_path / "aigc.onnx"
    export_onnx(tiny_multi, path, scene="aigc")
    assert json.loads(sidecar_path(path).read_text())["scenes"] == ["aigc"]
    x = images(2, tiny_multi.image_size, seed=5)
    with torch.inference_mode():
        want = tiny_multi(x, "aigc")
    got, _ = run_onnx(path, ((x - tiny_multi.mean) / tiny_multi.std).numpy(), np.zeros(2, dtype=np.int64))
    assert np.abs(got - want.numpy()).max() < TOLERANCE


@pytest.mark.parametrize("crops", [10, "center"])
def test_backend_scores_equal_torch(crops, home, lite):
    x = images(3, 256, seed=7)
    want = lite.score(x, crops=crops, details=True)
    got = lite.score(x, crops=crops, details=True, backend="onnxruntime")
    for w, g in zip(want, got, strict=True):
        assert abs(w["score"] - g["score"]) < TOLERANCE
        assert abs(w["spread"] - g["spread"]) < TOLERANCE
        assert set(w) == set(g) and w["crops"] == g["crops"]
    assert len(list((home / "onnx").glob("gamma-lite-*.onnx"))) == 1  # exported once, into the cache


def test_backend_sessions_do_not_spin(home, tiny_multi):
    # Idle onnxruntime threads that spin take the core the decoding between forwards needs (benchmarks/README.md).
    from gamma_iqa.engine import onnxrt

    forward = onnxrt.OnnxForward(tiny_multi)
    assert forward.session.get_session_options().get_session_config_entry(onnxrt.SPINNING) == "0"


def test_backend_mixed_scenes_and_cache_key(home, tiny_multi):
    x = images(4, 80, seed=2)
    scenes = ["natural", "aigc", "face", None]
    want = tiny_multi.score(x, scene=scenes, crops=3)
    got = tiny_multi.score(x, scene=scenes, crops=3, backend="onnxruntime")
    assert np.abs(np.array(want) - np.array(got)).max() < TOLERANCE
    cached = list((home / "onnx").glob("*.onnx"))
    tiny_multi.score(x[:1], backend="onnxruntime")  # same weights: the cached file
    assert list((home / "onnx").glob("*.onnx")) == cached
    fresh = gamma_iqa.create_model("gamma-test")  # other weights: another file
    fresh.score(x[:1], backend="onnxruntime")
    assert len(list((home / "onnx").glob("*.onnx"))) == 2


def test_cli_score_backend_rows_and_provenance(capsys, home, tmp_path):
    from PIL import Image

    paths = []
    for i in range(2):
        path = tmp_path / f"im{i}.png"
        Image.fromarray((images(1, 96, seed=i)[0].permute(1, 2, 0).numpy() * 255).astype("uint8")).save(path)
        paths.append(str(path))
    rows = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.csv"
        argv = ["score", "--model", "gamma-test", "--workers", "0", "--backend", backend, "--output", str(out), *paths]
        code, _, err = run_cli(capsys, *argv)
        assert code == 0, err
        rows[backend] = list(csv.DictReader(io.StringIO(out.read_text())))
        record = json.loads(Path(f"{out}.provenance.json").read_text())
        assert record["backend"]["name"] == backend
    assert record["backend"]["onnxruntime"] == ort.__version__
    for t, o in zip(rows["torch"], rows["onnxruntime"], strict=True):
        assert set(t) == set(o) and t["path"] == o["path"] and t["crops"] == o["crops"]
        assert abs(float(t["score"]) - float(o["score"])) < TOLERANCE


def test_backend_refuses_what_it_cannot_do(home, tiny_multi):
    x = images(1, 64)
    with pytest.raises(ValueError, match="`backend` onnxruntime takes fixed-size crops"):
        tiny_multi.score(x, crops="none", backend="onnxruntime")
    with pytest.raises(ValueError, match="`backend` must be one of torch, onnxruntime"):
        tiny_multi.score(x, backend="tensorrt")


def test_a_built_forward_is_shared_and_still_checked(monkeypatch, home, tiny_multi):
    from gamma_iqa.engine import onnxrt
    from gamma_iqa.engine.scoring import Scorer

    first = Scorer(tiny_multi, backend="onnxruntime")
    monkeypatch.setattr(onnxrt, "cached_export", lambda *args, **kwargs: pytest.fail("exported (and hashed) again"))
    second = Scorer(tiny_multi, crops="center", backend=first.onnx)
    assert second.onnx is first.onnx and second.backend == first.backend
    assert Scorer(tiny_multi).onnx is None
    with pytest.raises(ValueError, match="`backend` onnxruntime takes fixed-size crops"):
        Scorer(tiny_multi, crops="none", backend=first.onnx)


def test_missing_extra_is_one_line(monkeypatch, home, tiny_multi, tmp_path):
    monkeypatch.setattr(export_module, "_importable", lambda module: module != "onnxruntime")
    with pytest.raises(ValueError, match=r"^`backend` onnxruntime: onnxruntime not installed.*gamma-iqa\[onnx\]'$"):
        tiny_multi.score(images(1, 64), backend="onnxruntime")
    with pytest.raises(ValueError, match=r"pip install 'gamma-iqa\[onnx\]'"):
        export_onnx(tiny_multi, tmp_path / "m.onnx")


def test_cli_export(capsys, tmp_path):
    out = tmp_path / "tiny.onnx"
    code, _, err = run_cli(capsys, "export", "--model", "gamma-test", "--scene", "natural,face", str(out))
    assert code == 0, err
    assert out.is_file() and json.loads((tmp_path / "tiny.json").read_text())["scenes"] == ["natural", "face"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--model", "gamma-test", "--scene", "moon"], "unknown scene 'moon'"),
        (["--model", "gamma-test", "--format", "tflite"], "--format tflite: unknown export format; known: onnx"),
    ],
)
def test_cli_export_errors(capsys, tmp_path, argv, message):
    code, out, err = run_cli(capsys, "export", *argv, str(tmp_path / "m.onnx"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("gamma-iqa export: error: ") and message in err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("where", ["missing-folder/m.onnx", "a-folder"])
def test_cli_export_unwritable(capsys, tmp_path, where):
    (tmp_path / "a-folder").mkdir()
    code, _, err = run_cli(capsys, "export", "--model", "gamma-test", str(tmp_path / where))
    assert code == 2 and err.count("\n") == 1 and "gamma-iqa export: error: cannot write" in err


@pytest.mark.slow
def test_gamma_vit_b16_export(tmp_path):
    model = gamma_iqa.create_model("gamma-vit-b16", pretrained=False).eval()  # random weights: the graph, not the model
    path = tmp_path / "b16.onnx"
    export_onnx(model, path)
    x = images(2, 224, seed=4)
    with torch.inference_mode():
        want = model(x, "natural")
    index = np.full(2, export_scenes(model).index("natural"), dtype=np.int64)
    got, _ = run_onnx(path, ((x - model.mean) / model.std).numpy(), index)
    assert np.abs(got - want.numpy()).max() < TOLERANCE


# --- the documented snippets reproduce `score --crops center` -------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def snippets(doc: str) -> list[str]:
    """The Python code blocks of `doc` (relative to the repository) that run an onnxruntime session."""
    blocks = (ROOT / doc).read_text().split("```python\n")[1:]
    return [b.split("```")[0] for b in blocks if "ort.InferenceSession" in b.split("```")[0]]


def test_docs_hold_the_snippets():
    assert len(snippets("docs/onnx.md")) == 2 and len(snippets("README.md")) == 1


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    """(H, W, 3) float in [0, 1]: smooth structure and noise, so that a resize changes the score."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = 0.5 + 0.4 * np.sin(x / (9 + seed))[..., None] * np.cos(y / (7 + seed))[..., None]
    return np.clip(base + rng.normal(0, 0.08, (height, width, 3)), 0, 1)


@pytest.fixture(scope="module")
def snippet_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("snippet-images")
    paths = {name: folder / f"{name}.png" for name in ("photo8", "small", "grey16", "alpha")}
    Image.fromarray((_photo(256, 320, 1) * 255).round().astype(np.uint8)).save(paths["photo8"])
    Image.fromarray((_photo(200, 300, 2) * 255).round().astype(np.uint8)).save(paths["small"])  # enlarged to 336x224
    grey = (_photo(240, 260, 3)[..., 0] * 65535).round().astype(np.uint16)  # values over 255: PIL's convert saturates
    Image.fromarray(grey).save(paths["grey16"])
    rgba = np.dstack([_photo(230, 230, 4), np.linspace(0.2, 1, 230)[None, :, None].repeat(230, 0)])
    Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA").save(paths["alpha"])
    assert Image.open(paths["grey16"]).mode.startswith("I")
    return list(paths.values())


def _run_snippet(code: str, onnx_file: Path, image: Path) -> float:
    names = {"gamma-lite.onnx": onnx_file, "gamma-lite.json": sidecar_path(onnx_file), "photo.jpg": image}
    for name, path in names.items():
        code = code.replace(f'"{name}"', repr(str(path)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "snippet", "exec"), {"__name__": "snippet"})  # our own documentation
    return float(out.getvalue().split()[-1])


@pytest.mark.parametrize(("doc", "which"), [("docs/onnx.md", 0), ("docs/onnx.md", 1), ("README.md", 0)])
def test_documented_snippet_equals_cli_center_crop(capsys, exported, snippet_images, doc, which):
    argv = ["score", "--model", "gamma-lite", "--workers", "0", "--crops", "center"]
    code, out, err = run_cli(capsys, *argv, *map(str, snippet_images))
    assert code == 0, err
    want = {row["path"]: float(row["score"]) for row in csv.DictReader(io.StringIO(out))}
    code = snippets(doc)[which]
    for image in snippet_images:
        got = _run_snippet(code, exported["gamma-lite"], image)
        assert abs(got - want[str(image)]) < TOLERANCE, image.name


# --- the sidecar: default scene, direction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scene", "scenes", "default"),
    [
        (None, None, "natural"),  # every scene, the model's default first
        ("aigc,natural", ["aigc", "natural"], "natural"),  # the model's default, wherever it is listed
        ("aigc,face", ["aigc", "face"], "aigc"),  # not exported: the first listed
    ],
)
def test_sidecar_default_scene(tiny_multi, scene, scenes, default):
    assert tiny_multi.config.default_scene == "natural"
    table = export_scenes(tiny_multi, None if scene is None else scene.split(","))
    record = export_module.sidecar_record(tiny_multi, table, OPSET, "0" * 64)
    assert record["scenes"] == (scenes or table) and record["default_scene"] == default
    if scene is None:
        assert table[0] == default


def test_sidecar_direction_is_the_packages_lower_better(monkeypatch, lite):
    record = export_module.sidecar_record(lite, ["natural"], OPSET, "0" * 64)
    assert record["lower_better"] is False and "higher is better" in record["outputs"]["scores"]["meaning"]
    monkeypatch.setattr(lite, "lower_better", True, raising=False)
    record = export_module.sidecar_record(lite, ["natural"], OPSET, "0" * 64)
    assert record["lower_better"] is True and "lower is better" in record["outputs"]["scores"]["meaning"]


def test_sidecar_names_the_decoders_rendering_intent(monkeypatch, lite):
    from PIL import ImageCms

    from gamma_iqa.data import transforms
    from gamma_iqa.models import base

    assert transforms.RENDERING_INTENT is base.RENDERING_INTENT == ImageCms.Intent.RELATIVE_COLORIMETRIC
    assert all(base.INTENT_NAMES[int(i)] == i.name.lower().replace("_", " ") for i in ImageCms.Intent)
    pre = export_module.sidecar_record(lite, ["natural"], OPSET, "0" * 64)["preprocessing"]
    assert "sRGB (relative colorimetric intent;" in pre["decode"] and "perceptual" not in pre["decode"]
    monkeypatch.setattr(export_module, "RENDERING_INTENT", 0)  # the text follows the constant
    assert "sRGB (perceptual intent;" in export_module.preprocessing_record(lite)["decode"]
    doc = " ".join((ROOT / "docs/onnx.md").read_text().split())
    assert "to sRGB (relative colorimetric intent;" in doc and "perceptual intent" not in doc


def test_sidecar_says_which_resize(lite):
    pre = export_module.sidecar_record(lite, ["natural"], OPSET, "0" * 64)["preprocessing"]
    assert "a = -0.75" in pre["upscale"] and "align_corners=False" in pre["upscale"] and "float32" in pre["upscale"]
    assert "65535" in pre["decode"] and "alpha composited on white" in pre["decode"]


# --- export: refused in one line, before the export, and nothing left behind ----------------------------------------


def _cli_export_error(capsys, *argv: str) -> str:
    code, out, err = run_cli(capsys, "export", "--model", "gamma-test", *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("gamma-iqa export: error: "), err
    assert ".tmp" not in err  # never a name the user did not give
    return err


@pytest.mark.parametrize("scene", ["", " ", "natural,,face", "natural,"])
def test_cli_export_refuses_empty_scenes(capsys, tmp_path, scene):
    err = _cli_export_error(capsys, "--scene", scene, str(tmp_path / "m.onnx"))
    assert "--scene" in err and "empty scene name" in err
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_an_empty_scene_list(tmp_path, tiny_multi):
    with pytest.raises(ValueError, match=r"^`scene`: no scene given"):
        export_onnx(tiny_multi, tmp_path / "m.onnx", scene=[])
    with pytest.raises(ValueError, match=r"^`scene`: an empty scene name"):
        export_onnx(tiny_multi, tmp_path / "m.onnx", scene=["natural", ""])


def test_cli_export_sidecar_in_the_way(capsys, tmp_path):
    (tmp_path / "z.json").mkdir()
    err = _cli_export_error(capsys, str(tmp_path / "z.onnx"))
    assert f"cannot write {tmp_path / 'z.onnx'}: its sidecar {tmp_path / 'z.json'} is a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.json"]  # no z.onnx, no temporary file


@pytest.mark.parametrize("name", ["photo.jpg", "keep.png", "m.json", "m.ONNX.bak", "noext"])
def test_cli_export_refuses_a_name_not_ending_in_onnx(capsys, tmp_path, name):
    target = tmp_path / name
    target.write_bytes(b"the user's file")
    err = _cli_export_error(capsys, str(target))
    assert f"cannot write {target}: OUT must end in .onnx" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [name] and target.read_bytes() == b"the user's file"
    with pytest.raises(ValueError, match=r"the name must end in \.onnx"):
        export_module.check_export_path(target)


@pytest.mark.parametrize("folder", [".", ".."])
def test_cli_export_to_a_folder_names_it(capsys, monkeypatch, tmp_path, folder):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert _cli_export_error(capsys, folder).endswith(f"cannot write {folder}: it is a folder\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"] and list((tmp_path / "sub").iterdir()) == []


def test_cli_export_never_replaces_a_file_that_is_not_an_export(capsys, tmp_path):
    theirs = tmp_path / "theirs.onnx"  # another tool's model, no sidecar of ours beside it
    theirs.write_bytes(b"someone's model")
    err = _cli_export_error(capsys, str(theirs))
    assert (
        f"cannot write {theirs}: it exists and is not an earlier export (no sidecar of one, {tmp_path / 'theirs.json'})"
        in err
    )
    (tmp_path / "theirs.json").write_text('{"format": "their-tool/2"}')  # a sidecar, but not ours
    assert "theirs.json exists and is not an earlier export's" in _cli_export_error(capsys, str(theirs))
    mine = tmp_path / "photo.json"  # the user's own JSON where the sidecar of photo.onnx would go
    for text in ('{"title": "my photo"}', "not json", "[1, 2]", '{"format": 7}'):
        mine.write_text(text)
        err = _cli_export_error(capsys, str(tmp_path / "photo.onnx"))
        assert (
            f"cannot write {tmp_path / 'photo.onnx'}: its sidecar {mine} exists and is not an earlier export's" in err
        )
        assert mine.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.json", "theirs.json", "theirs.onnx"]
    assert theirs.read_bytes() == b"someone's model"


def test_cli_export_replaces_an_earlier_export(capsys, tmp_path):
    out = tmp_path / "m.onnx"
    for _ in range(2):  # the second replaces the first: its sidecar is ours
        code, _, err = run_cli(capsys, "export", "--model", "gamma-test", "--scene", "natural", str(out))
        assert code == 0, err
    out.unlink()  # an export's sidecar left alone (the .onnx deleted): replaced too
    code, _, err = run_cli(capsys, "export", "--model", "gamma-test", "--scene", "natural", str(out))
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx"]


def test_backend_cache_recovers_from_half_an_export(home, tiny_multi):
    from gamma_iqa.engine.onnxrt import cached_export

    path = cached_export(tiny_multi)
    sidecar_path(path).unlink()  # cut between its two moves: the .onnx without its sidecar
    assert cached_export(tiny_multi) == path and sidecar_path(path).is_file()


def test_cli_export_under_a_file(capsys, tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"not a folder")
    err = _cli_export_error(capsys, str(tmp_path / "photo.jpg" / "x.onnx"))
    assert f"{tmp_path / 'photo.jpg'} is a file, not a folder" in err
    err = _cli_export_error(capsys, str(tmp_path / "photo.jpg" / "sub" / "x.onnx"))
    assert f"{tmp_path / 'photo.jpg'} is a file, not a folder" in err
    err = _cli_export_error(capsys, str(tmp_path / "nope" / "x.onnx"))
    assert f"folder {tmp_path / 'nope'} does not exist" in err


@pytest.mark.parametrize("path", ["/sys/x.onnx", "/proc/nope.onnx"])
def test_cli_export_unwritable_system_folders(capsys, path):
    if not Path(path).parent.is_dir():
        pytest.skip(f"no {Path(path).parent} here")
    err = _cli_export_error(capsys, path)
    assert f"cannot write {path}: folder {Path(path).parent} is not writable" in err


def test_export_failing_late_leaves_nothing(monkeypatch, tmp_path, tiny_multi):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous export")
    earlier = json.dumps({"format": export_module.SIDECAR_FORMAT})  # an earlier export's: it may be replaced
    (tmp_path / "m.json").write_text(earlier)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_module, "sidecar_record", full_disk)
    message = f"cannot write {tmp_path / 'm.json'}: no space left on its device"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        export_onnx(tiny_multi, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx"]
    assert out.read_bytes() == b"the previous export" and (tmp_path / "m.json").read_text() == earlier


@pytest.mark.parametrize("where", ["a-file", "/sys/gamma-iqa", "/proc/gamma-iqa"])
def test_backend_cache_not_writable_is_one_line(capsys, monkeypatch, tmp_path, where):
    if where == "a-file":
        (tmp_path / "a-file").write_text("x")
        where = str(tmp_path / "a-file")
    elif not Path(where).parent.is_dir():
        pytest.skip(f"no {Path(where).parent} here")
    monkeypatch.setenv("GAMMA_IQA_HOME", where)
    image = tmp_path / "im.png"
    from PIL import Image

    Image.fromarray((_photo(80, 80, 5) * 255).astype(np.uint8)).save(image)
    argv = ["score", "--model", "gamma-test", "--workers", "0", "--backend", "onnxruntime", str(image)]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("gamma-iqa score: error: --backend onnxruntime: ") and "GAMMA_IQA_HOME" in err
    assert f"{where}/onnx" in err and ".tmp" not in err


# --- --backend onnxruntime: the backend's own refusals, on any machine -----------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "cuda"], "--backend onnxruntime scores on the CPU only; drop --device cuda"),
        (["--device", "cuda:1"], "--backend onnxruntime scores on the CPU only; drop --device cuda:1"),
        (["--dtype", "bf16"], "--backend onnxruntime scores in fp32 only; drop --dtype bf16"),
        (["--crops", "none"], "--backend onnxruntime takes fixed-size crops"),
    ],
)
@pytest.mark.parametrize("gpu", [False, True])
def test_cli_backend_refusals_come_first(capsys, monkeypatch, tmp_path, argv, message, gpu):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)  # a machine with a GPU, or without
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2 if gpu else 0)
    image = tmp_path / "im.png"
    from PIL import Image

    Image.fromarray((_photo(80, 80, 6) * 255).astype(np.uint8)).save(image)
    code, _, err = run_cli(capsys, "score", "--model", "gamma-test", "--backend", "onnxruntime", *argv, str(image))
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_cli_backend_scores_on_the_cpu_where_there_is_a_gpu(capsys, monkeypatch, home, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # auto would pick cuda; the backend takes the CPU
    image = tmp_path / "im.png"
    from PIL import Image

    Image.fromarray((_photo(80, 80, 7) * 255).astype(np.uint8)).save(image)
    for device in ([], ["--device", "auto"]):
        argv = ["score", "--model", "gamma-test", "--workers", "0", "--backend", "onnxruntime", *device, str(image)]
        code, out, err = run_cli(capsys, *argv)
        assert code == 0, err
        assert len(list(csv.DictReader(io.StringIO(out)))) == 1
