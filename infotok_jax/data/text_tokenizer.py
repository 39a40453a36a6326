"""Text tokenizers: a closed word-level vocabulary (saved as JSON beside a dataset) and their interface.

`TextTokenizer` is the interface the input pipeline and the models use; `WordTokenizer` implements it
for closed domains (scene captions and QA, class-name captions). A sentencepiece model for real captions
can implement the same protocol (encode/decode/ids/vocab_size; `batch_encode` is shared below).

Ids: 0 = pad, 1 = BOS, 2 = EOS, 3 = UNK, then the words in sorted order, so the vocabulary is a
deterministic function of the word set. Text is lower-cased and split on whitespace; "?" , "," and "."
are separate tokens.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
_SPECIALS = (PAD, BOS, EOS, UNK)
_PUNCT = re.compile(r"([?,.])")
FORMAT = "infotok_word_tokenizer_v1"


@runtime_checkable
class TextTokenizer(Protocol):
    """What the input pipeline needs from a tokenizer (a sentencepiece wrapper can implement it)."""

    pad_id: int
    bos_id: int
    eos_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without BOS/EOS."""
        ...

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; pad/BOS/EOS are dropped and decoding stops at the first EOS."""
        ...


def split_words(text: str) -> list[str]:
    """Lower-cases and splits on whitespace, with ? , . as separate tokens."""
    return _PUNCT.sub(r" \1 ", text.lower()).split()


def batch_encode(
    tokenizer: TextTokenizer, texts: Sequence[str], length: int, truncate: bool = False
) -> np.ndarray:
    """Encodes texts as BOS ids EOS, right-padded with pad_id: int32 (len(texts), length).

    A text longer than `length` raises ValueError unless `truncate` (then EOS is kept as the last id).
    """
    if length < 2:
        raise ValueError(f"length={length} must be >= 2 to hold BOS and EOS")
    out_NxL = np.full((len(texts), length), tokenizer.pad_id, np.int32)
    for i, text in enumerate(texts):
        ids = [tokenizer.bos_id, *tokenizer.encode(text), tokenizer.eos_id]
        if len(ids) > length:
            if not truncate:
                raise ValueError(
                    f"text {text!r} needs {len(ids)} tokens with BOS/EOS but length={length}; "
                    "raise the length or pass truncate=True"
                )
            ids = ids[: length - 1] + [tokenizer.eos_id]
        out_NxL[i, : len(ids)] = ids
    return out_NxL


class WordTokenizer:
    """Closed word-level vocabulary; out-of-vocabulary words map to UNK (or raise when strict)."""

    pad_id = 0
    bos_id = 1
    eos_id = 2
    unk_id = 3

    def __init__(self, words: Iterable[str], strict: bool = False):
        words = sorted(set(words) - set(_SPECIALS))
        bad = [w for w in words if not w or split_words(w) != [w]]
        if bad:
            raise ValueError(
                f"vocabulary words must be single lower-case tokens without spaces; got {bad[:5]}"
            )
        self.words: tuple[str, ...] = _SPECIALS + tuple(words)
        self._ids = {w: i for i, w in enumerate(self.words)}
        self.strict = strict

    @classmethod
    def from_texts(cls, texts: Iterable[str], strict: bool = False) -> WordTokenizer:
        """Vocabulary of every word in `texts`."""
        return cls({w for t in texts for w in split_words(t)}, strict=strict)

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included."""
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        """Word ids of `text` (no BOS/EOS)."""
        ids = []
        for w in split_words(text):
            i = self._ids.get(w)
            if i is None:
                if self.strict:
                    raise ValueError(f"word {w!r} of {text!r} is not in the closed vocabulary")
                i = self.unk_id
            ids.append(i)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Words of `ids`, stopping at the first EOS and skipping pad/BOS."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
            words.append(self.words[i])
        return " ".join(words)

    def batch_encode(self, texts: Sequence[str], length: int, truncate: bool = False) -> np.ndarray:
        """int32 (len(texts), length): BOS ids EOS then pad; see module-level `batch_encode`."""
        return batch_encode(self, texts, length, truncate)

    def to_json(self) -> str:
        """Deterministic JSON form (same vocabulary -> same bytes)."""
        return json.dumps({"format": FORMAT, "words": list(self.words)}, indent=1, sort_keys=True)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the JSON form to `path` (through a temporary file, then an atomic rename)."""
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "w") as f:
            f.write(self.to_json())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, strict: bool = False) -> WordTokenizer:
        """Reads a tokenizer written by `save`; a missing or foreign file raises with what to do."""
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"tokenizer file {path} is missing; prepare the dataset again "
                "(infotok_jax.data.prepare) to write it"
            )
        with open(path) as f:
            data = json.load(f)
        if data.get("format") != FORMAT or tuple(data.get("words", ())[:4]) != _SPECIALS:
            raise ValueError(f"{path} is not an {FORMAT} file")
        return cls(data["words"][4:], strict=strict)
