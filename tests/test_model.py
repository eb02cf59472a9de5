"""The Gamma head and scenes: mixed batches, scene handling, text-feature caching."""

import pytest
import torch

import gamma_iqa

from .conftest import images


def test_extreme_logit_scales_give_the_mean_and_the_bounds_of_the_levels(tiny):
    levels = tiny.score_level  # (K,) = (0.1, 0.3, 0.55, 0.7, 0.95), set by perturb
    with torch.no_grad():
        tiny.clip.logit_scale.fill_(-40.0)  # exp = 4e-18: every level equally likely
        torch.testing.assert_close(tiny(images(3)), levels.mean().expand(3), rtol=0, atol=1e-7)
        # Image features (2, E) whose adapted direction is the anchor of the highest level (image 0) and of the
        # lowest (image 1); the other anchors (2, K, E) are random, at cosines far below 1.
        g = torch.Generator().manual_seed(0)
        dim = tiny.adapter.down.in_features
        image = torch.randn(2, dim, generator=g)
        anchors = torch.randn(2, levels.numel(), dim, generator=g)
        anchors[0, levels.argmax()] = tiny.adapter(image[:1])[0]
        anchors[1, levels.argmin()] = tiny.adapter(image[1:])[0]
        tiny.clip.logit_scale.fill_(8.0)  # exp = 2981: the anchor at cosine 1 takes all the weight
        assert tiny.head(image, anchors).tolist() == [levels.max().item(), levels.min().item()]
        tiny.clip.logit_scale.fill_(0.0)  # exp = 1: a soft expectation, strictly inside the bounds
        soft = tiny.head(image, anchors)
    assert (soft[0] < levels.max()) and (soft[1] > levels.min()) and soft[0] > soft[1]


def test_head_matches_the_formula(tiny):
    x = images(2)
    with torch.no_grad():
        f = tiny.encode_image(x)
        a = torch.relu(tiny.adapter.up.weight @ torch.relu(tiny.adapter.down.weight @ f.T)).T
        f = f + a
        t = tiny.text_features("face")
        cos = (f / f.norm(dim=-1, keepdim=True)) @ (t / t.norm(dim=-1, keepdim=True)).T
        p = torch.softmax(tiny.clip.logit_scale.exp() * cos, dim=-1)
        torch.testing.assert_close(tiny(x, "face"), p @ tiny.score_level, rtol=0, atol=1e-6)


def test_mixed_scene_batch_equals_one_by_one(tiny):
    x = images(5)
    scenes = ["natural", "aigc", "face", "natural", "aesthetic"]
    with torch.no_grad():
        mixed = tiny(x, scenes)
        # Exactly the rows of the same batch scored per scene ...
        for scene in set(scenes):
            rows = [i for i, s in enumerate(scenes) if s == scene]
            assert torch.equal(mixed[rows], tiny(x, scene)[rows])
        # ... and the one-by-one calls up to the last bits of a batched matrix product.
        single = torch.cat([tiny(x[i : i + 1], s) for i, s in enumerate(scenes)])
        torch.testing.assert_close(mixed, single, rtol=0, atol=1e-6)


def test_different_scenes_give_different_scores(tiny):
    x = images(1)
    with torch.no_grad():
        scores = {s: float(tiny(x, s)) for s in ["natural", "aigc", "underwater", "face", "aesthetic", "generic"]}
    assert len(set(scores.values())) == 6


def test_scene_errors(tiny):
    with pytest.raises(ValueError, match=r"unknown scene 'space'.*valid scenes: generic, natural"):
        tiny(images(1), "space")
    with pytest.raises(ValueError, match="got 1 scenes for 2 images"):
        tiny(images(2), ["natural"])


def test_generic_model_scores_every_scene_with_its_prompts():
    model = gamma_iqa.create_model(
        "gamma-test", prompts={"generic": gamma_iqa.get_scene("generic")}, default_scene="generic"
    )
    assert model.config.is_generic and "face" in model.scenes
    assert model.prompt_key("face") == "generic"
    with torch.no_grad():
        assert torch.equal(model(images(2), "face"), model(images(2), "natural"))


def test_text_features_cache_follows_weight_changes(tiny):
    x = images(2)
    with torch.no_grad():
        before = tiny(x, "natural")
        cached = tiny.text_features("natural")
        assert tiny.text_features("natural") is cached  # no recompute while weights stand still
        tiny.clip.transformer.resblocks[-1].mlp.scale.add_(0.5)  # any in-place change bumps the version
        after = tiny(x, "natural")
        assert tiny.text_features("natural") is not cached
    assert not torch.equal(before, after)
    fresh = tiny.clip.encode_text(tiny.tokens("natural"))  # with autograd: never cached
    assert fresh.requires_grad


def test_bad_image_shape(tiny):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny(torch.rand(3, 64, 64))


def test_registered_models_and_seeded_build():
    assert {"gamma-vit-b16", "gamma-vit-b16-sdp", "gamma-test"} <= set(gamma_iqa.list_models())
    a, b = gamma_iqa.create_model("gamma-test"), gamma_iqa.create_model("gamma-test")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    c = gamma_iqa.create_model("gamma-test", seed=1)
    assert not torch.equal(a.adapter.down.weight, c.adapter.down.weight)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        gamma_iqa.create_model("nope")
    with pytest.raises(ValueError, match="bad override"):
        gamma_iqa.create_model("gamma-test", wings=2)


def test_released_models_need_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("GAMMA_IQA_HOME", str(tmp_path))
    with pytest.raises(gamma_iqa.CheckpointError, match="gamma-iqa convert"):
        gamma_iqa.create_model("gamma-vit-b16")
