"""Training speed options: `compile` (setting, wiring, checkpoints, compiled = eager), `adam` (fused = default)."""

import dataclasses
from pathlib import Path

import pytest
import torch

import gamma_iqa
from gamma_iqa.data.datasets import user_dataset
from gamma_iqa.engine import train as train_module
from gamma_iqa.engine.evaluate import evaluate
from gamma_iqa.engine.train import TrainingError, train
from gamma_iqa.engine.trainconfig import load_config, save_config
from gamma_iqa.models.checkpoint import load_checkpoint, save_checkpoint
from gamma_iqa.models.gamma import Gamma

from .test_train import toy_config, weights

MODES = "default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs"
# Fused and default Adam compute the same update in another order: a few float32 ulps of the weights per step.
ADAM_ATOL = 1e-6
# Compiled (Inductor) and eager forward and backward differ by float rounding (fused kernels, another summation
# order): the logged losses of gamma-test agree to this relative tolerance (measured: 4e-7).
COMPILE_LOSS_RTOL = 1e-5
# Adam moves each weight by about lr per step whatever the gradient's size, so where a gradient is near 0 rounding can
# flip its sign: weights after n steps at lr 1e-3 (toy_config's) may differ by up to 2 * lr * n (measured: 1e-3 at n=3).
LR = 1e-3


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


# ---- the settings --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "parsed"),
    [("true", True), ("false", False), ("default", "default"), ("max-autotune", "max-autotune"), ("off", False)],
)
def test_compile_setting_takes_bools_and_mode_names(value, parsed):
    cfg = load_config(None, ["datasets=koniq10k", f"compile={value}"])
    assert cfg.compile is parsed if isinstance(parsed, bool) else cfg.compile == parsed
    assert load_config(None, ["datasets=koniq10k"]).compile is False  # off by default


@pytest.mark.parametrize(("value", "shown"), [("fast", "'fast'"), ("1", "1"), ("[max-autotune]", "['max-autotune']")])
def test_a_bad_compile_value_is_one_line_naming_the_setting_and_the_valid_values(value, shown):
    with pytest.raises(ValueError) as error:
        load_config(None, ["datasets=koniq10k", f"compile={value}"])
    assert str(error.value) == f"compile must be false, true or one of {MODES}, not {shown}"
    with pytest.raises(ValueError, match=r"^compile cannot be empty$"):
        load_config(None, ["datasets=koniq10k", "compile="])


def test_adam_setting_is_checked():
    assert load_config(None, ["datasets=koniq10k"]).adam == "auto"
    with pytest.raises(ValueError, match=r"^adam must be one of auto, fused, foreach, default, not 'sgd'$"):
        load_config(None, ["datasets=koniq10k", "adam=sgd"])


def test_config_with_compile_and_a_note_reads_back_equal(tmp_path):
    cfg = load_config(None, ["datasets=koniq10k", "compile=reduce-overhead", "adam=foreach"])
    save_config(cfg, tmp_path / "config.yaml", "this run: Adam foreach\nsecond line")
    text = (tmp_path / "config.yaml").read_text()
    assert text.startswith("# this run: Adam foreach\n# second line\n")
    assert load_config(tmp_path / "config.yaml") == cfg


# ---- compile: wiring and checkpoints -------------------------------------------------------------------------------
def test_compile_setting_compiles_the_towers_with_its_mode_before_training(tmp_path, monkeypatch):
    calls = []

    def record(self, **options):
        calls.append(options)
        return self

    monkeypatch.setattr(Gamma, "compile_towers", record)
    out = train(toy_config(tmp_path, compile="max-autotune-no-cudagraphs", max_steps=1))
    assert calls == [{"mode": "max-autotune-no-cudagraphs"}]
    assert "compile: max-autotune-no-cudagraphs" in (out / "config.yaml").read_text()
    calls.clear()
    train(toy_config(tmp_path / "b", compile=True, max_steps=1))
    assert calls == [{"mode": "default"}]
    calls.clear()
    train(toy_config(tmp_path / "c", max_steps=1))
    assert calls == []  # off by default


def test_a_family_without_compile_towers_is_compiled_whole():
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.modes = []

        def compile(self, **options):
            self.modes.append(options)

    model = Plain()
    train_module._compile(model, load_config(None, ["datasets=koniq10k", "compile=reduce-overhead"]))
    assert model.modes == [{"mode": "reduce-overhead"}]


def test_compiled_towers_keep_state_dict_keys_and_checkpoint_format(tmp_path):
    eager = gamma_iqa.create_model("gamma-test")
    compiled = gamma_iqa.create_model("gamma-test").compile_towers(mode="default")  # compiles lazily: no cost here
    assert list(compiled.state_dict()) == list(eager.state_dict())
    save_checkpoint(eager, tmp_path / "eager")
    save_checkpoint(compiled, tmp_path / "compiled")
    assert weights(tmp_path / "compiled").keys() == weights(tmp_path / "eager").keys()
    assert (tmp_path / "compiled" / "config.json").read_text() == (tmp_path / "eager" / "config.json").read_text()


def losses(run: Path) -> list[float]:
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    return [float(r[4]) for r in rows if r[2:4] == ["train", "loss"]]


@pytest.mark.slow  # Inductor compiles of gamma-test's towers (train and eval): about a minute on 2 cores, uncached
def test_compiled_training_equals_eager_and_resumes_either_way(tmp_path):
    full = train(toy_config(tmp_path / "eager", epochs=1))  # 4 steps, then the evaluation at the end
    part = train(toy_config(tmp_path / "compiled", epochs=1, compile=True, max_steps=3))
    eager_part = train(toy_config(tmp_path / "eager-part", epochs=1, max_steps=3))
    assert losses(part) == pytest.approx(losses(eager_part), rel=COMPILE_LOSS_RTOL)
    assert largest_difference(weights(part / "last"), weights(eager_part / "last")) <= 2 * LR * 3
    resumed = train(toy_config(tmp_path / "compiled", epochs=1, compile=False), resume=True)  # compiled -> eager
    again = train(toy_config(tmp_path / "eager-part", epochs=1, compile=True), resume=True)  # eager -> compiled
    for run in (resumed, again):
        assert len(losses(run)) == 4 and losses(run) == pytest.approx(losses(full), rel=COMPILE_LOSS_RTOL)
        assert largest_difference(weights(run / "last"), weights(full / "last")) <= 2 * LR * 4
        assert weights(run / "last").keys() == weights(full / "last").keys()


# ---- Adam ----------------------------------------------------------------------------------------------------------
def adam_updates(params: list[torch.Tensor], **flags) -> list[torch.Tensor]:
    """The parameters after 5 Adam steps on fixed gradients from a seeded generator."""
    params = [torch.nn.Parameter(p.clone()) for p in params]
    optimizer = torch.optim.Adam(params, lr=1e-3, **flags)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        optimizer.step()
    return [p.detach() for p in params]


def test_fused_adam_gives_the_default_updates_to_rounding():
    g = torch.Generator().manual_seed(1)
    params = [torch.randn(300, 7, generator=g), torch.randn(11, generator=g)]
    default = adam_updates(params)
    for flags in ({"fused": True}, {"foreach": True}):
        other = adam_updates(params, **flags)
        assert all(torch.allclose(a, b, rtol=0, atol=ADAM_ATOL) for a, b in zip(default, other, strict=True))
        assert any(not torch.equal(a, p) for a, p in zip(other, params, strict=True))  # they did move


def test_training_with_fused_adam_equals_default_and_records_it(tmp_path):
    default = train(toy_config(tmp_path / "default", adam="default", max_steps=3))
    fused = train(toy_config(tmp_path / "fused", adam="fused", max_steps=3))
    assert largest_difference(weights(fused / "last"), weights(default / "last")) < ADAM_ATOL
    assert (fused / "config.yaml").read_text().startswith("# this run: Adam fused, compile False")
    assert (default / "config.yaml").read_text().startswith("# this run: Adam default, compile False")
    auto = train(toy_config(tmp_path / "auto", max_steps=1))  # torch >= 2.4 has fused Adam on the CPU
    assert (auto / "config.yaml").read_text().startswith("# this run: Adam fused,")


def test_a_run_resumes_under_another_adam_implementation(tmp_path):
    full = train(toy_config(tmp_path / "full", adam="default"))
    cfg = toy_config(tmp_path / "switched", adam="default", max_steps=7)
    train(cfg)
    resumed = train(dataclasses.replace(cfg, adam="fused", max_steps=0), resume=True)
    assert largest_difference(weights(resumed / "last"), weights(full / "last")) < 10 * ADAM_ATOL
    state = torch.load(Path(resumed) / "last" / "train_state.pt", weights_only=True)["optimizer"]
    assert all(group["fused"] for group in state["param_groups"])  # the implementation asked for ran, not the saved
    notes = [line for line in (resumed / "config.yaml").read_text().splitlines() if line.startswith("# ")]
    assert [n.split(", torch")[0] for n in notes] == [  # what each part ran: the first part's line is kept
        "# this run: Adam default, compile False",
        "# resumed at step 7: Adam fused, compile False",
    ]


def test_adam_fused_is_refused_where_torch_has_no_kernel(monkeypatch):
    monkeypatch.setattr(train_module, "_fused_adam_runs", lambda device, dtype: False)
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert train_module._adam_implementation("auto", params) == "default"
    with pytest.raises(TrainingError, match=r"^adam: fused: torch .* has no fused Adam .*set adam=auto$"):
        train_module._adam_implementation("fused", params)


def test_evaluation_after_fused_adam_steps_sees_the_stepped_weights(tmp_path):
    # Fused Adam leaves the weights' version counters alone; the model's no-grad caches (text features, MoAE fused
    # weights) key on them, so without the run bumping them the second evaluation would score with epoch 1's weights.
    cfg = toy_config(tmp_path, adam="fused", epochs=2, eval_epochs=(1,))
    out = train(cfg)
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    logged = [float(r[4]) for r in rows if r[2:4] == ["eval", "toy/plcc"]]
    spec, root = user_dataset(cfg.datasets[0])
    (fresh,) = evaluate(load_checkpoint(out / "last"), [spec], root, split=1, crops=2, seed=cfg.seed, workers=0)
    assert len(logged) == 2 and logged[0] != logged[1] and logged[1] == fresh.plcc
