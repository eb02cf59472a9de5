"""Training: configs, sampler, what moves, learning, resume, DDP equivalence, failure handling, recipe dry runs."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import gamma_iqa
from gamma_iqa.cli import main
from gamma_iqa.data.sampler import JointSampler
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
