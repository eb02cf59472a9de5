"""CUDA paths against the CPU ones: same scores in fp32, bounded differences in bf16/fp16, fused MoAE, scoring, compile,
training. Skipped without a GPU (CI has none); run on a GPU machine with `pytest tests/test_cuda.py`."""

import numpy as np
import pytest
import torch
from PIL import Image

import gamma_iqa
from gamma_iqa.engine.runtime import autocast
from gamma_iqa.engine.train import train
from gamma_iqa.models.moe import MoAE

from .conftest import images, perturb
from .test_train import toy_config, weights

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
SCENES = ["natural", "face", "aigc", "natural", "underwater", "aesthetic"]
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 off, so that fp32 on the GPU is fp32 (cuDNN convolutions default to TF32: the patch embedding is one)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _pair(name: str = "gamma-test") -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same model (fresh, perturbed) on the CPU and on the GPU."""
    cpu = gamma_iqa.create_model(name, pretrained=False)
    if isinstance(cpu, gamma_iqa.Gamma):
        perturb(cpu)
    else:  # gamma-lite: move its MoAE scales off zero so that the experts count
        with torch.no_grad():
            for n, p in cpu.named_parameters():
                if n.endswith("scale"):
                    p.fill_(0.5)
    gpu = gamma_iqa.create_model(name, pretrained=False).to(CUDA)
    gpu.load_state_dict(cpu.state_dict())
    return cpu.eval(), gpu.eval()


@torch.no_grad()
def test_fp32_scores_equal_the_cpu():
    cpu, gpu = _pair()
    x = images(len(SCENES))
    torch.testing.assert_close(gpu(x.to(CUDA), SCENES).cpu(), cpu(x, SCENES), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_gamma_lite_fp32_scores_equal_the_cpu():
    cpu, gpu = _pair("gamma-lite")
    x = images(4, size=224)
    torch.testing.assert_close(gpu(x.to(CUDA)).cpu(), cpu(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@torch.no_grad()
def test_autocast_is_close_to_fp32(dtype):
    _, gpu = _pair()
    x = images(len(SCENES)).to(CUDA)
    full = gpu(x, SCENES)
    with autocast(CUDA, dtype):
        low = gpu(x, SCENES)
    assert low.float().isfinite().all()
    assert (low.float() - full).abs().max().item() < 2e-2


def test_fused_moae_equals_reference_on_the_gpu():
    _, gpu = _pair()
    blocks = [b.mlp for b in gpu.clip.visual.transformer.resblocks if isinstance(b.mlp, MoAE)]
    x = torch.randn(4, 9, blocks[0].router.in_features, device=CUDA, generator=torch.Generator(CUDA).manual_seed(0))
    for moe in blocks:
        outs, grads = [], []
        for fused in (True, False):
            moe.fused = fused
            moe.zero_grad(set_to_none=True)
            out = moe(x)
            out.square().sum().backward()
            outs.append(out.detach())
            grads.append({n: p.grad.clone() for n, p in moe.named_parameters() if p.grad is not None})
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
        assert grads[0].keys() == grads[1].keys() and grads[0]
        for n in grads[0]:
            torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-5, msg=n)


def test_scoring_on_the_gpu_matches_the_cpu_and_is_batch_invariant(tmp_path):
    cpu, gpu = _pair()
    paths = []
    for i in range(9):  # more than one forward of cuda's 32 images per forward only with crops; 9 x 4 crops
        pixels = (images(1, size=96, seed=i)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    on_cpu = cpu.score(paths, crops=4)
    runs = [gpu.score(paths, crops=4, batch_size=b) for b in (1, 5)]
    assert runs[0] == runs[1]  # bit-identical across batch sizes
    np.testing.assert_allclose(runs[0], on_cpu, rtol=1e-5, atol=1e-5)
    low = gpu.score(paths, crops=4, dtype="bf16")
    np.testing.assert_allclose(low, on_cpu, atol=2e-2)


@pytest.mark.parametrize("backend", ["FLASH_ATTENTION", "EFFICIENT_ATTENTION"])
@torch.no_grad()
def test_the_fast_attention_kernels_take_our_shapes_in_bf16(backend):
    """Flash and memory-efficient attention accept both towers' attention in bf16 (head dim 64; the text tower's
    causal mask as `is_causal`, no explicit mask), so torch's choice is not forced onto the slow math kernel; the
    scores are those of the default choice to bf16 rounding."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    _, gpu = _pair("gamma-vit-b16")
    x = images(4, size=224).to(CUDA)
    with autocast(CUDA, "bf16"):
        default = gpu(x, SCENES[:4])
        gpu._text_cache.clear()  # the text tower runs again, under the forced kernel too
        with sdpa_kernel(getattr(SDPBackend, backend)):  # raises when the kernel cannot take the inputs
            forced = gpu(x, SCENES[:4])
    torch.testing.assert_close(forced.float(), default.float(), rtol=0, atol=2e-2)


@torch.no_grad()
def test_compiled_towers_equal_eager():
    _, gpu = _pair()
    x = images(len(SCENES)).to(CUDA)
    eager = gpu(x, SCENES)
    compiled = gpu.compile_towers()
    torch.testing.assert_close(compiled(x, SCENES), eager, rtol=1e-4, atol=1e-4)


def test_training_in_bf16_on_the_gpu_moves_only_trainable_weights_and_learns(tmp_path):
    start = gamma_iqa.create_model("gamma-test", seed=123).state_dict()
    out = train(toy_config(tmp_path, device="cuda", dtype="bf16", epochs=6, lr=3e-3, eval_epochs=(6,)))
    after = weights(out / "last")
    trainable = {n for n, p in gamma_iqa.create_model("gamma-test").named_parameters() if p.requires_grad}
    for name, value in after.items():
        assert torch.equal(value, start[name]) != (name in trainable), name
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    srcc = [float(r[4]) for r in rows if r[2:4] == ["eval", "toy/srcc"]]
    assert srcc and srcc[-1] > 0.8
