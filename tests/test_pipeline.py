"""The scoring pipeline's fast paths against the straightforward one: uint8 crops scaled on the device, forwards
queued before their scores are read. Scores must be equal to the last bit (==), on the CPU here and on CUDA (skipped
without a GPU; `pytest tests/test_pipeline.py` on a GPU machine).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gamma_iqa
from gamma_iqa.data.inputs import Entry, expand_paths
from gamma_iqa.data.transforms import image_to_tensor, make_crops
from gamma_iqa.engine import scoring
from gamma_iqa.engine.scoring import Scorer

from .conftest import images

PER_FORWARD = 4


@pytest.fixture(scope="module")
def model(perturbed_model) -> gamma_iqa.Gamma:
    """The perturbed gamma-test (conftest's `perturbed_model`)."""
    return perturbed_model


@pytest.fixture
def several(monkeypatch) -> None:
    """Several images per CPU forward, so that a forward mixes uint8 and float items and is padded."""
    monkeypatch.setattr(scoring, "IMAGES_PER_FORWARD", {**scoring.IMAGES_PER_FORWARD, "cpu": PER_FORWARD})


def photo(i: int, h: int = 90, w: int = 120) -> np.ndarray:
    """A distinct uint8 (h, w, 3) image."""
    t = images(1, size=max(h, w), seed=10 + i)[0, :, :h, :w]
    return (t * 255).round().byte().permute(1, 2, 0).numpy()


def mixed_inputs() -> list:
    """uint8 arrays (PIL images inside: uint8 crops), one smaller than a crop (enlarged: float) and a float tensor."""
    small = photo(9, 40, 50)  # under gamma-test's 64-pixel crop: enlarged in float
    tensor = torch.from_numpy(photo(8)).permute(2, 0, 1).float() / 255  # a float image: float crops
    return [photo(0), photo(1), small, photo(2), tensor, photo(3)]


def scores_with(model, monkeypatch, inputs, uint8: bool | None, **options) -> list:
    monkeypatch.setattr(Scorer, "uint8_crops", uint8)
    return model.score(inputs, **options)


def test_the_unit_table_is_the_cpu_division_and_a_reciprocal_product_is_not():
    values = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(scoring._UNIT, values.float().div(255))  # == image_to_tensor of every pixel value
    grey = np.repeat(values.numpy().reshape(16, 16, 1), 3, axis=2)  # every value once, as RGB
    assert torch.equal(scoring._UNIT, image_to_tensor(Image.fromarray(grey))[0].flatten())
    # CUDA divides by a scalar as a product with its reciprocal: 1 ulp off for some values, hence the table.
    reciprocal = torch.tensor(1.0) / torch.tensor(255.0)
    assert (values.float() * reciprocal != scoring._UNIT).sum() > 0


@pytest.mark.parametrize("crops", [3, "center", "none"])
def test_uint8_crops_scale_to_the_float_crops(crops):
    image = Image.fromarray(photo(4))
    float_crops = make_crops(image, crops, 64, seed=5).crops
    u8 = make_crops(image, crops, 64, seed=5, uint8=True).crops
    assert u8.dtype == torch.uint8 and float_crops.dtype == torch.float32
    assert torch.equal(scoring._to_unit(u8, scoring._UNIT), float_crops)
    enlarged = Image.fromarray(photo(4, 40, 50))  # enlarged in float: float whatever `uint8` says
    assert make_crops(enlarged, crops, 64, seed=5, uint8=True).crops.dtype == torch.float32


@pytest.mark.parametrize("crops", [2, "center", "none"])
def test_uint8_path_scores_equal_the_float_path(model, monkeypatch, several, crops):
    inputs = mixed_inputs()
    plain = scores_with(model, monkeypatch, inputs, False, crops=crops, batch_size=3)
    fast = scores_with(model, monkeypatch, inputs, True, crops=crops, batch_size=3)
    assert fast == plain
    assert len(set(plain)) == len(inputs)  # distinct images, distinct scores
    details = scores_with(model, monkeypatch, inputs, True, crops=crops, details=True)
    assert details == scores_with(model, monkeypatch, inputs, False, crops=crops, details=True)


def test_uint8_is_for_accelerators_by_default(model):
    assert Scorer.uint8_crops is None
    assert Scorer(model).uint8 is False  # the CPU keeps its float crops from the workers
    assert Scorer(model, crops="center")._copies is None  # no side stream off CUDA


def test_uint8_from_a_worker_equals_floats_in_process(model, monkeypatch, several, tmp_path: Path):
    for i in range(6):
        Image.fromarray(photo(i)).save(tmp_path / f"{i}.png")
    entries = expand_paths([str(tmp_path)], None)
    monkeypatch.setattr(Scorer, "uint8_crops", True)
    fast = [r.score for r in Scorer(model, crops=2, batch_size=2, workers=1).run(entries)]
    monkeypatch.setattr(Scorer, "uint8_crops", False)
    plain = [r.score for r in Scorer(model, crops=2, batch_size=2, workers=0).run(entries)]
    assert fast == plain and None not in plain


def test_queued_forwards_give_the_same_rows_in_order(model, monkeypatch):
    """As on a GPU whose forwards are not done yet: rows wait for `in_flight` forwards, then come out in order."""
    inputs = mixed_inputs()
    expected = model.score(inputs, crops=2, details=True)
    launches: list[int] = []
    launch = Scorer._launch

    def spy(self, group):
        launches.append(len(group))
        return launch(self, group)

    monkeypatch.setattr(Scorer, "_launch", spy)
    monkeypatch.setattr(scoring._Launched, "ready", lambda self: False)  # scores never seen as landed early
    monkeypatch.setattr(Scorer, "in_flight", 2)
    entries = [Entry(f"<input {i}>", x, None) for i, x in enumerate(inputs)]
    seen_at_first_row = None
    rows = []
    for row in Scorer(model, crops=2, details=True, batch_size=1).run(entries):
        seen_at_first_row = len(launches) if seen_at_first_row is None else seen_at_first_row
        rows.append(row)
    assert seen_at_first_row == 3  # one image a forward on the CPU: the first row waited for 2 more forwards
    assert [r.index for r in rows] == list(range(len(inputs)))
    got = [{k: r.as_dict()[k] for k in expected[0]} for r in rows]
    assert got == expected


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@cuda
@pytest.mark.parametrize("crops", [10, "center", "none"])
def test_cuda_uint8_pipeline_equals_float_crops_and_the_synchronous_path(model, monkeypatch, crops):
    """On CUDA: uint8 crops through the table == float crops from the host; queued forwards == one at a time."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 as on the CPU, for the last comparison
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    gpu = gamma_iqa.create_model("gamma-test")
    gpu.load_state_dict(model.state_dict())
    gpu = gpu.cuda().eval()
    inputs = [photo(i, 200, 260) for i in range(40)] + mixed_inputs()
    fast = scores_with(gpu, monkeypatch, inputs, None, crops=crops, batch_size=8)
    assert Scorer(gpu).uint8 and Scorer(gpu)._copies is not None
    plain = scores_with(gpu, monkeypatch, inputs, False, crops=crops, batch_size=8)
    monkeypatch.setattr(Scorer, "in_flight", 1)
    one_at_a_time = scores_with(gpu, monkeypatch, inputs, None, crops=crops, batch_size=3)
    assert fast == plain == one_at_a_time
    cpu = model.score(inputs, crops=crops)
    assert np.allclose(fast, cpu, atol=1e-5)


@cuda
def test_cuda_forwards_do_not_sync_the_host(model):
    """A warm forward of the pipeline queues its work without a synchronising call (torch's sync debug mode)."""
    gpu = gamma_iqa.create_model("gamma-test")
    gpu.load_state_dict(model.state_dict())
    gpu = gpu.cuda().eval()
    scorer = Scorer(gpu, crops=10)
    images = scoring._Images([(i, Entry(f"<input {i}>", photo(i), None)) for i in range(4)], 10, 64, 0, uint8=True)
    group = [({**images[i], "crops": images[i]["crops"].pin_memory()}, None) for i in range(4)]
    scorer._results(scorer._launch(group))  # warm: text features, the table, the allocator
    torch.cuda.set_sync_debug_mode("error")
    try:
        launched = scorer._launch(group)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(scorer._results(launched)) == 4
