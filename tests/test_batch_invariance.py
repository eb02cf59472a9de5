"""Batch-invariant scores: the engine's fixed-size, padded forwards, run on the CPU with several images per forward.

On a GPU `IMAGES_PER_FORWARD` puts 32 images in every forward (the last one padded with zero images), so a score
does not depend on the batch size, on the image's neighbours or on its position. On the CPU it is 1 (more only for a
model with `cpu_crops_per_forward` above 1, gamma-lite, tests/test_cpu_batching.py), which would leave that path to
GPU machines only for the tiny test model; these tests set it to 4 and ask for equality to the last bit (==).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gamma_iqa
from gamma_iqa.engine import scoring

from .conftest import images

PER_FORWARD = 4


def photos(n: int, seed: int = 0) -> list[np.ndarray]:
    """n distinct uint8 RGB images of different sizes, (H, W, 3) with H, W in 64..100 (all above gamma-test's 64)."""
    out = []
    for i in range(n):
        h, w = 64 + (7 * i + seed) % 37, 100 - (5 * i + seed) % 37
        t = images(1, size=max(h, w), seed=seed * 100 + i)[0, :, :h, :w]
        out.append((t * 255).round().byte().permute(1, 2, 0).numpy())
    return out


@pytest.fixture(scope="module")
def model(perturbed_model) -> gamma_iqa.Gamma:
    """The perturbed gamma-test (conftest's `perturbed_model`)."""
    return perturbed_model


@pytest.fixture
def forwards(monkeypatch, model) -> list[int]:
    """Several images per CPU forward; returns the batch sizes (in crops) of the model's forwards, as they happen."""
    monkeypatch.setattr(scoring, "IMAGES_PER_FORWARD", {**scoring.IMAGES_PER_FORWARD, "cpu": PER_FORWARD})
    sizes: list[int] = []
    forward = model.forward

    def spy(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        sizes.append(len(x))
        return forward(x, *args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    return sizes


@pytest.mark.parametrize("crops", [2, "center"])
def test_padded_forwards_of_several_images(model, forwards, crops):
    per_image = 1 if crops == "center" else crops
    model.score(photos(5), crops=crops, batch_size=2)
    # 5 images in forwards of 4: one full, one of 1 image padded with 3 zero images; every forward the same size.
    assert forwards == [PER_FORWARD * per_image] * 2


@pytest.mark.parametrize("crops", [2, "center"])
def test_scores_do_not_depend_on_the_batch_size(model, forwards, crops):
    inputs = photos(6)
    by_batch = {b: model.score(inputs, crops=crops, batch_size=b) for b in (1, 3, 8)}
    assert by_batch[1] == by_batch[3] == by_batch[8]
    assert len(set(by_batch[1])) == 6  # distinct images, distinct scores: the comparison is not of constants


@pytest.mark.parametrize("crops", [2, "center"])
def test_scores_do_not_depend_on_the_position_or_the_neighbours(model, forwards, crops):
    target, *others = photos(6, seed=1)
    alone = model.score([target], crops=crops)[0]  # the only image of a padded forward
    placements = [  # (inputs, the target's index, batch size): each batch size meets the target at another place
        ([target, *others[:3]], 0, 1),  # first of a full forward
        ([*others[:2], target, others[2]], 2, 3),  # inside a full forward, split across loader batches
        ([*others[:4], target], 4, 8),  # alone in the last forward, padded with 3 zero images
        ([others[4], target, *others[:3]], 1, 1),  # the same forward with other neighbours
    ]
    for inputs, i, batch_size in placements:
        assert model.score(inputs, crops=crops, batch_size=batch_size)[i] == alone, (i, batch_size)


def test_scenes_of_the_neighbours_do_not_change_a_score(model, forwards):
    target, *others = photos(4, seed=2)
    alone = model.score([target], scene="face", crops=2)[0]
    mixed = model.score([*others, target], scene=["aigc", "natural", "aesthetic", "face"], crops=2, batch_size=3)
    assert mixed[3] == alone
