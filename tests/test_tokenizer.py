from pathlib import Path

import pytest

from gamma_iqa.models.scenes import get_scene, list_scenes
from gamma_iqa.models.tokenizer import Tokenizer, find_vocab, get_tokenizer

# Token ids of every prompt (SOT ... EOT), as the OpenAI CLIP tokenizer gives them.
LEVELS = {"bad": 2103, "poor": 3665, "fair": 2849, "good": 886, "perfect": 1878}
EXPECTED = {
    "generic": [[49406, LEVELS[lv], 2867, 49407] for lv in LEVELS],
    "natural": [[49406, 3288, LEVELS[lv], 268, 3027, 2867, 49407] for lv in LEVELS],
    "aigc": [[49406, 2215, 268, 19450, LEVELS[lv], 268, 3027, 2867, 49407] for lv in LEVELS],
    "underwater": [[49406, 14760, LEVELS[lv], 268, 3027, 2867, 49407] for lv in LEVELS],
    "face": [[49406, 1710, LEVELS[lv], 268, 3027, 2867, 49407] for lv in LEVELS],
    "aesthetic": [[49406, 3288, LEVELS[lv], 268, 29295, 2867, 49407] for lv in LEVELS],
}


def test_all_thirty_prompts_pinned():
    tok = get_tokenizer()
    assert set(EXPECTED) == set(list_scenes())
    for scene, ids in EXPECTED.items():
        t = tok(list(get_scene(scene)))
        assert t.shape == (5, 77)
        for row, want in zip(t.tolist(), ids, strict=True):
            assert row[: len(want)] == want, scene
            assert row[len(want) :] == [0] * (77 - len(want))


def test_bad_image_and_general_text():
    tok = get_tokenizer()
    assert tok("bad image")[0, :5].tolist() == [49406, 2103, 2867, 49407, 0]
    assert tok.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
    # Case and runs of whitespace do not matter; HTML entities are unescaped.
    assert tok.encode("  A   PHOTO\tof a CAT ") == tok.encode("a photo of a cat")
    assert tok.encode("fish &amp; chips") == tok.encode("fish & chips")


def test_too_long_prompt_is_an_error():
    with pytest.raises(ValueError, match="more than the context"):
        get_tokenizer()("word " * 80)


def test_vocab_resolution(tmp_path: Path):
    found = find_vocab()
    assert found.name == "bpe_simple_vocab_16e6.txt.gz"
    (tmp_path / found.name).write_bytes(found.read_bytes())
    assert find_vocab(tmp_path) == tmp_path / found.name  # a folder carrying the vocabulary comes first
    assert Tokenizer(tmp_path / found.name).encode("good image") == [886, 2867]


def test_missing_vocab_message(monkeypatch, tmp_path: Path):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="`bpe` PATH"):
        find_vocab(tmp_path / "nope.txt.gz")
