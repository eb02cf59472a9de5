"""Fast paths against the straightforward ones: fused MoAE, weight cache, autocast, text, compile, benchmark."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import gamma_iqa
from gamma_iqa.models.clip import LayerNorm
from gamma_iqa.models.moe import MoAE, set_moae_fused

from .conftest import images

ROOT = Path(__file__).resolve().parents[1]
SCENES = ["natural", "face", "natural", "aigc", "face"]


def _blocks(model: gamma_iqa.Gamma) -> dict[str, list[MoAE]]:
    towers = {"vision": model.clip.visual.transformer, "text": model.clip.transformer}
    return {name: [b.mlp for b in t.resblocks if isinstance(b.mlp, MoAE)] for name, t in towers.items()}


def _forward_and_grads(moe: MoAE, x: torch.Tensor, fused: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    moe.fused = fused
    moe.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = moe(x)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()  # a loss that weighs every output channel
    grads = {n: p.grad.clone() for n, p in moe.named_parameters() if p.requires_grad}
    return out.detach(), {**grads, "input": x.grad}


@pytest.mark.parametrize("tower", ["vision", "text"])
def test_fused_moae_equals_reference_forward_and_gradients(tiny, tower):
    blocks = _blocks(tiny)[tower]
    assert len(blocks) == 2
    for moe in blocks:
        x = torch.randn(3, 7, moe.router.in_features, generator=torch.Generator().manual_seed(len(tower)))
        out_f, grads_f = _forward_and_grads(moe, x, fused=True)
        out_r, grads_r = _forward_and_grads(moe, x, fused=False)
        torch.testing.assert_close(out_f, out_r, rtol=1e-5, atol=1e-5)
        trainable = {n for n, p in moe.named_parameters() if p.requires_grad}
        assert trainable == set(grads_r) - {"input"}
        assert all(n.startswith(("experts.", "router.", "scale")) for n in trainable)
        assert len(trainable) == 4 * len(moe.experts) + 3
        for name in grads_r:
            assert grads_r[name].abs().sum() > 0, name
            torch.testing.assert_close(grads_f[name], grads_r[name], rtol=1e-5, atol=1e-5, msg=name)
        assert all(p.grad is None for p in moe.shared.parameters())  # the frozen expert gets no gradient


def test_fused_model_equals_reference_scores_and_training_gradients(tiny):
    x = images(5)
    with torch.no_grad():
        fused = tiny(x, SCENES)
        set_moae_fused(tiny, False)
        tiny._text_cache.clear()
        reference = tiny(x, SCENES)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)

    tiny.train()
    target = torch.linspace(0.2, 0.9, 5)
    grads = {}
    for flag in (True, False):
        set_moae_fused(tiny, flag)
        tiny.zero_grad(set_to_none=True)
        (tiny(x, SCENES) - target).pow(2).mean().backward()
        grads[flag] = {n: p.grad.clone() for n, p in tiny.named_parameters() if p.requires_grad}
    assert grads[True].keys() == grads[False].keys()
    assert any(".visual.transformer." in n and ".mlp.experts." in n for n in grads[True])
    assert any(n.startswith("clip.transformer.") and ".mlp.experts." in n for n in grads[True])
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, rtol=1e-5, atol=1e-5, msg=name)


def test_fused_weights_are_cached_without_autograd_and_follow_changes(tiny):
    moe = _blocks(tiny)["vision"][-1]
    x = torch.randn(2, 5, moe.router.in_features)
    with torch.no_grad():
        first = moe.fused_weights()
        assert moe.fused_weights() is first
        with torch.autocast("cpu", torch.bfloat16):
            low = moe.fused_weights()
            assert all(w.dtype == torch.bfloat16 for w in low)  # cast once, not on every product
        assert moe.fused_weights() is first  # one copy per autocast dtype: switching back rebuilds nothing
        before = moe(x)
        moe.experts[1].c_proj.bias.add_(0.1)  # as an optimiser step does: bumps the version
        rebuilt = moe.fused_weights()
        assert rebuilt is not first
        after = moe(x)
        torch.testing.assert_close(after, moe.forward_reference(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(before, after)
    w1, _, _, _ = moe.fused_weights()  # with autograd: built fresh and attached to the experts
    assert w1.requires_grad and w1.grad_fn is not None
    text = _blocks(tiny)["text"]
    with torch.no_grad():
        tiny.text_features("aigc")
    assert all(not m.cache_weights and not m._cache for m in text)  # run once per prompt set: no second copy


def test_bf16_and_fp16_autocast_scores_are_finite_and_close_to_fp32(tiny):
    x = images(6)
    scenes = ["natural", "face", "aigc", "aesthetic", "underwater", "generic"]
    with torch.no_grad():
        reference = tiny(x, scenes)
        for dtype, tol in ((torch.bfloat16, 2e-2), (torch.float16, 5e-3)):
            with torch.autocast("cpu", dtype):
                scores = tiny(x, scenes)
                text = tiny.text_features("face")
            assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
            torch.testing.assert_close(scores, reference, rtol=0, atol=tol)
            assert text.dtype == dtype  # cached apart from the fp32 features
        assert tiny.text_features("face").dtype == torch.float32


def test_autocast_keeps_layernorm_and_residual_streams_in_fp32(tiny):
    seen = []
    hooks = [
        m.register_forward_hook(lambda mod, args, out: seen.append((args[0].dtype, out.dtype)))
        for m in tiny.modules()
        if isinstance(m, LayerNorm)
    ]
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        tiny.text_features("natural")
        tiny(images(1))
    for h in hooks:
        h.remove()
    assert len(seen) == 2 * (4 + 4) + 3  # ln_1, ln_2 per block; ln_pre, ln_post, ln_final
    assert set(seen) == {(torch.float32, torch.float32)}
    ln = LayerNorm(8)
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", torch.bfloat16):
        assert torch.equal(ln(x), F.layer_norm(x.float(), (8,), ln.weight, ln.bias, 1e-5).bfloat16())


def test_training_forward_encodes_each_distinct_scene_once_from_cut_tokens(tiny, monkeypatch):
    calls = []
    encode = tiny.clip.encode_text

    def counting(tokens, *, trim=True):
        calls.append((tokens.clone(), trim))
        return encode(tokens, trim=trim)

    monkeypatch.setattr(tiny.clip, "encode_text", counting)
    tiny.train()
    for step in (1, 2):  # no caching with autograd: every step encodes again, once per distinct scene
        tiny(images(5), SCENES).sum().backward()
        assert len(calls) == 3 * step
    expected = {tiny.prompt_key(s) for s in SCENES}
    for tokens, trim in calls:
        assert not trim  # cut on the host beforehand: no host-device sync in the step
        key = next(k for k in expected if torch.equal(tokens, tiny.tokens(k)[:, : tokens.shape[1]]))
        full = tiny.tokens(key)
        assert tokens.shape[1] == int(full.argmax(-1).max()) + 1 < full.shape[1]
        assert (full[:, tokens.shape[1] :] == 0).all()
    assert len({tuple(t.flatten().tolist()) for t, _ in calls}) == 3


def test_text_cut_matches_the_full_77_tokens_through_the_model(tiny):
    with torch.no_grad():
        tokens = tiny.tokens("aigc")
        full = tiny.clip.encode_text(tokens, trim=False)
        assert tokens.shape[1] == 77
        torch.testing.assert_close(tiny.text_features("aigc"), full, rtol=1e-5, atol=1e-5)


def test_compile_is_off_by_default():
    model = gamma_iqa.create_model("gamma-test")
    assert not model.compiled
    assert not any(getattr(m, "_compiled_call_impl", None) for m in model.modules())


@pytest.mark.slow
@pytest.mark.timeout(900)  # inductor compiles C++ for both towers: minutes on two CPU cores
def test_compiled_towers_give_the_same_scores(tiny):
    x = images(2)
    with torch.no_grad():
        eager = tiny(x, ["natural", "face"])
        tiny._text_cache.clear()
        keys = set(tiny.state_dict())
        compiled = tiny.compile_towers()(x, ["natural", "face"])
    assert tiny.compiled and set(tiny.state_dict()) == keys
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_benchmark_script_runs_and_prints_json():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--model", "gamma-test", "--iters", "1"]
    run = subprocess.run(
        [*cmd, "--warmup", "0", "--dtype", "bf16", "--threads", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    keys = {"ours_crops_per_s", "naive_crops_per_s", "plain_crops_per_s", "speedup_vs_naive", "ratio_vs_plain"}
    assert keys | {"peak_mem_mb", "device", "dtype", "batch", "max_abs_score_diff_vs_fp32"} <= set(result)
    assert (result["device"], result["dtype"], result["batch"]) == ("cpu", "bf16", 1)
    assert all(result[k] > 0 for k in keys) and result["peak_mem_mb"] > 0
    assert 0 <= result["max_abs_score_diff_vs_fp32"] < 0.05
