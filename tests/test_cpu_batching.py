"""gamma-lite's CPU forwards of several crops, and its depthwise layers' asymmetric padding through a zero tap.

A forward of one 224 crop leaves the CPU's kernels short of work, so a CPU Scorer puts at least the model's
`cpu_crops_per_forward` crops in each forward (4 for gamma-lite: 4 images at a centre crop), a fixed number padded at
the end, so that a score still does not depend on the batch size, the workers or its neighbours. Stride-2 depthwise
layers pad one pixel more after than before (TensorFlow's SAME); at inference the kernel gets a zero tap instead of the
input a padded copy, the same sums.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gamma_iqa
from gamma_iqa.engine.runtime import default_workers
from gamma_iqa.engine.scoring import Scorer
from gamma_iqa.models.effnet import ConvBN, same_pads
from gamma_iqa.models.lite import GammaLite

from .test_cpu_inference import lite


def photos(n: int) -> list[np.ndarray]:
    """n distinct uint8 RGB images of 300 x 260."""
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (260, 300, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def model() -> GammaLite:
    """gamma-lite, random backbone, experts perturbed (test_cpu_inference's `lite`)."""
    return lite().eval()


# ---- how many images a CPU forward holds ---------------------------------------------------------------------------
@pytest.mark.parametrize(("crops", "images"), [("center", 4), (1, 4), (3, 2), (4, 1), (10, 1), ("none", 1)])
def test_gamma_lite_cpu_forwards_hold_at_least_four_crops(model, crops, images):
    assert GammaLite.cpu_crops_per_forward == 4
    assert Scorer(model, crops=crops).per_forward == images


def test_a_model_without_the_attribute_keeps_one_image_per_cpu_forward(gamma_test_model):
    assert gamma_test_model.cpu_crops_per_forward == 1  # QualityModel's default
    assert Scorer(gamma_test_model, crops="center").per_forward == 1
    assert Scorer(gamma_test_model, crops=2).per_forward == 1


def test_centre_crop_scores_come_from_padded_forwards_of_four(model, monkeypatch):
    sizes: list[int] = []
    forward = model.forward

    def spy(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        sizes.append(len(x))
        return forward(x, *args, **kwargs)

    pictures = photos(6)
    monkeypatch.setattr(model, "forward", spy)
    one_by_one = model.score(pictures, crops="center", batch_size=1)
    assert sizes == [4, 4]  # 6 images: one full forward and one of 2 images and 2 zero images
    monkeypatch.undo()
    # The very scores of that padded forward: the last two images' centre crops beside two zero images.
    crops = torch.stack([torch.from_numpy(p[18:242, 38:262]).permute(2, 0, 1).float() / 255 for p in pictures[4:]])
    with torch.inference_mode():
        direct = model(torch.cat([crops, torch.zeros(2, 3, 224, 224)]))[:2]
    assert one_by_one[4:] == direct.tolist()


def test_centre_crop_scores_do_not_depend_on_batch_size_or_workers(model):
    pictures = photos(6)
    reference = model.score(pictures, crops="center", batch_size=1)
    assert model.score(pictures, crops="center", batch_size=5) == reference
    assert model.score(pictures[3:], crops="center", batch_size=2) == reference[3:]  # other neighbours, same scores


@pytest.mark.parametrize(
    ("cpus", "threads", "workers"), [(1, 1, 0), (1, 2, 0), (2, 2, 0), (2, 1, 1), (3, 3, 2), (3, 1, 2), (8, 4, 4)]
)
def test_up_to_two_cores_a_decoding_worker_only_on_a_core_the_forward_leaves(monkeypatch, cpus, threads, workers):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    assert default_workers() == workers


# ---- the zero tap --------------------------------------------------------------------------------------------------
def depthwise(kernel: int, channels: int = 6, seed: int = 0) -> ConvBN:
    """A stride-2 depthwise ConvBN with random weights and running statistics, in eval mode."""
    layer = ConvBN(channels, channels, kernel, stride=2, groups=channels)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.conv.weight.copy_(torch.randn(layer.conv.weight.shape, generator=g))
        layer.bn.weight.copy_(torch.rand(channels, generator=g) + 0.5)
        layer.bn.bias.copy_(torch.randn(channels, generator=g))
        layer.bn.running_mean.copy_(torch.randn(channels, generator=g))
        layer.bn.running_var.copy_(torch.rand(channels, generator=g) + 0.5)
    return layer.eval()


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("size", [(14, 14), (15, 14), (14, 15), (15, 15), (7, 8), (112, 112)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_zero_tap_equals_the_padded_copy_and_the_layer_as_written(kernel, size, channels_last, monkeypatch):
    layer = depthwise(kernel)
    x = torch.randn(2, 6, *size, generator=torch.Generator().manual_seed(1))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        tapped = layer(x)
        monkeypatch.setattr(ConvBN, "zero_tap", False)
        copied = layer(x)
        monkeypatch.setattr(ConvBN, "fold", False)
        written = layer(x)  # pad, conv, BatchNorm, ReLU6 as in training
    left, right, top, bottom = same_pads(x, kernel, 2)
    assert tapped.shape == (2, 6, -(-size[0] // 2), -(-size[1] // 2))
    assert torch.allclose(tapped, copied, rtol=0, atol=1e-6)  # the same sums; bit for bit on the machines here
    assert torch.allclose(tapped, written, rtol=1e-5, atol=1e-5)
    assert bool(layer._tapped[1]) == ((left, top) != (right, bottom))  # a tapped kernel only where pads differ


def test_zero_tapped_kernel_follows_new_weights():
    layer, other = depthwise(3, seed=0), depthwise(3, seed=5)
    x = torch.randn(1, 6, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        before = layer(x)
        ((rows_cols, tapped),) = layer._tapped[1].items()
        assert rows_cols == (1, 1) and tapped.shape == (6, 1, 4, 4)
        assert not tapped[:, 0, 0].any() and not tapped[:, 0, :, 0].any()  # a zero row above, a zero column left
        assert torch.equal(tapped[:, :, 1:, 1:], layer.folded()[0])
        layer.load_state_dict(other.state_dict())
        after = layer(x)
        expected = other(x)
    assert not torch.allclose(before, after) and torch.equal(after, expected)


def test_a_dense_layer_keeps_the_padded_copy():
    stem = ConvBN(3, 8, 3, stride=2).eval()  # groups 1: a zero tap made the stem slower (benchmarks/cpu_batch.py)
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        out = stem(x)
    weight, bias = stem.folded()
    assert stem._tapped == (None, {})
    assert torch.equal(out, F.relu6(F.conv2d(F.pad(x, same_pads(x, 3, 2)), weight, bias, stride=2)))


def test_the_shipped_model_scores_alike_with_and_without_the_zero_tap(monkeypatch):
    model = gamma_iqa.create_model("gamma-lite").eval()
    x = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        tapped = model(x)
        monkeypatch.setattr(ConvBN, "zero_tap", False)
        copied = model(x)
    assert torch.allclose(tapped, copied, rtol=0, atol=1e-6)


# ---- the benchmark behind the figures ------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _threads():
    """The benchmarks set torch's thread count; the rest of the session keeps its own."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_cpu_batch_benchmark_reports_every_size_and_equal_scores(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    bench = importlib.import_module("cpu_batch")
    result = bench.main(["--sizes", "1,2", "--rounds", "1", "--threads", "1"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert [s["crops_per_forward"] for s in result["sizes"]] == [1, 2]
    assert all(s["max_abs_score_diff"] <= 1e-6 and s["crops_per_s"] > 0 for s in result["sizes"])
    assert result["sizes"][0]["vs_smallest_size"] == 1.0
    assert ConvBN.zero_tap is True  # restored after the padded-copy runs
    with pytest.raises(SystemExit):
        bench.main(["--sizes", "0"])


def test_onnx_cpu_benchmark_times_the_scorers_forward_sizes(monkeypatch, capsys, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'gamma-iqa[onnx]')")
    monkeypatch.setenv("GAMMA_IQA_HOME", str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    result = importlib.import_module("onnx_cpu").main(["--skip-e2e", "--iters", "1", "--warmup", "0", "--threads", "1"])
    assert [(f["crops_per_image"], f["images_per_forward"]) for f in result["forward"]] == [(10, 1), (1, 4)]
    assert all(f["max_abs_score_diff_vs_torch_fp32"]["onnxruntime-fp32"] < 1e-5 for f in result["forward"])


def test_score_e2e_checks_the_cpu_targets_in_one_run(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    bench = importlib.import_module("score_e2e")
    result = bench.main(["--cpu-targets", "--images", "8", "--iters", "1", "--decode-sample", "2"])
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1]) == result
    rows = result["cpu_targets"]
    assert [(r["model"], r["crops"], r["threads"]) for r in rows] == [
        ("gamma-lite", "10", 2),
        ("gamma-lite", "center", 2),
        ("gamma-test", "center", 1),
        ("gamma-test", "10", 1),
        ("gamma-test", "center", 2),
    ]
    # On the CI machine's 2 cores one forward thread leaves the default workers a core
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) == 2:
        assert [r["workers"] for r in rows] == [0, 0, 1, 1, 0]
    assert [r["target"] for r in rows] == [5.0, 45.0, 0.8, 0.8, None]
    # 8 images are too few for a steady rate: a smoke run judges no target
    assert [r["met"] for r in rows] == [None] * 5 and result["all_met"] is None
    assert captured.err.count("(not judged: too few images)") == 4
    # 8 images are one loader batch: the rate is the whole run's, never a burst of rows timed against itself
    assert all(0 < r["images_per_s"] < 10 * r["decode_images_per_s"] for r in rows)
    assert "| gamma-lite | 10 | 2 |" in captured.err and "| gamma-test | center | 2 |" in captured.err
    for extra in (["--model", "gamma-test"], ["--crops", "10"], ["--workers", "2"], ["--threads", "1"], ["--compare"]):
        with pytest.raises(SystemExit):
            bench.main(["--cpu-targets", *extra])
        assert f"leave out {extra[0]}" in capsys.readouterr().err
