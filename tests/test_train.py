"""Training: configs, sampler, what moves, learning, resume, DDP equivalence, failure handling, recipe dry runs."""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import gamma_iqa
from gamma_iqa.cli import main
from gamma_iqa.data.sampler import JointSampler
from gamma_iqa.data.transforms import crop_offsets, image_to_tensor, make_crops
from gamma_iqa.engine import train as train_module
from gamma_iqa.engine.train import TrainingError, train
from gamma_iqa.engine.trainconfig import TrainConfig, load_config

from .conftest import run_gamma_iqa

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def toy_dataset(root: Path, n: int = 48, seed: int = 0) -> dict:
    """Images whose brightness is their MOS (1..5): a task the tiny model can learn."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = ["image,mos"]
    for i in range(n):
        b = rng.uniform(0.1, 0.9)
        pixels = np.clip(b + 0.08 * rng.standard_normal((72, 80, 3)), 0, 1)
        Image.fromarray((pixels * 255).astype(np.uint8)).save(root / "img" / f"{i:02d}.png")
        rows.append(f"img/{i:02d}.png,{1 + 4 * b:.5f}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return {"name": "toy", "csv": str(root / "labels.csv"), "mos_range": [1, 5], "scene": "natural", "root": str(root)}


def toy_config(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(
        model="gamma-test",
        datasets=(toy_dataset(tmp_path / "toy"),),
        epochs=2,
        lr=1e-3,
        workers=0,
        log_every_steps=1,
        save_every_steps=0,
        eval_epochs=(),
        eval_crops=2,
        out=str(tmp_path / "run"),
    )
    return TrainConfig(**{**base, **kw})


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


# ---- configuration -------------------------------------------------------------------------------------------------
def test_recipe_configs_match_the_paper():
    mixed = load_config(CONFIGS / "gamma.yaml")
    assert (mixed.batch_size, mixed.lr, mixed.epochs, mixed.sampler, mixed.eval_epochs) == (
        8,
        2e-5,
        10,
        "uniform",
        (5, 10),
    )
    assert mixed.moe_lr is None and mixed.hflip and mixed.seed == 123 and mixed.split == 1
    assert len(mixed.datasets) == 12 and set(mixed.datasets) <= set(gamma_iqa.list_datasets())
    sdp = load_config(CONFIGS / "gamma-sdp.yaml")
    assert sdp.model == "gamma-vit-b16-sdp" and sdp.datasets == mixed.datasets
    koniq, livec = load_config(CONFIGS / "gamma-t-koniq.yaml"), load_config(CONFIGS / "gamma-t-livec.yaml")
    assert (koniq.datasets, koniq.lr, koniq.epochs, koniq.eval_every_epochs) == (("koniq10k",), 2e-4, 20, 2)
    assert (livec.datasets, livec.lr, livec.epochs, livec.eval_every_steps) == (("livec",), 2e-4, 50, 200)


@pytest.mark.parametrize("name", ["gamma.yaml", "gamma-sdp.yaml", "gamma-t-koniq.yaml", "gamma-t-livec.yaml"])
def test_recipe_configs_build_the_published_model(name):
    cfg = load_config(CONFIGS / name)
    with torch.device("meta"):
        model = gamma_iqa.create_model(cfg.model, pretrained=False)
    assert sum(p.numel() for p in model.parameters()) == 272_704_566
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 123_083_829


def test_overrides_and_errors(tmp_path):
    cfg = load_config(
        CONFIGS / "gamma.yaml", ["lr=1e-4", "datasets=koniq10k,livec", "eval_epochs=[1, 2]", "moe_lr=null"]
    )
    assert (cfg.lr, cfg.datasets, cfg.eval_epochs, cfg.moe_lr) == (1e-4, ("koniq10k", "livec"), (1, 2), None)
    with pytest.raises(ValueError, match="unknown training settings: learning_rate"):
        load_config(CONFIGS / "gamma.yaml", ["learning_rate=1"])
    with pytest.raises(ValueError, match="epochs must be an integer"):
        load_config(CONFIGS / "gamma.yaml", ["epochs=2.5"])
    with pytest.raises(ValueError, match="expected key=value"):
        load_config(None, ["lr"])
    with pytest.raises(ValueError, match="own dataset 'x': missing csv, mos_range, scene"):
        load_config(None, ["datasets=[{name: x}]"])
    with pytest.raises(ValueError, match="own dataset 'x': mos_range must be"):  # checked as `eval` checks it
        load_config(None, ["datasets=[{name: x, csv: x.csv, mos_range: 5, scene: face}]"])
    with pytest.raises(ValueError, match=r"`config` .*nowhere\.yaml: cannot read"):
        load_config(tmp_path / "nowhere.yaml")
    with pytest.raises(ValueError, match="sampler must be"):
        load_config(CONFIGS / "gamma.yaml", ["sampler=random"])


# ---- sampler -------------------------------------------------------------------------------------------------------
def test_sampler_orders_and_shards():
    s = JointSampler([30, 10, 5], batch_size=8, seed=1)
    order = s.order(0)
    assert s.steps_per_epoch == 5 and len(order) == 40 and len(set(order.tolist())) == 40  # drop_last, no repeats
    assert not torch.equal(order, s.order(1)) and torch.equal(
        order, JointSampler([30, 10, 5], batch_size=8, seed=1).order(0)
    )
    for world, accum in [(1, 2), (2, 1), (2, 2), (4, 2)]:
        shards = [p for r in range(world) for ps in s.positions(3, rank=r, world=world, accum=accum) for p in ps]
        assert shards == list(range(24, 32))  # the processes' micro-batches tile the global batch of step 3
    with pytest.raises(ValueError, match="does not split"):
        s.positions(0, world=3)
    balanced = JointSampler([1000, 10, 10], batch_size=8, mode="balanced", seed=0).order(0)
    counts = np.bincount(np.searchsorted([1000, 1010], balanced.numpy(), side="right"))
    assert counts.min() > 0.25 * len(balanced)  # each dataset about a third, not 98% / 1% / 1%


# ---- what moves, and learning --------------------------------------------------------------------------------------
def test_steps_change_trainable_weights_only(tmp_path):
    start = gamma_iqa.create_model("gamma-test", seed=123).state_dict()
    out = train(toy_config(tmp_path, max_steps=3))
    after = weights(out / "last")
    trainable = {n for n, p in gamma_iqa.create_model("gamma-test").named_parameters() if p.requires_grad}
    for name, value in after.items():
        if name in trainable:
            assert not torch.equal(value, start[name]), name
        else:
            assert torch.equal(value, start[name]), name


def test_loss_falls_on_a_learnable_task(tmp_path):
    cfg = toy_config(tmp_path, epochs=6, lr=3e-3, eval_epochs=(1, 6))
    out = train(cfg)
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    losses = [float(r[4]) for r in rows if r[2:4] == ["train", "loss"]]
    per_epoch = len(losses) // 6
    assert np.mean(losses[-per_epoch:]) < 0.5 * np.mean(losses[:per_epoch])
    srcc = [float(r[4]) for r in rows if r[2:4] == ["eval", "toy/srcc"]]
    assert len(srcc) == 2 and srcc[-1] > 0.8
    assert (out / "progress.png").is_file() and (out / "best" / "model.safetensors").is_file()
    assert load_config(out / "config.yaml") == cfg  # the effective config, saved with the run


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    full = train(toy_config(tmp_path / "a", epochs=2, eval_epochs=(1,)))
    cfg = toy_config(tmp_path / "b", epochs=2, eval_epochs=(1,), max_steps=7)  # stops mid-epoch 2
    part = train(cfg)
    assert weights(part / "last").keys() == weights(full / "last").keys()
    resumed = train(dataclasses.replace(cfg, max_steps=0), resume=True)
    a, b = weights(full / "last"), weights(resumed / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda p: [r for r in p.read_text().splitlines()]  # noqa: E731
    assert strip(full / "metrics.csv") == strip(resumed / "metrics.csv")
    with pytest.raises(TrainingError, match="already holds a run"):
        train(cfg)


def test_grad_checkpointing_gives_the_same_gradients(tiny):
    x = torch.rand(2, 3, 64, 64)
    grads = []
    for flag in (False, True):
        tiny.zero_grad()
        tiny.set_grad_checkpointing(flag)
        tiny(x, ["face", "natural"]).sum().backward()
        grads.append([p.grad.clone() for p in tiny.parameters() if p.requires_grad])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = torch.nn.functional.mse_loss
    calls = {"n": 0}

    def poisoned(pred, target):
        calls["n"] += 1
        return real(pred, target) * (float("nan") if calls["n"] >= 4 else 1.0)

    monkeypatch.setattr(train_module.torch.nn.functional, "mse_loss", poisoned)
    cfg = toy_config(tmp_path, save_every_steps=1, log_every_steps=2)
    with pytest.raises(TrainingError, match=r"loss became nan .* last good checkpoint is .*last"):
        train(cfg)
    state = torch.load(Path(cfg.out) / "last" / "train_state.pt", weights_only=True)
    assert state["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in weights(Path(cfg.out) / "last").values())


# ---- scale-out -----------------------------------------------------------------------------------------------------
def test_two_gloo_processes_equal_one_with_the_same_effective_batch(tmp_path):
    data = toy_dataset(tmp_path / "toy", n=24)
    sets = [
        "model=gamma-test",
        f"datasets=[{data}]".replace("'", '"'),
        "epochs=1",
        "lr=1e-3",
        "workers=0",
        "eval_epochs=[]",
        "eval_crops=1",
    ]
    common = [arg for value in sets for arg in ("--set", value)]
    one = run_gamma_iqa(["train", *common, "--set", "accum=2", "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = run_gamma_iqa(["train", *common, "--out", str(tmp_path / "two")], processes=2, port=29733)
    assert two.returncode == 0, two.stderr
    a, b = weights(tmp_path / "one" / "last"), weights(tmp_path / "two" / "last")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


# ---- the recipes, on stand-ins -------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::gamma_iqa.metrics.ConstantInputWarning")  # stand-ins have 1-image test splits
@pytest.mark.parametrize("name", ["gamma.yaml", "gamma-sdp.yaml", "gamma-t-koniq.yaml", "gamma-t-livec.yaml"])
def test_recipe_dry_run_on_stand_ins(tmp_path, name, capsys):
    from .test_data import BUILDERS

    cfg = load_config(CONFIGS / name)
    for dataset in cfg.datasets:
        BUILDERS[dataset](tmp_path / "data")
    model = "gamma-test" if "sdp" not in name else str(_tiny_sdp(tmp_path))
    code = main(
        [
            "train",
            "--config",
            str(CONFIGS / name),
            "--out",
            str(tmp_path / "run"),
            "--set",
            f"model={model}",
            "--set",
            "backbone=null",
            "--set",
            f"data_root={tmp_path / 'data'}",
            "--set",
            "epochs=1",
            "--set",
            "batch_size=2",
            "--set",
            "workers=0",
            "--set",
            "eval_crops=1",
            "--set",
            "eval_every_steps=0",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "last" / "train_state.pt").is_file()
    assert "eval" in (tmp_path / "run" / "metrics.csv").read_text()  # evaluated at the end on every test split


def _tiny_sdp(tmp_path: Path) -> Path:
    """gamma-test with only the SDP scenes, saved: the SDP recipe's stand-in."""
    base = gamma_iqa.create_model("gamma-test")
    cfg = dataclasses.replace(base.config, prompts={k: v for k, v in base.config.prompts.items() if k != "generic"})
    return gamma_iqa.save_checkpoint(gamma_iqa.Gamma(cfg), tmp_path / "tiny-sdp")


def test_cli_errors(tmp_path, capsys, monkeypatch):
    assert main(["train", "--set", "wings=2"]) == 2
    assert "unknown training settings: wings" in capsys.readouterr().err
    # Library messages name parameters; the command line names its flags.
    assert main(["train", "--set", "lr"]) == 2
    assert capsys.readouterr().err == "gamma-iqa train: error: --set 'lr': expected key=value\n"
    assert main(["train", "--config", str(tmp_path / "nowhere.yaml")]) == 2
    assert f"error: --config {tmp_path / 'nowhere.yaml'}: cannot read" in capsys.readouterr().err
    toy = [f"datasets=[{toy_dataset(tmp_path / 'toy1', n=12)}]".replace("'", '"'), "model=gamma-test", "workers=0"]
    sets = [arg for value in toy for arg in ("--set", value)]
    assert main(["train", *sets, "--out", str(tmp_path / "none"), "--resume"]) == 1
    assert "error: --resume: no checkpoint with train_state.pt" in capsys.readouterr().err
    monkeypatch.setenv("GAMMA_IQA_HOME", str(tmp_path / "home"))
    data = toy_dataset(tmp_path / "toy", n=12)
    argv = ["train", "--set", f"datasets=[{data}]".replace("'", '"'), "--out", str(tmp_path / "run")]
    assert main(argv) == 1  # gamma-vit-b16 without backbone weights
    assert "set backbone=PATH" in capsys.readouterr().err


# ---- issue 12 options: ranking, grouped batches, rescale, backbone fine-tuning -------------------------------------
def grouped_dataset(root: Path, photos: int = 6, versions: int = 4, size: tuple[int, int] = (240, 256)) -> dict:
    """`photos` textures in `versions` each, darker versions worse (MOS 1..5 = brightness), a `photo` group column."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = ["image,mos,photo"]
    for p in range(photos):
        texture = rng.standard_normal((size[1], size[0], 3))
        base = rng.uniform(0.6, 0.9)
        for v in range(versions):
            b = base * (1 - 0.2 * v)
            pixels = np.clip(b + 0.08 * texture, 0, 1)
            Image.fromarray((pixels * 255).astype(np.uint8)).save(root / "img" / f"{p}-{v}.png")
            rows.append(f"img/{p}-{v}.png,{1 + 4 * b:.5f},photo{p}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return {
        "name": "grouped",
        "csv": str(root / "labels.csv"),
        "mos_range": [1, 5],
        "scene": "natural",
        "root": str(root),
        "group_column": "photo",
    }


def test_rank_loss_is_zero_beyond_the_margin_and_exact_otherwise():
    target = torch.tensor([0.8, 0.6, 0.1, 0.3, 0.79])
    groups = torch.tensor([0, 0, 0, 1, 0])
    # Group 0 holds pairs (0,1) (0,2) (1,2) (0,4) (4,1) (4,2); sample 3 is alone in group 1: it pairs with nothing.
    good = torch.tensor([0.9, 0.5, 0.2, -5.0, 0.85])  # every pair ordered, by at least min(0.1, target gap)
    assert train_module.rank_loss(good, target, groups, 0.1) == 0
    # (0,1) reversed by 0.05: 0.1 + 0.05; (0,4) gap 0.01 caps the margin: 0.01 - (0.5 - 0.52) = 0.03; (4,1) reversed
    # by 0.03: 0.13; (0,2), (1,2), (4,2) ordered beyond 0.1: 0.
    bad = torch.tensor([0.5, 0.55, 0.2, 9.0, 0.52], requires_grad=True)
    loss = train_module.rank_loss(bad, target, groups, 0.1)
    torch.testing.assert_close(loss, torch.tensor((0.15 + 0.03 + 0.13) / 6))
    loss.backward()
    assert bad.grad[3] == 0 and bad.grad[2] == 0  # the lone sample and the pairs beyond the margin give no gradient
    assert train_module.rank_loss(bad, target, torch.arange(5), 0.1) == 0  # no shared group: no pair
    assert train_module.rank_loss(bad, torch.full((5,), 0.5), groups, 0.1) == 0  # ties: no pair


def test_grouped_sampler_puts_k_versions_of_distinct_groups_in_each_batch():
    groups = [g for g, n in enumerate([5, 1, 3, 6, 2, 4, 2, 3]) for _ in range(n)]  # 26 images in 8 groups
    s = JointSampler([20, 6], batch_size=6, mode="grouped", seed=3, groups=groups, group_size=2)
    order = s.order(0)
    assert s.steps_per_epoch == 4 and len(order) == 24
    for step in range(4):
        batch = [groups[i] for i in order[6 * step : 6 * step + 6].tolist()]
        assert batch[0::2] == batch[1::2] and len(set(batch)) == 3  # 3 distinct groups, 2 consecutive versions each
        members = order[6 * step : 6 * step + 6].view(3, 2)
        assert all(row[0] != row[1] for row, g in zip(members, batch[0::2], strict=True) if g != 1)  # 1: one image
    again = JointSampler([20, 6], batch_size=6, mode="grouped", seed=3, groups=groups, group_size=2)
    assert torch.equal(again.order(0), order) and not torch.equal(s.order(1), order)  # a function of (seed, epoch)
    for world, accum in [(1, 3), (3, 1)]:  # micro-batches of 2 positions hold one whole group each
        micro = [ps for r in range(world) for ps in s.positions(2, rank=r, world=world, accum=accum)]
        assert [p for ps in micro for p in ps] == list(range(12, 18))
    with pytest.raises(ValueError, match="must be a multiple of `group_size` 4"):
        JointSampler([26], batch_size=6, mode="grouped", groups=groups, group_size=4)
    with pytest.raises(ValueError, match="8 groups are fewer than the 12"):
        JointSampler([26], batch_size=24, mode="grouped", groups=groups, group_size=2)
    with pytest.raises(ValueError, match="one group id per training image"):
        JointSampler([26], batch_size=6, mode="grouped", group_size=2)


def test_grouped_sampler_anchors_each_group_on_its_best_image():
    sizes = [5, 1, 3, 6, 2, 4, 2, 3]  # 26 images in 8 groups
    groups = [g for g, n in enumerate(sizes) for _ in range(n)]
    scores = np.random.default_rng(0).uniform(size=26).round(1)  # ties within groups: the first of equals wins
    scores[[18, 20]] = 2.0  # group 5 (images 17..20): two best, 18 before 20
    first = {g: groups.index(g) for g in range(8)}
    best = {g: max(range(first[g], first[g] + n), key=lambda i: (scores[i], -i)) for g, n in enumerate(sizes)}
    assert best[5] == 18
    for k in (2, 3):
        s = JointSampler([20, 6], batch_size=6, mode="grouped", seed=3, groups=groups, group_size=k, anchors=scores)
        others = {g: set() for g in range(8)}
        for epoch in range(20):
            for picks in s.order(epoch).view(-1, k).tolist():
                g = groups[picks[0]]
                assert {groups[i] for i in picks} == {g} and picks[0] == best[g]  # the group's best first
                rest = picks[1:]
                if sizes[g] >= k:  # k - 1 distinct others
                    assert len(set(rest)) == k - 1 and best[g] not in rest
                others[g].update(rest)
        assert all(others[g] == set(range(first[g], first[g] + n)) - {best[g]} for g, n in enumerate(sizes) if n > 2)
    plain = JointSampler([20, 6], batch_size=6, mode="grouped", seed=3, groups=groups, group_size=2)
    anchored = JointSampler([20, 6], batch_size=6, mode="grouped", seed=3, groups=groups, group_size=2, anchors=scores)
    assert not torch.equal(plain.order(0), anchored.order(0))
    with pytest.raises(ValueError, match="`anchors` needs one score per training image"):
        JointSampler([20, 6], batch_size=6, mode="grouped", groups=groups, group_size=2, anchors=scores[:-1])


def full_resize_crop(image: Image.Image, size: int, scale_range: tuple[float, float], seed: int):
    """What `rescaled_crop` should give, the slow way: the crop of the whole image resized; and the factor drawn."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = scale_range
    u = float(torch.rand((), generator=g, dtype=torch.float64))
    w, h = image.size
    factor = max(lo * (hi / lo) ** u, size / min(w, h))
    new_w, new_h = max(size, round(w * factor)), max(size, round(h * factor))
    ((top, left),) = crop_offsets(new_h, new_w, size, 1, g)
    whole = image.resize((new_w, new_h), Image.Resampling.LANCZOS)
    return image_to_tensor(whole.crop((left, top, left + size, top + size))), factor, (new_w, new_h)


def test_rescaled_crop_is_the_crop_of_the_rescaled_image(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:120, 0:160]
    pixels = np.stack([xx * 1.5, yy * 2.0, 128 + 60 * np.sin(xx / 3 + yy / 5)], -1) + rng.normal(0, 25, (120, 160, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(tmp_path / "big.png")  # texture: windows differ
    Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    samples = [train_module.Sample(tmp_path / "big.png", 0.5, "natural", None)]
    big, small = Image.open(tmp_path / "big.png").convert("RGB"), Image.open(tmp_path / "small.png").convert("RGB")
    images = train_module.TrainImages(samples, size=32, hflip=False, seed=1, scale_range=(0.25, 1.0))
    factors = []
    for seed in range(24):
        out = images.rescaled_crop(big, torch.Generator().manual_seed(seed))
        assert torch.equal(out, images.rescaled_crop(big, torch.Generator().manual_seed(seed)))  # seeded
        ref, factor, new = full_resize_crop(big, 32, (0.25, 1.0), seed)
        assert out.shape == (3, 32, 32) and min(new) >= 32 and abs(new[0] / new[1] - 4 / 3) < 0.05  # aspect kept
        assert (out - ref).abs().max() <= 1 / 255 + 1e-6, (seed, factor)
        factors.append(factor)
    assert min(factors) < 0.5 < max(factors) and min(factors) >= 32 / 120  # both octaves; the floor raised
    assert len({round(f, 6) for f in factors}) == len(factors)  # a factor of its own per draw
    # a range under the crop size: raised to keep the short side at `size`
    floor = train_module.TrainImages(samples, size=32, hflip=False, seed=1, scale_range=(0.01, 0.02))
    ref, factor, new = full_resize_crop(big, 32, (0.01, 0.02), 5)
    assert new == (43, 32) and (floor.rescaled_crop(big, torch.Generator().manual_seed(5)) - ref).abs().max() <= 1 / 255
    # factor 1: a plain crop, the offsets drawn after the factor
    same = train_module.TrainImages(samples, size=32, hflip=False, seed=1, scale_range=(1.0, 1.0))
    g = torch.Generator().manual_seed(3)
    torch.rand((), generator=g, dtype=torch.float64)
    assert torch.equal(
        same.rescaled_crop(big, torch.Generator().manual_seed(3)), make_crops(big, 1, 32, generator=g).crops[0]
    )
    # under the crop size: left to make_crops (which enlarges it), after the factor's draw
    g = torch.Generator().manual_seed(3)
    torch.rand((), generator=g, dtype=torch.float64)
    expected = make_crops(small, 1, 32, generator=g).crops[0]
    assert torch.equal(images.rescaled_crop(small, torch.Generator().manual_seed(3)), expected)
    a, b = images[(0, 5, 0)][0], images[(0, 5, 0)][0]
    plain = train_module.TrainImages(samples, size=32, hflip=False, seed=1)
    assert torch.equal(a, b) and a.shape == plain[(0, 5, 0)][0].shape == (3, 32, 32)
    assert not torch.equal(a, images[(0, 6, 0)][0]) and not torch.equal(a, images[(1, 5, 0)][0])


def coordinate_images(folder: Path) -> list[train_module.Sample]:
    """Two 200 x 150 images whose pixels give their coordinates: A (x, y, 0) and B (255 - x, 255 - y, 200)."""
    yy, xx = np.mgrid[0:150, 0:200]
    a = np.stack([xx, yy, np.zeros_like(xx)], -1)
    b = np.stack([255 - xx, 255 - yy, np.full_like(xx, 200)], -1)
    for name, pixels in (("a", a), ("b", b)):
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{name}.png")
    return [train_module.Sample(folder / f"{n}.png", 0.5, "natural", None) for n in "ab"]


def window(crop: torch.Tensor, image: int) -> torch.Tensor:
    """The source (x, y) of each pixel of a crop of `coordinate_images`' image 0 (A) or 1 (B): (2, S, S)."""
    xy = crop[:2] * 255
    return 255 - xy if image == 1 else xy


@pytest.mark.parametrize("scale_range", [(), (0.5, 1.0)])
def test_shared_views_give_a_group_one_view(tmp_path, scale_range):
    samples = coordinate_images(tmp_path)
    images = train_module.TrainImages(samples, size=48, hflip=True, seed=4, scale_range=scale_range, shared_views=2)
    alone = train_module.TrainImages(samples, size=48, hflip=True, seed=4, scale_range=scale_range)
    tol = 0 if not scale_range else 1.5  # Lanczos of a ramp: the ramp, up to 8-bit rounding and edge ringing
    flips = set()
    for epoch in range(4):
        a8, b9, b10 = images[(epoch, 8, 0)][0], images[(epoch, 9, 1)][0], images[(epoch, 10, 1)][0]
        assert a8[2].max() == 0 and b9[2].min() > 0.7  # the two images' own content
        assert (window(a8, 0) - window(b9, 1)).abs().max() <= tol  # one window, scale and flip for positions 8, 9
        assert (window(b9, 1) - window(b10, 1)).abs().max() > 5  # position 10 starts the next view
        assert torch.equal(images[(epoch, 8, 1)][0], b9) and torch.equal(alone[(epoch, 4, 1)][0], b9)  # view 9 // 2
        flips.add(bool(window(a8, 0)[0, 0, 0] > window(a8, 0)[0, 0, -1]))
    assert flips == {True, False}  # the flip is part of the shared view


def test_grouped_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="scale_range must be empty or"):
        toy_config(tmp_path, scale_range=(1.0, 0.5))
    with pytest.raises(ValueError, match="backbone_stages must be in"):
        toy_config(tmp_path, backbone_stages=9)
    with pytest.raises(ValueError, match="group_column must be column names"):
        load_config(None, ["datasets=[{name: x, csv: x.csv, mos_range: [1, 5], scene: natural, group_column: 3}]"])
    cfg = toy_config(tmp_path, datasets=(grouped_dataset(tmp_path / "g"),), sampler="grouped", group_size=2)
    with pytest.raises(TrainingError, match="would split groups of group_size 2"):
        train(dataclasses.replace(cfg, batch_size=6, accum=2))
    with pytest.raises(TrainingError, match="backbone_lr fine-tunes gamma-lite's backbone"):
        train(dataclasses.replace(cfg, backbone_lr=1e-5, out=str(tmp_path / "r2")))
    for option in ("group_anchor", "aligned_views"):
        with pytest.raises(ValueError, match="group_anchor and aligned_views need sampler: grouped"):
            toy_config(tmp_path, sampler="balanced", **{option: True})


def test_grouped_ranking_rescaled_run_learns_and_resumes(tmp_path):
    data = grouped_dataset(tmp_path / "g", size=(72, 80))
    kw = dict(datasets=(data,), sampler="grouped", group_size=2, batch_size=4, rank_weight=1.0, rank_margin=0.1)
    kw.update(scale_range=(0.5, 1.0), epochs=6, lr=3e-3)
    full = train(toy_config(tmp_path / "a", **kw))
    rows = [line.split(",") for line in (full / "metrics.csv").read_text().splitlines()[1:]]
    ranks = [float(r[4]) for r in rows if r[2:4] == ["train", "rank"]]
    assert ranks and all(v >= 0 for v in ranks) and max(ranks) > 0  # versions of a photo met in a batch
    losses = [float(r[4]) for r in rows if r[2:4] == ["train", "loss"]]
    assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:8])  # the last two epochs against the first two
    cfg = toy_config(tmp_path / "b", max_steps=13, **kw)
    train(cfg)
    resumed = train(dataclasses.replace(cfg, max_steps=0), resume=True)
    a, b = weights(full / "last"), weights(resumed / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_anchored_aligned_grouped_run_trains_and_resumes(tmp_path, monkeypatch):
    made = []  # what the run builds its sampler and views with

    class Sampler(JointSampler):
        def __init__(self, *args, **kw):
            made.append(("anchors", kw["anchors"]))
            super().__init__(*args, **kw)

    class Views(train_module.TrainImages):
        def __init__(self, *args, **kw):
            made.append((args[0], kw["shared_views"]))
            super().__init__(*args, **kw)

    monkeypatch.setattr(train_module, "JointSampler", Sampler)
    monkeypatch.setattr(train_module, "TrainImages", Views)
    data = grouped_dataset(tmp_path / "g", size=(72, 80))
    kw = dict(datasets=(data,), sampler="grouped", group_size=2, batch_size=4, rank_weight=1.0, rank_margin=0.1)
    kw.update(scale_range=(0.5, 1.0), epochs=2, lr=3e-3, group_anchor=True, aligned_views=True)
    full = train(toy_config(tmp_path / "a", **kw))
    (_, anchors), (samples, shared) = made[:2]
    assert shared == 2 and anchors == [s.target for s in samples]  # the targets score the anchors
    rows = [line.split(",") for line in (full / "metrics.csv").read_text().splitlines()[1:]]
    ranks = [float(r[4]) for r in rows if r[2:4] == ["train", "rank"]]
    assert ranks and all(np.isfinite(v) and v >= 0 for v in ranks) and max(ranks) > 0
    start = gamma_iqa.create_model("gamma-test", seed=123).state_dict()
    a = weights(full / "last")
    assert any(not torch.equal(a[k], start[k]) for k in a)  # it trained
    cfg = toy_config(tmp_path / "b", max_steps=7, **kw)  # stops mid-epoch 2
    train(cfg)
    resumed = train(dataclasses.replace(cfg, max_steps=0), resume=True)
    b = weights(resumed / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_online_versions_are_the_anchor_view_distorted_at_sorted_strengths(tmp_path):
    rng = np.random.default_rng(1)
    for name in "ab":  # texture, which every type changes (a ramp is its own Gaussian blur)
        Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    samples = [train_module.Sample(tmp_path / f"{n}.png", 0.5, "natural", None) for n in "ab"]
    kw = dict(size=48, hflip=True, seed=4, scale_range=(0.5, 1.0), shared_views=2, anchor_every=2)
    images = train_module.TrainImages(samples, online_versions=3, online_types=("jpeg", "gaussian_blur"), **kw)
    plain = train_module.TrainImages(samples, **kw)
    kinds = set()
    for epoch in range(6):
        crop, *_, online = images[(epoch, 8, 0)]
        assert torch.equal(crop, plain[(epoch, 8, 0)][0]) and online is not None  # the anchor's own view, unchanged
        versions, strengths = online
        assert versions.shape == (3, 3, 48, 48) and versions.dtype == torch.float32 and strengths.shape == (3,)
        assert torch.all(strengths[1:] >= strengths[:-1]) and strengths.min() >= 0.05 and strengths.max() <= 1
        assert torch.equal(versions * 255, (versions * 255).round())  # 8-bit, as a stored image
        errors = [(v - crop).abs().mean().item() for v in versions]
        assert 0 < errors[0] <= errors[-1]  # distorted, the strongest furthest from the view
        again = images[(epoch, 8, 0)][4]
        assert torch.equal(again[0], versions) and torch.equal(again[1], strengths)  # seeded by the view
        kinds.add(round(errors[0], 6))
        assert images[(epoch, 9, 1)][4] is None  # only anchors (positions that are multiples of 2) bring versions
    assert len(kinds) == 6  # a view and strengths of its own each epoch


def test_collate_puts_online_versions_after_their_anchor_without_labels():
    crop = torch.zeros(3, 8, 8)
    items = [
        (crop, 1.0, "natural", 7, (torch.ones(2, 3, 8, 8), torch.tensor([0.1, 0.4]))),
        (crop + 0.5, 0.6, "natural", 7, None),
        (crop, 0.9, "aigc", 3, None),
    ]
    crops, targets, scenes, groups, order = train_module._collate(items)
    assert crops.shape == (5, 3, 8, 8) and torch.equal(crops[1:3], torch.ones(2, 3, 8, 8))
    assert torch.equal(crops[3], crop + 0.5)
    torch.testing.assert_close(targets, torch.tensor([1.0, math.nan, math.nan, 0.6, 0.9]), equal_nan=True)
    assert scenes == ["natural"] * 4 + ["aigc"] and groups.tolist() == [7, 7, 7, 7, 3]
    torch.testing.assert_close(order, torch.tensor([0.0, -0.1, -0.4, math.nan, math.nan]), equal_nan=True)


def test_rank_loss_leaves_nan_targets_out_of_every_pair():
    target = torch.tensor([0.8, math.nan, 0.1, math.nan])
    groups = torch.zeros(4, dtype=torch.long)
    pred = torch.tensor([0.1, 5.0, 0.5, -5.0], requires_grad=True)
    loss = train_module.rank_loss(pred, target, groups, 0.1)
    torch.testing.assert_close(loss, torch.tensor(0.1 + 0.4))  # the one pair (0, 2), reversed by 0.4
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[1] == pred.grad[3] == 0
    order = torch.tensor([0.0, -0.1, -0.4, math.nan]) * train_module.ONLINE_GAP  # an anchor and two versions
    online = train_module.rank_loss(torch.tensor([0.5, 0.5, 0.2, 0.0]), order, groups, 0.1)
    # pairs (0,1) gap 0.05: 0.05 - 0 = 0.05; (0,2) gap 0.2 capped at 0.1: 0.1 - 0.3 < 0; (1,2): 0.1 - 0.3 < 0
    torch.testing.assert_close(online, torch.tensor(0.05 / 3))


def test_online_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="online_versions must be >= 0 and needs group_anchor"):
        toy_config(tmp_path, online_versions=2, sampler="grouped", rank_weight=1.0)
    with pytest.raises(ValueError, match="online_versions must be >= 0 and needs group_anchor"):
        toy_config(tmp_path, online_versions=2, sampler="grouped", group_anchor=True)
    with pytest.raises(ValueError, match=r"online_types: unknown distortion types \['jpg'\]"):
        toy_config(tmp_path, online_types=("jpeg", "jpg"))


def test_a_run_with_online_versions_ranks_them_and_resumes(tmp_path):
    data = grouped_dataset(tmp_path / "g", size=(72, 80))
    kw = dict(datasets=(data,), sampler="grouped", group_size=2, batch_size=4, rank_weight=1.0, rank_margin=0.1)
    kw.update(scale_range=(0.5, 1.0), epochs=2, lr=3e-3, group_anchor=True, aligned_views=True, online_versions=2)
    kw.update(online_types=("jpeg", "white_noise", "pixelate"))
    full = train(toy_config(tmp_path / "a", **kw))
    rows = [line.split(",") for line in (full / "metrics.csv").read_text().splitlines()[1:]]
    losses = [float(r[4]) for r in rows if r[2:4] == ["train", "loss"]]
    assert losses and all(np.isfinite(v) for v in losses)  # the unlabelled versions never reach the MSE
    cfg = toy_config(tmp_path / "b", max_steps=7, **kw)
    train(cfg)
    resumed = train(dataclasses.replace(cfg, max_steps=0), resume=True)
    a, b = weights(full / "last"), weights(resumed / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)
