"""Checkpoints: our format, conversion of the original layout, CLIP backbones, and their error messages."""

import dataclasses
import re
import shutil

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import gamma_iqa
from gamma_iqa.models.clip import CLIP, load_clip_state_dict
from gamma_iqa.models.convert import rename_original
from gamma_iqa.models.state import CheckpointError

from .conftest import images, perturb, shared_file


def to_original_names(state: dict) -> dict:
    """Our key names -> the original release's (written independently of rename_original)."""
    out = {}
    for k, v in state.items():
        k = "clip_model." + k[len("clip.") :] if k.startswith("clip.") else k
        k = k.replace(".mlp.shared.", ".mlp.useful_experts.").replace(".mlp.router.", ".mlp.gating.layer1.")
        k = re.sub(r"\.mlp\.experts\.(\d)\.", r".mlp.experts.expert_\1.", k)
        k = k.replace("adapter.down.", "adapter.fc.0.").replace("adapter.up.", "adapter.fc.2.")
        out[k] = v
    return out


def one_head_tiny() -> gamma_iqa.Gamma:
    """gamma-test with width // 64 heads, the only head count a checkpoint without config can express."""
    cfg = gamma_iqa.create_model("gamma-test").config
    model = gamma_iqa.create_model("gamma-test", clip=dataclasses.replace(cfg.clip, vision_heads=None, text_heads=None))
    perturb(model)
    return model


def test_save_load_is_bit_exact(tiny, tmp_path):
    folder = gamma_iqa.save_checkpoint(tiny, tmp_path / "ckpt")
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors"}
    loaded = gamma_iqa.load_checkpoint(folder)
    assert loaded.config == tiny.config
    a, b = tiny.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [p.requires_grad for p in tiny.parameters()] == [p.requires_grad for p in loaded.parameters()]
    with torch.no_grad():
        assert torch.equal(tiny(images(2), "face"), loaded(images(2), "face"))
    assert torch.equal(loaded.mean, tiny.mean) and torch.equal(loaded.std, tiny.std)


def test_lone_safetensors_rebuilds_its_config(tiny, tmp_path):
    folder = gamma_iqa.save_checkpoint(tiny, tmp_path / "ckpt")
    lone = tmp_path / "elsewhere" / "tiny.safetensors"
    lone.parent.mkdir()
    shutil.copyfile(folder / "model.safetensors", lone)
    loaded = gamma_iqa.create_model(lone)
    assert loaded.config == tiny.config
    with torch.no_grad():
        assert torch.equal(tiny(images(1)), loaded(images(1)))


def test_synthetic_original_checkpoint_converts_and_scores_the_same(tmp_path):
    model = one_head_tiny()
    original = {k: v.half() for k, v in to_original_names(model.state_dict()).items()}
    with torch.no_grad():
        for k in original:  # the release stores fp16: make our reference model hold the same values
            model.state_dict()[rename_original({k: 0}).popitem()[0]].copy_(original[k].float())
    path = tmp_path / "gamma_weight.pth"
    torch.save({"params": original}, path)
    converted = gamma_iqa.convert_original(path, variant="sdp")
    assert converted.config.num_moe_layers == 2 and converted.config.adapter_dim == 16
    assert set(converted.config.prompts) == {"natural", "aigc", "underwater", "face", "aesthetic"}
    scenes = ["natural", "aigc", "underwater", "face", "aesthetic"]
    with torch.no_grad():
        torch.testing.assert_close(converted(images(5), scenes), model(images(5), scenes), rtol=0, atol=1e-6)
    plain = gamma_iqa.convert_original(path)
    assert plain.config.is_generic and plain.config.default_scene == "generic"


def test_rename_covers_the_published_key_list():
    spec = shared_file("spec/gamma_params.txt", "the published key list")
    rows = [line.split("\t") for line in spec.read_text().splitlines() if line and not line.startswith("#")]
    published = {name: tuple(int(d) for d in re.findall(r"\d+", shape)) for name, shape, *_ in rows}
    assert len(published) == 485
    with torch.device("meta"):
        model = gamma_iqa.create_model("gamma-vit-b16", pretrained=False)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    renamed = rename_original({k: torch.empty(0) for k in published})
    assert {k: published[orig] for k, orig in zip(renamed, published, strict=True)} == ours
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    published_trainable = {k for (k, _), row in zip(renamed.items(), rows, strict=True) if row[3] == "train"}
    assert trainable == published_trainable


def test_wrong_and_truncated_checkpoints_fail_in_one_line(tiny, tmp_path):
    def error(path, fn=gamma_iqa.load_checkpoint) -> str:
        with pytest.raises(CheckpointError) as e:
            fn(path)
        message = str(e.value)
        assert "\n" not in message and str(path) in message
        return message

    assert "no such file" in error(tmp_path / "missing")
    folder = gamma_iqa.save_checkpoint(tiny, tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert "unreadable safetensors" in error(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    assert "unreadable safetensors" in error(junk)
    assert "no model.safetensors" in error(tmp_path)
    bare = tmp_path / "bare.safetensors"
    save_file({"x": torch.zeros(2)}, str(bare))
    assert "no gamma-iqa config" in error(bare)
    other = gamma_iqa.create_model("gamma-test", num_experts=2)
    mismatched = tmp_path / "mismatch"
    gamma_iqa.save_checkpoint(other, mismatched)
    (mismatched / "config.json").write_text((folder / "config.json").read_text())
    assert "do not fit model gamma-test" in error(mismatched)
    pickle = tmp_path / "w.pth"
    pickle.write_bytes(b"x")
    assert "gamma-iqa convert" in error(pickle)

    original = tmp_path / "orig.pth"
    torch.save({"params": to_original_names(one_head_tiny().state_dict())}, original)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(original.read_bytes()[:5000])
    assert "or a truncated one" in error(truncated, gamma_iqa.convert_original)
    wrong = tmp_path / "wrong.pth"
    torch.save({"state": {}}, wrong)
    assert "not an original Gamma checkpoint" in error(wrong, gamma_iqa.convert_original)
    partial = tmp_path / "partial.pth"
    state = to_original_names(one_head_tiny().state_dict())
    del state["score_level"]
    torch.save({"params": state}, partial)
    assert "1 missing keys (e.g. score_level)" in error(partial, gamma_iqa.convert_original)


def _clip_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    cfg = gamma_iqa.create_model("gamma-test").config.clip
    return CLIP(dataclasses.replace(cfg, vision_heads=None, text_heads=None)).state_dict()


def test_backbone_rounding_follows_the_original(tmp_path):
    state = _clip_state()
    path = tmp_path / "clip.pt"
    torch.save({**state, "input_resolution": torch.tensor(64)}, path)
    loaded = load_clip_state_dict(path)
    assert "input_resolution" not in loaded
    rounded = [
        "visual.conv1.weight",
        "visual.proj",
        "text_projection",
        "transformer.resblocks.0.attn.in_proj_weight",
        "visual.transformer.resblocks.1.mlp.c_fc.bias",
        "transformer.resblocks.3.attn.out_proj.weight",
    ]
    exact = [
        "visual.ln_pre.weight",
        "visual.class_embedding",
        "positional_embedding",
        "token_embedding.weight",
        "logit_scale",
        "visual.positional_embedding",
        "ln_final.bias",
    ]
    for k in rounded:
        assert torch.equal(loaded[k], state[k].half().float()) and not torch.equal(loaded[k], state[k]), k
    for k in exact:
        assert torch.equal(loaded[k], state[k]), k
    assert torch.equal(load_clip_state_dict(path, round_like_original=False)["visual.proj"], state["visual.proj"])


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_backbone_formats(tmp_path):
    state = _clip_state()
    st = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    wrapped = tmp_path / "ddp.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, wrapped)
    ts = tmp_path / "clip_jit.pt"
    torch.jit.save(torch.jit.script(_holder(state)), str(ts))
    want = load_clip_state_dict(st)
    for path in (wrapped, ts):
        got = load_clip_state_dict(path)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), path
    model = gamma_iqa.create_model("gamma-test", backbone=ts)
    assert torch.equal(model.clip.visual.conv1.weight, want["visual.conv1.weight"])
    assert torch.equal(
        model.clip.transformer.resblocks[-1].mlp.experts[0].c_fc.weight, want["transformer.resblocks.3.mlp.c_fc.weight"]
    )
    bad = tmp_path / "gamma.pth"
    torch.save({"params": {}}, bad)
    with pytest.raises(CheckpointError, match="gamma-iqa convert"):
        load_clip_state_dict(bad)


def _holder(state: dict) -> nn.Module:
    """A TorchScript-able module whose state dict has the given (dotted) keys, like OpenAI's JIT archives."""
    root = nn.Module()
    for key, value in state.items():
        *path, leaf = key.split(".")
        mod = root
        for part in path:
            if not hasattr(mod, part):
                mod.add_module(part, nn.Module())
            mod = getattr(mod, part)
        mod.register_parameter(leaf, nn.Parameter(value.clone(), requires_grad=False))
    return root
