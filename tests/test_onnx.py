"""ONNX export (`gamma-iqa export`) and the onnxruntime scoring backend: same scores as PyTorch, sidecar, errors."""

from __future__ import annotations

import csv
import io
import json
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
