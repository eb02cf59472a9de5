"""Agreement with the original implementation's outputs on the tiny golden checkpoint (shared/data/golden).

The golden set lives in shared/ beside the checkout, not in the repository. Outside CI a checkout without it skips
these tests and says why; under CI=true a missing set fails them (tested at the end of this file).
"""

import csv
import io
import json
from contextlib import redirect_stdout

import pytest
import torch
from PIL import Image

import gamma_iqa
from gamma_iqa.cli import main
from gamma_iqa.data.transforms import image_to_tensor
from gamma_iqa.models.tokenizer import get_tokenizer

from . import conftest


def _images(golden) -> torch.Tensor:
    return torch.stack([image_to_tensor(Image.open(golden / f"img{i}.png").convert("RGB")) for i in range(6)])


def test_converted_plain_checkpoint_scores_like_the_original(golden, reference, tmp_path):
    out = tmp_path / "plain"
    assert main(["convert", str(golden / "plain.pth"), str(out), "--variant", "plain"]) == 0
    assert (out / "bpe_simple_vocab_16e6.txt.gz").is_file()  # the converted folder is self-contained
    buf = io.StringIO()
    paths = [str(golden / f"img{i}.png") for i in range(6)]
    with redirect_stdout(buf):
        assert main(["score", *paths, "--model", str(out), "--crops", "none", "--format", "json"]) == 0
    rows = json.loads(buf.getvalue())
    assert [r["path"] for r in rows] == paths and all(r["error"] is None for r in rows)
    got = torch.tensor([r["score"] for r in rows], dtype=torch.float64)
    want = torch.tensor(reference["plain_scores_img0_to_img5"], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_converted_model_matches_counts_and_embedding(golden, reference):
    model = gamma_iqa.convert_original(golden / "plain.pth")
    ck = reference["checkpoint"]
    assert float(model.clip.logit_scale) == ck["logit_scale"]
    assert sum(p.numel() for p in model.parameters()) == ck["params_total"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == ck["params_trainable"]
    with torch.no_grad():
        emb = model.encode_image(_images(golden)[:1])[0]
        torch.testing.assert_close(
            emb, torch.tensor(reference["plain_img0_image_embedding_pre_adapter"]), rtol=0, atol=1e-5
        )
        scores = model(_images(golden))
    torch.testing.assert_close(scores, torch.tensor(reference["plain_scores_img0_to_img5"]), rtol=0, atol=1e-6)


def test_fresh_model_on_the_backbone(golden, reference):
    model = gamma_iqa.create_model("gamma-vit-b16", backbone=golden / "backbone.pt")
    ref = reference["backbone"]
    with torch.no_grad():
        emb = model.encode_image(_images(golden)[:1])[0]
        text = model.text_features("generic")
    torch.testing.assert_close(emb[:8], torch.tensor(ref["img0_embedding_first8"]), rtol=0, atol=1e-5)
    assert abs(float(emb.norm()) - ref["img0_embedding_norm"]) < 1e-4
    torch.testing.assert_close(
        text.norm(dim=-1).double(),
        torch.tensor(ref["generic_prompt_text_embedding_norms"], dtype=torch.float64),
        rtol=0,
        atol=1e-4,
    )


def test_token_ids_match(reference):
    tok = get_tokenizer()
    for prompt, ids in reference["token_ids"].items():
        assert tok(prompt)[0, : len(ids)].tolist() == ids


def test_csv_output_of_the_golden_images(golden, tmp_path):
    out = tmp_path / "scores.csv"
    code = main(["score", str(golden), "--model", "gamma-test", "--crops", "center", "--output", str(out)])
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == [f"img{i}.png" for i in range(6)]
    assert all(r["scene"] == "natural" and r["crops"] == "center" and r["error"] == "" for r in rows)


@pytest.mark.parametrize("ci", ["true", "1"])
def test_a_missing_golden_set_fails_under_ci(tmp_path, monkeypatch, ci):
    monkeypatch.setattr(conftest, "SHARED", tmp_path / "shared")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"golden reference data not found at .*under CI=true"):
        conftest.shared_file("data/golden/reference.json", "golden reference data")


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_a_missing_golden_set_skips_outside_ci(tmp_path, monkeypatch, ci):
    monkeypatch.setattr(conftest, "SHARED", tmp_path / "shared")
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=r"not found at .*shared/ beside the checkout"):
        conftest.shared_file("data/golden/reference.json", "golden reference data")
    (tmp_path / "shared" / "data" / "golden").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "golden" / "reference.json").write_text("{}")
    assert conftest.shared_file("data/golden/reference.json", "x") == tmp_path / "shared/data/golden/reference.json"
