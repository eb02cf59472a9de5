"""CPU inference: bf16 ignored where it is slower than fp32, BatchNorm folding and channels-last for gamma-lite."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gamma_iqa
from gamma_iqa.engine import runtime
from gamma_iqa.engine.runtime import scoring_dtype
from gamma_iqa.engine.scoring import Scorer, score_inputs
from gamma_iqa.models.effnet import ConvBN, EfficientNetLite
from gamma_iqa.models.lite import GammaLite
from gamma_iqa.outputs.provenance import sidecar

from .conftest import run_cli

LITE_LINE = "`dtype` bf16 is slower than fp32 on this CPU for gamma-lite; scoring in fp32"


def lite() -> GammaLite:
    """gamma-lite on a random backbone, its MoAE experts perturbed so that they change the output."""
    model = gamma_iqa.create_model("gamma-lite", pretrained=False, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".experts." in name or name.endswith(".scale"):
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def photos(n: int = 3) -> list[np.ndarray]:
    """n uint8 RGB images of 300 x 260 with structure, so that crops differ."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (260, 300, 3), dtype=np.uint8) for _ in range(n)]


def baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The forward before the CPU options: BatchNorm not folded, NCHW."""
    monkeypatch.setattr(ConvBN, "fold", False)
    monkeypatch.setattr(GammaLite, "channels_last", False)


# ---- the dtype policy ---------------------------------------------------------------------------------------------
def test_scoring_dtype_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert scoring_dtype("fp32", cpu, cpu_bf16=False, name="m") == ("fp32", None)
    assert scoring_dtype("bf16", cuda, cpu_bf16=False, name="m") == ("bf16", None)  # only the CPU falls back
    assert scoring_dtype("bf16", cpu, cpu_bf16=False, name="gamma-lite") == ("fp32", LITE_LINE)
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert scoring_dtype("bf16", cpu, cpu_bf16=True, name="m") == ("bf16", None)
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    dtype, note = scoring_dtype("bf16", cpu, cpu_bf16=True, name="m")
    assert dtype == "fp32" and note is not None and "no native bf16" in note


def test_lite_bf16_on_cpu_scores_fp32_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    model, images = lite(), photos()
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert Scorer(model, dtype="bf16").dtype == "bf16"  # measured faster: kept where the CPU has native bf16
    monkeypatch.setattr(GammaLite, "cpu_bf16", False)  # a family measured slower falls back
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fp32 = score_inputs(model, images, crops=2, dtype="fp32")
    assert not caught  # fp32 says nothing
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bf16 = score_inputs(model, images, crops=2, dtype="bf16")
    assert [str(w.message) for w in caught] == [LITE_LINE]
    assert bf16 == fp32  # scored in fp32: the very same numbers


def test_bf16_kept_where_faster(gamma_test_model: gamma_iqa.Gamma, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails
        scorer = Scorer(gamma_test_model, dtype="bf16")
    assert scorer.dtype == "bf16"


def test_cli_bf16_line_and_provenance(
    capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(GammaLite, "cpu_bf16", False)  # a family measured slower than fp32 on the CPU
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, a in enumerate(photos(2)):
        Image.fromarray(a).save(folder / f"{i}.png")
    model = tmp_path / "lite"
    gamma_iqa.save_checkpoint(lite(), model)
    out = {}
    for dtype in ("fp32", "bf16"):
        output = tmp_path / f"{dtype}.csv"
        argv = ["score", str(folder), "--model", str(model), "--workers", "0", "--crops", "center"]
        code, _, err = run_cli(capsys, *argv, "--dtype", dtype, "--output", str(output))
        assert code == 0
        lines = [line for line in err.splitlines() if line.startswith("warning:")]
        expected = [] if dtype == "fp32" else ["warning: " + LITE_LINE.replace("`dtype`", "--dtype")]
        assert lines == expected
        assert json.loads(sidecar(output).read_text())["dtype"] == "fp32"  # the precision scored in
        out[dtype] = output.read_text()
    assert out["bf16"] == out["fp32"]


# ---- BatchNorm folding and channels-last --------------------------------------------------------------------------
def test_folded_convbn_equals_conv_then_bn() -> None:
    torch.manual_seed(0)
    for groups in (1, 8):
        layer = ConvBN(8, 16 if groups == 1 else 8, 3, stride=2, groups=groups).eval()
        with torch.no_grad():
            layer.bn.running_mean.normal_()
            layer.bn.running_var.uniform_(0.5, 2)
            layer.bn.weight.normal_()
            layer.bn.bias.normal_()
        x = torch.randn(2, 8, 17, 15)
        with torch.enable_grad():  # autograd on: the layers as written
            reference = layer(x).detach()
        with torch.inference_mode():
            folded = layer(x)
        assert layer._folded is not None  # the folded path ran
        torch.testing.assert_close(folded, reference, rtol=0, atol=1e-5)
        with torch.no_grad():  # new weights (as a load or an optimiser step) refold
            layer.conv.weight.mul_(2)
            layer.bn.running_mean.add_(1)
        with torch.enable_grad():
            reference = layer(x).detach()
        with torch.no_grad():
            torch.testing.assert_close(layer(x), reference, rtol=0, atol=1e-5)


def test_folding_leaves_training_mode_alone() -> None:
    torch.manual_seed(0)
    net = EfficientNetLite(num_classes=10)
    twin = EfficientNetLite(num_classes=10)
    twin.load_state_dict(net.state_dict())
    net.train()
    twin.train()
    monkey = ConvBN.fold
    x = torch.randn(2, 3, 64, 64)
    try:
        with torch.no_grad():  # no autograd, but BatchNorm in training mode: batch statistics, running ones updated
            out = net(x)
            ConvBN.fold = False
            expected = twin(x)
    finally:
        ConvBN.fold = monkey
    assert torch.equal(out, expected)
    for a, b in zip(net.state_dict().values(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert all(m._folded is None for m in net.modules() if isinstance(m, ConvBN))


def test_inference_options_keep_parameters_and_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    model, images = lite(), photos()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = [m for m in model.modules() if isinstance(m, ConvBN)]
    fast = score_inputs(model, images, crops=3)
    assert all(m._folded is not None for m in layers)  # the folded path ran ...
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # folding is not in the weights
    baseline(monkeypatch)
    for m in layers:
        m._folded = None
    slow = score_inputs(model, images, crops=3)
    assert all(m._folded is None for m in layers)  # ... and here the layers as written
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-5)  # the same scores up to float rounding


def test_training_forward_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """A training forward and its gradients are the same with or without the inference options."""
    model = lite().train()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def step() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        scores = model(x)
        scores.sum().backward()
        return scores.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    scores, grads = step()
    baseline(monkeypatch)
    scores_before, grads_before = step()
    assert torch.equal(scores, scores_before)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_before, strict=True)) and grads
