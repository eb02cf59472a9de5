"""CLIP towers and MoAE: shapes, exactness at init, routing, gradients, parameter counts."""

import torch
import torch.nn.functional as F

import gamma_iqa
from gamma_iqa.models.clip import CLIP, LayerNorm, clip_config_from_state_dict
from gamma_iqa.models.moe import MoAE, set_moae_fused
from gamma_iqa.models.registry import model_spec
from gamma_iqa.models.tokenizer import get_tokenizer

from .conftest import images


def test_published_parameter_counts():
    with torch.device("meta"):
        model = gamma_iqa.create_model("gamma-vit-b16", pretrained=False)
        plain = CLIP(model.config.clip)
    assert sum(p.numel() for p in model.parameters()) == 272_704_566
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 123_083_829
    assert sum(p.numel() for p in plain.parameters()) == 149_620_737
    assert sum(p.numel() for p in model.parameters() if not p.requires_grad) == 149_620_737


def test_config_roundtrips_through_a_state_dict():
    cfg = model_spec("gamma-test").config.clip
    derived = clip_config_from_state_dict(CLIP(cfg).state_dict())
    assert (derived.image_size, derived.patch_size, derived.vision_width, derived.vision_layers) == (64, 16, 64, 4)
    assert (derived.text_width, derived.text_layers, derived.embed_dim, derived.context_length) == (64, 4, 32, 77)
    assert derived.vision_num_heads == 1  # heads are not in the shapes: width // 64, as OpenAI CLIP


def _clip_and_gamma():
    cfg = model_spec("gamma-test").config
    torch.manual_seed(3)
    clip = CLIP(cfg.clip).eval()
    gamma = gamma_iqa.Gamma(cfg, backbone_state=clip.state_dict()).eval()
    return clip, gamma


def test_zero_scale_towers_equal_plain_clip_bit_for_bit():
    clip, gamma = _clip_and_gamma()
    x = images(3)
    tokens = get_tokenizer()(["bad image", "natural perfect-quality image", "a photo of a cat"])
    with torch.no_grad():
        for fused in (True, False):  # both forward forms run the shared expert as the plain MLP
            set_moae_fused(gamma, fused)
            assert torch.equal(gamma.clip.encode_image(x), clip.encode_image(x))
            assert torch.equal(gamma.clip.encode_text(tokens), clip.encode_text(tokens))
        # And the experts are exact copies of the pretrained MLP, so a non-zero scale changes nothing yet either.
        for block in gamma.clip.visual.transformer.resblocks[-2:]:
            assert isinstance(block.mlp, MoAE)
            assert block.mlp.scale.item() == 0.0
            assert torch.equal(block.mlp.experts[2].c_fc.weight, block.mlp.shared.c_fc.weight)


def test_moae_forward_matches_the_formula():
    _, gamma = _clip_and_gamma()
    moe = gamma.clip.visual.transformer.resblocks[-1].mlp
    with torch.no_grad():
        for e in moe.experts:
            e.c_fc.weight.add_(torch.randn_like(e.c_fc.weight) * 0.05)
        moe.scale.fill_(0.7)
        x = torch.randn(2, 5, moe.router.in_features)
        g = F.softmax(x @ moe.router.weight.T + moe.router.bias, dim=-1)
        want = moe.shared(x) + 0.7 * sum(g[..., i : i + 1] * moe.experts[i](x) for i in range(3))
        assert torch.allclose(moe(x), want, atol=1e-6)
        assert torch.allclose(moe.gates(x).sum(-1), torch.ones(2, 5), atol=1e-6)
        assert (moe.gates(x) > 0).all()


def test_gradients_reach_exactly_the_trainable_parameters(tiny):
    tiny.train()
    loss = (tiny(images(2), ["natural", "face"]) - torch.tensor([0.3, 0.8])).pow(2).mean()
    loss.backward()
    for name, p in tiny.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    trainable = {
        n.split(".mlp.")[-1].split(".")[0] for n, p in tiny.named_parameters() if p.requires_grad and ".mlp." in n
    }
    assert trainable == {"experts", "router", "scale"}
    frozen_head = [n for n, p in tiny.named_parameters() if not p.requires_grad and not n.startswith("clip.")]
    assert frozen_head == []  # adapter and score_level train


def test_positional_table_is_interpolated_for_other_sizes():
    _, gamma = _clip_and_gamma()
    vis = gamma.clip.visual
    assert vis.positions(17) is vis.positional_embedding  # native size: the table itself
    resized = vis.positions(37)
    manual = F.interpolate(vis.positional_embedding[None, None], size=(37, 64), mode="bicubic", align_corners=False)
    assert torch.equal(resized, manual[0, 0])
    with torch.no_grad():
        assert gamma.encode_image(images(1, size=96)).shape == (1, 32)  # 36 patches + CLS


def test_text_cut_after_end_token_is_exact():
    clip, _ = _clip_and_gamma()
    tokens = get_tokenizer()(["bad image", "AI-generated perfect-quality image"])
    with torch.no_grad():
        x = clip.token_embedding(tokens) + clip.positional_embedding  # the full 77 positions
        x = clip.ln_final(clip.transformer(x, causal=True))
        full = x[torch.arange(2), tokens.argmax(-1)] @ clip.text_projection
        torch.testing.assert_close(clip.encode_text(tokens), full, rtol=1e-5, atol=1e-5)  # same math, other GEMM shapes


def test_layernorm_runs_in_fp32():
    ln = LayerNorm(8)
    x = torch.randn(4, 8).half()
    out = ln(x)
    assert out.dtype == torch.float16
    assert torch.equal(out, F.layer_norm(x.float(), (8,), ln.weight, ln.bias, 1e-5).half())
