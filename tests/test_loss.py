"""QualityLoss: gradients against finite differences, determinism, autocast, a frozen model, the crop grid, errors."""

from __future__ import annotations

import pytest
import torch

import gamma_iqa
from gamma_iqa.models import base, loss
from gamma_iqa.models.loss import QualityLoss, crop_grid

from .conftest import images


def smooth(n: int, h: int, w: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(n, 3, h, w) images in [0.2, 0.8]: far enough from 0 and 1 that no clamp is active near them."""
    g = torch.Generator().manual_seed(seed)
    return (0.2 + 0.6 * torch.rand(n, 3, h, w, generator=g)).to(dtype)


@pytest.mark.parametrize(("size", "crops"), [((64, 64), "center"), ((72, 90), 2), ((48, 56), "grid")])
def test_gradient_matches_central_differences_along_random_directions(tiny, size, crops):
    # float64 throughout; (48, 56) is under the 64-pixel crop, so the bicubic enlargement is differentiated too.
    model = tiny.double()
    fn = QualityLoss(model, crops=crops, reduction="sum")
    x = smooth(2, *size).requires_grad_()
    fn(x).backward()
    g = torch.Generator().manual_seed(1)
    eps = 1e-6
    for _ in range(4):
        v = torch.randn(x.shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            numeric = (fn(x + eps * v) - fn(x - eps * v)) / (2 * eps)
        analytic = (x.grad * v).sum()
        assert analytic.abs() > 1e-4  # the direction moves the loss: the comparison below means something
        assert analytic.item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-9)


def test_gradcheck_on_a_few_pixels(tiny):
    model = tiny.double()
    fn = QualityLoss(model, crops=2, reduction="none")
    base_image = smooth(1, 64, 80)
    where = (torch.tensor([0, 1, 2, 1, 0]), torch.tensor([3, 30, 63, 10, 40]), torch.tensor([5, 40, 79, 77, 0]))

    def f(pixels: torch.Tensor) -> torch.Tensor:
        x = base_image.clone()
        x[0][where] = pixels
        return fn(x)

    assert torch.autograd.gradcheck(f, (base_image[0][where].clone().requires_grad_(),), eps=1e-6, atol=1e-7)


def test_two_calls_give_bit_identical_values_and_gradients(tiny):
    fn = QualityLoss(tiny, crops=3)
    results = []
    for _ in range(2):
        x = images(2, size=80).requires_grad_()
        value = fn(x)
        value.backward()
        results.append((value.detach(), x.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_center_loss_is_one_minus_the_center_crop_score_and_the_reward_is_the_score(tiny):
    x = images(3, size=80)
    scores = torch.tensor(tiny.score(x, crops="center"))
    per_image = QualityLoss(tiny, reduction="none")(x)
    assert torch.allclose(per_image, 1 - scores, atol=1e-6)
    assert torch.allclose(QualityLoss(tiny, reduction="none", as_reward=True)(x), scores, atol=1e-6)
    assert QualityLoss(tiny, reduction="sum")(x).item() == pytest.approx(per_image.sum().item(), abs=1e-6)
    assert QualityLoss(tiny)(x).item() == pytest.approx(per_image.mean().item(), abs=1e-6)
    assert per_image.shape == (3,) and QualityLoss(tiny)(x).shape == ()


def test_a_lower_better_model_is_reflected_so_the_loss_still_falls_as_quality_rises(tiny):
    x = images(2, size=64)
    higher = QualityLoss(tiny, reduction="none", as_reward=True)(x)  # the score
    tiny.lower_better = True  # an instance attribute: this model's scores now fall as quality rises
    assert torch.allclose(QualityLoss(tiny, reduction="none")(x), higher, atol=1e-7)  # loss = score - 0
    assert torch.allclose(QualityLoss(tiny, reduction="none", as_reward=True)(x), 1 - higher, atol=1e-7)


def test_the_model_is_used_not_changed_and_its_parameters_get_no_gradient():
    lite = gamma_iqa.create_model("gamma-lite")
    x = images(1, size=224)
    with torch.no_grad():
        expected = 1 - lite.eval()(x)
    lite.train()
    flags = {name: p.requires_grad for name, p in lite.named_parameters()}
    buffers = {name: b.clone() for name, b in lite.named_buffers()}
    modes = {name: m.training for name, m in lite.named_modules()}  # GammaLite.train keeps frozen stages in eval
    fn = QualityLoss(lite)
    assert list(fn.parameters()) == [] and any(flags.values())
    seen = []  # the training flag of every module run by the call, as it runs
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append(m.training)) for m in lite.modules()]
    pixels = x.clone().requires_grad_()
    value = fn(pixels)
    value.backward()
    for hook in hooks:
        hook.remove()
    assert len(seen) > 100 and not any(seen)  # every module ran in eval mode
    assert value.item() == pytest.approx(expected.item(), abs=1e-6)
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    assert all(p.grad is None for p in lite.parameters())
    assert {name: p.requires_grad for name, p in lite.named_parameters()} == flags
    assert {name: m.training for name, m in lite.named_modules()} == modes and lite.training  # modes restored
    assert all(torch.equal(b, buffers[name]) for name, b in lite.named_buffers())  # running statistics untouched


def test_autocast_bf16_on_cpu_is_finite_and_close_to_fp32():
    lite = gamma_iqa.create_model("gamma-lite")
    fn = QualityLoss(lite, crops=2)
    grads = []
    values = []
    for enabled in (False, True):
        x = images(1, size=224, seed=3)
        x = torch.cat([x, x.flip(-1)], dim=-1).requires_grad_()  # 224 x 448: two crops side by side
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            value = fn(x)
        value.backward()
        values.append(value)
        grads.append(x.grad.flatten())
    assert values[1].dtype == torch.float32 and torch.isfinite(values[1]) and torch.isfinite(grads[1]).all()
    # Measured on this image and seed 4: |loss difference| 0.008 and 0.005, gradient cosine 0.88 and 0.89 (bf16 keeps
    # 8 bits of mantissa in the towers; the head runs in fp32).
    assert values[1].item() == pytest.approx(values[0].item(), abs=0.03)
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.75


def test_the_crop_grid_is_fixed_even_and_covering():
    assert crop_grid(100, 200, 64, "center") == [(18, 68)]
    assert crop_grid(100, 200, 64, 1) == [(18, 68)]
    assert crop_grid(100, 200, 64, 2) == [(18, 0), (18, 136)]  # side by side: the image is wide
    assert crop_grid(200, 100, 64, 2) == [(0, 18), (136, 18)]
    assert crop_grid(100, 200, 64, 6) == [(t, left) for t in (0, 36) for left in (0, 68, 136)]  # 2 x 3
    assert crop_grid(100, 200, 64, "grid") == [(t, left) for t in (0, 36) for left in (0, 45, 91, 136)]
    assert crop_grid(64, 64, 64, 3) == [(0, 0)] * 3  # no room: the same window each time
    for h, w in [(64, 65), (129, 300), (225, 224), (500, 333)]:
        covered = torch.zeros(h, w, dtype=torch.bool)
        for top, left in crop_grid(h, w, 64, "grid"):
            covered[top : top + 64, left : left + 64] = True
        assert covered.all(), (h, w)


def test_the_crops_are_the_grid_windows_of_the_image_whatever_its_content(tiny):
    fn = QualityLoss(tiny, crops=2)
    for seed in (0, 1):
        x = images(2, size=100, seed=seed)[:, :, :72, :]  # 72 x 100
        views = fn.crop(x).view(2, 2, 3, 64, 64)
        for k, (top, left) in enumerate(crop_grid(72, 100, 64, 2)):
            assert torch.equal(views[:, k], x[:, :, top : top + 64, left : left + 64])


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.rand(3, 64, 64), r"\(B, 3, H, W\).*got shape \(3, 64, 64\)"),
        (torch.rand(1, 1, 64, 64), r"got shape \(1, 1, 64, 64\)"),
        (torch.rand(0, 3, 64, 64), "B, H, W >= 1"),
        ((torch.rand(1, 3, 64, 64) * 255).to(torch.uint8), "divide by 255"),
        (torch.rand(1, 3, 64, 64) * 255, r"outside RGB's \[0, 1\]; 8-bit values"),
        (torch.full((1, 3, 64, 64), float("nan")), "NaN"),
    ],
)
def test_bad_images_are_refused(tiny, x, message):
    with pytest.raises(ValueError, match=message):
        QualityLoss(tiny)(x)


def test_the_value_check_is_skipped_for_pixels_being_optimised_unless_asked(tiny, monkeypatch):
    x = (images(1, size=64) * 1.5).requires_grad_()  # out of range, as an overshooting optimiser step leaves it
    with pytest.raises(ValueError, match=r"outside RGB's \[0, 1\]"):
        QualityLoss(tiny, check=True)(x)

    def no_reduction(values):
        raise AssertionError("range_problem was called: a reduction and a host sync")

    monkeypatch.setattr(loss, "range_problem", no_reduction)
    monkeypatch.setattr(base, "range_problem", no_reduction)
    assert torch.isfinite(QualityLoss(tiny)(x))  # check=None: neither the loss nor the model's forward checks
    assert torch.isfinite(QualityLoss(tiny, check=False)(x.detach()))
    with pytest.raises(AssertionError, match="range_problem was called"):
        base.check_images(x)  # outside the loss the model's check is back


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crops": 0}, "`crops` must be"),
        ({"crops": "random"}, "`crops` must be"),
        ({"crops": True}, "`crops` must be"),
        ({"reduction": "max"}, "`reduction` must be"),
        ({"scene": "no-such-scene"}, "no-such-scene"),
    ],
)
def test_bad_settings_are_refused_when_the_loss_is_made(tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        QualityLoss(tiny, **kwargs)


def test_a_name_instead_of_a_model_is_refused_with_a_type_error():
    with pytest.raises(TypeError, match=r"^`model` must be a model, got the str 'gamma-lite': pass gamma_iqa\.create_"):
        QualityLoss("gamma-lite")
