"""CLIP byte-level BPE tokenizer (our own code; OpenAI's vocabulary file, MIT).

Our own because the maintained implementations come inside open_clip and clip, which pull in torchvision; the
tokenizer is a hundred lines, and the tests pin its ids for every registered prompt (gamma.md §4.1).

The vocabulary `bpe_simple_vocab_16e6.txt.gz` is not shipped: it is found, in this order, at an explicit path, in a
checkpoint folder, or inside an installed `open_clip` or `clip` package (located without importing it).
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import itertools
import unicodedata
from pathlib import Path

import torch

__all__ = ["VOCAB_FILENAME", "Tokenizer", "find_vocab", "get_tokenizer"]

VOCAB_FILENAME = "bpe_simple_vocab_16e6.txt.gz"  # OpenAI CLIP's merges file, as open_clip and clip ship it
SOT, EOT = "<|startoftext|>", "<|endoftext|>"  # ids 49406 and 49407, the last two of the vocabulary (gamma.md §4.1)
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


def find_vocab(*candidates: str | Path | None) -> Path:
    """Find the CLIP BPE vocabulary.

    Args:
        *candidates: files, or folders holding `VOCAB_FILENAME`, tried in order; None entries are skipped.

    Returns:
        The first existing file among the candidates, then in installed open_clip or clip packages.

    Raises:
        FileNotFoundError: none is found; the message says how to get one.
    """
    places: list[Path] = []
    for c in candidates:
        if c is not None:
            p = Path(c)
            places.append(p / VOCAB_FILENAME if p.is_dir() else p)
    for pkg in ("open_clip", "clip"):
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            spec = None
        for root in (spec.submodule_search_locations or []) if spec else []:
            places.append(Path(root) / VOCAB_FILENAME)
    for p in places:
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"CLIP BPE vocabulary {VOCAB_FILENAME} not found: pass `bpe` PATH, or pip install --no-deps open-clip-torch"
    )


def _bytes_to_unicode() -> dict[int, str]:
    """Reversible map from the 256 byte values to printable unicode characters (GPT-2 / CLIP convention)."""
    keep = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars), strict=True))


def _char_class(ch: str) -> str:
    """'L' for letters, 'N' for numbers, 'S' for whitespace, 'P' for anything else."""
    if ch.isspace():
        return "S"
    cat = unicodedata.category(ch)[0]
    return cat if cat in "LN" else "P"


def _pre_tokenize(text: str) -> list[str]:
    """Split as CLIP's pattern: special tokens | contractions | letter runs | one digit | runs of other symbols."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        for special in (SOT, EOT):
            if text.startswith(special, i):
                out.append(special)
                i += len(special)
                break
        else:
            contraction = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
            char_class = _char_class(text[i])
            if contraction:
                out.append(contraction)
                i += len(contraction)
            elif char_class == "S":
                i += 1
            elif char_class == "N":
                out.append(text[i])
                i += 1
            else:
                j = i + 1
                while j < n and _char_class(text[j]) == char_class:
                    j += 1
                out.append(text[i:j])
                i = j
    return out


class Tokenizer:
    """Encodes text to CLIP token ids: lower-cased, whitespace-collapsed, byte-level BPE, SOT ... EOT, zero padded."""

    def __init__(self, vocab_path: str | Path) -> None:
        """Read the vocabulary: 256 bytes, the same with an end-of-word mark, 48,894 merges, SOT and EOT (49,408).

        Args:
            vocab_path: the gzipped merges file (`VOCAB_FILENAME`).

        Raises:
            OSError: the file cannot be read (gzip.BadGzipFile, FileNotFoundError).
        """
        self.vocab_path = Path(vocab_path)
        with gzip.open(self.vocab_path, "rt", encoding="utf-8") as f:
            merges = f.read().split("\n")[1 : 49152 - 256 - 2 + 1]
        pairs = [tuple(m.split()) for m in merges]
        self.byte_encoder = _bytes_to_unicode()
        base = list(self.byte_encoder.values())
        vocab = base + [v + "</w>" for v in base] + ["".join(p) for p in pairs] + [SOT, EOT]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.ranks = {p: i for i, p in enumerate(pairs)}
        self.sot, self.eot = self.encoder[SOT], self.encoder[EOT]
        self._cache: dict[str, list[str]] = {SOT: [SOT], EOT: [EOT]}

    def _bpe(self, token: str) -> list[str]:
        """The BPE pieces of one pre-token (byte-mapped), merging the lowest-ranked pair first; cached."""
        if token in self._cache:
            return self._cache[token]
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(a, b) for a, b in itertools.pairwise(word)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self._cache[token] = word
        return word

    def encode(self, text: str) -> list[int]:
        """Token ids of a text, without SOT and EOT."""
        text = " ".join(html.unescape(html.unescape(text)).split()).lower()
        ids: list[int] = []
        for piece in _pre_tokenize(text):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(mapped))
        return ids

    def __call__(self, texts: str | list[str], context_length: int = 77) -> torch.Tensor:
        """Tokenise texts into a padded id tensor.

        Args:
            texts: one text or a list of T texts.
            context_length: positions per row (77 for CLIP, gamma.md §2).

        Returns:
            (T, context_length) int64: SOT, ids, EOT, zeros.

        Raises:
            ValueError: a text with more tokens (SOT and EOT included) than `context_length`.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > context_length:
                raise ValueError(f"prompt {text!r} has {len(ids)} tokens, more than the context of {context_length}")
            out[row, : len(ids)] = torch.tensor(ids)
        return out


@functools.lru_cache(maxsize=4)
def get_tokenizer(vocab_path: str | Path | None = None) -> Tokenizer:
    """A tokenizer for the vocabulary `find_vocab(vocab_path)` finds, cached per `vocab_path`.

    Args:
        vocab_path: the vocabulary file or a folder holding it; None: an installed open_clip or clip package's.

    Raises:
        FileNotFoundError: no vocabulary is found.
    """
    return Tokenizer(find_vocab(vocab_path))
