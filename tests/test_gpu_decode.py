"""benchmarks/gpu_decode.py on the CPU: the smoke run, its statistics on a decoder that differs, no decoder at all."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--device", "cpu", "--model", "gamma-test", "--size", "256x192", "--threads", "1"]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # its sibling imports (score_e2e, throughput)
    return importlib.import_module("gpu_decode")


def test_smoke_run_prints_every_figure_and_the_stand_in_matches_the_cpu_decoder():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_decode.py"), *SMALL, "--decoder", "stand-in"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["gpu_decoder"]["stand_in"] is True and "stand-in" in result["gpu_decoder"]["name"]
    assert result["device"] == "cpu" and "libjpeg-turbo" in result["cpu_decoder"]
    for name in ("4:2:0", "4:2:2", "4:4:4"):
        rates = result["decode_images_per_s"][name]
        assert rates["cpu"] > 0 and set(rates["gpu"]) == {"1", "2"} and all(v > 0 for v in rates["gpu"].values())
        assert result["pixels"][name] == {"max_abs": 0, "mean_abs": 0.0, "frac_differing": 0.0, "images": 3}
    assert len(result["pixels_by_quality"]) == 9  # 3 subsamplings x 3 qualities
    assert "grace_hopper.jpg" in result["real_photos"] and result["pixels"]["real"]["images"] >= 1
    scores = result["scores"]
    # The stand-in gives the CPU decoder's pixels: scores equal in every mode, and the same-box plumbing agrees
    # with model.score's own crops.
    for mode in ("center", "10_crops", "10_crops_same_boxes"):
        assert scores[mode] == {"max_abs": 0.0, "mean_abs": 0.0}
    assert scores["same_boxes_cpu_equals_score"] is True and scores["crops_moved"] == 0
    assert scores["images"] == 10 and scores["score_spread_cpu_10_crops"] > 0  # the images do score differently


def off_by_one(data: list[torch.Tensor]) -> list[torch.Tensor]:
    """PIL's pixels with every 5th value (in CHW order) raised by one where it can be: a decoder that differs."""
    from gamma_iqa.data.transforms import image_to_uint8, load_image

    out = []
    for d in data:
        t = image_to_uint8(load_image(d.numpy().tobytes())).contiguous()
        flat = t.view(-1)
        flat[::5] = (flat[::5].int() + 1).clamp(max=255).to(torch.uint8)
        out.append(t)
    return out


def test_statistics_measure_a_decoder_that_differs(bench, monkeypatch):
    fake = bench.Decoder("off by one", "0", torch.device("cpu"), off_by_one)
    monkeypatch.setitem(bench.LIBRARIES, "stand-in", lambda device: fake)
    result = bench.main([*SMALL, "--decoder", "stand-in", "--qualities", "90", "--rounds", "1", "--speed-images", "2"])
    assert result["gpu_decoder"]["name"] == "off by one"
    for stats in result["pixels"].values():
        assert stats["max_abs"] == 1
        assert 0.15 < stats["frac_differing"] < 0.2001  # every 5th value (rounded up), less those at 255 already
        assert stats["mean_abs"] == pytest.approx(stats["frac_differing"], abs=1e-6)  # each difference is 1
    scores = result["scores"]
    assert scores["crops_moved"] == scores["images"] == 4  # 3 generated + grace_hopper: each reseeds its crops
    assert scores["10_crops_same_boxes"]["max_abs"] > 0 and scores["center"]["max_abs"] > 0
    assert scores["same_boxes_cpu_equals_score"] is True


def test_without_a_gpu_decoder_it_says_why_and_still_times_the_cpu(bench, monkeypatch):
    def missing(device):
        raise ImportError("no such library here")

    for name in bench.LIBRARIES:
        monkeypatch.setitem(bench.LIBRARIES, name, missing)
    result = bench.main([*SMALL, "--qualities", "90", "--rounds", "1", "--speed-images", "2"])
    assert result["gpu_decoder"] is None
    assert result["gpu_decoder_error"] == {n: "ImportError: no such library here" for n in bench.LIBRARIES}
    assert all(set(r) == {"cpu"} and r["cpu"] > 0 for r in result["decode_images_per_s"].values())
    assert "pixels" not in result and "scores" not in result


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--size", "bogus"], "argument --size: must be WIDTHxHEIGHT with sides from 16 to 8192, got 'bogus'"),
        (["--size", "8x8"], "argument --size: must be WIDTHxHEIGHT with sides from 16 to 8192, got '8x8'"),
        (["--batch-sizes", "0"], "argument --batch-sizes: must be comma-separated whole numbers >= 1, got '0'"),
        (["--batch-sizes", "1,x"], "argument --batch-sizes: must be comma-separated whole numbers >= 1, got '1,x'"),
        (["--qualities", "90,101"], "argument --qualities: JPEG qualities run from 1 to 100, got '90,101'"),
        (["--distinct", "0"], "argument --distinct: must be a whole number >= 1, got '0'"),
        (["--photos", "/no/such.jpg"], "argument --photos: no such file: '/no/such.jpg'"),
    ],
)
def test_bad_options_are_one_line_before_any_work(bench, capsys, option, message):
    with pytest.raises(SystemExit) as exited:
        bench.parse_args([*SMALL, *option])
    assert exited.value.code == 2 and capsys.readouterr().err.splitlines()[-1].endswith(f": error: {message}")
