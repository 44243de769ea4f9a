"""Vocabularies of characters or words: sorted, deterministic, saved as JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

from .errors import UsageError, VocabError

Level = Literal["char", "word"]
LEVELS: tuple[str, ...] = ("char", "word")
UnknownPolicy = Literal["error", "skip", "replace"]

# Words (letters, digits, inner apostrophes), then single punctuation marks, then newlines.
# Spaces and tabs separate tokens and are not tokens themselves.
_WORD_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]|\n")
_NO_SPACE_BEFORE = set(".,;:!?)]}%'’”»…")
_NO_SPACE_AFTER = set("([{“«$#")

#: Character texts longer than this are encoded by the vectorised path (when unknown symbols raise).
FAST_PATH_MIN_CHARS = 4096


def tokenize(text: str, level: Level) -> list[str]:
    """Split ``text`` into tokens: characters, or words, punctuation and newlines."""
    if level == "char":
        return list(text)
    return _WORD_TOKEN.findall(text)


def detokenize(tokens: Iterable[str], level: Level) -> str:
    """Join tokens back into text; words get single spaces, punctuation hugs its word."""
    if level == "char":
        return "".join(tokens)
    out: list[str] = []
    previous = "\n"
    for token in tokens:
        if token == "\n" or previous == "\n" or token in _NO_SPACE_BEFORE or previous in _NO_SPACE_AFTER:
            out.append(token)
        else:
            out.append(" " + token)
        previous = token
    return "".join(out)


class Vocab:
    """A sorted list of token strings; a token's id is its index."""

    def __init__(self, tokens: Sequence[str], level: Level = "char"):
        if level not in LEVELS:
            raise UsageError(f"level must be char or word, got {level!r}")
        self.tokens: list[str] = list(tokens)
        self.level: Level = level
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise VocabError("vocabulary lists a token twice")

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and (self.tokens, self.level) == (other.tokens, other.level)

    @classmethod
    def build(cls, text: str, level: Level = "char") -> Vocab:
        return cls(sorted(set(tokenize(text, level))), level)

    def unknown(self, text: str) -> list[str]:
        """The distinct tokens of ``text`` that the vocabulary lacks, in order of appearance."""
        return list(dict.fromkeys(t for t in tokenize(text, self.level) if t not in self.index))

    def encode(
        self, text: str, unknown: UnknownPolicy = "error", replacement: str | None = None
    ) -> np.ndarray:
        """Token ids (int32) of ``text``; tokens outside the vocabulary raise, are skipped or replaced."""
        if self.level == "char" and unknown == "error" and len(text) > FAST_PATH_MIN_CHARS:
            return self._encode_chars_fast(text)
        ids: list[int] = []
        missing: dict[str, None] = {}
        fallback = self._replacement_id(replacement) if unknown == "replace" else None
        for token in tokenize(text, self.level):
            i = self.index.get(token)
            if i is not None:
                ids.append(i)
            elif unknown == "skip":
                continue
            elif unknown == "replace":
                ids.append(fallback)  # type: ignore[arg-type]
            else:
                missing[token] = None
        if missing:
            raise VocabError(f"symbol(s) not in the vocabulary: {_show(missing)}")
        return np.asarray(ids, dtype=np.int32)

    def _replacement_id(self, replacement: str | None) -> int:
        candidates = [replacement] if replacement is not None else [" ", "\n", self.tokens[0]]
        for candidate in candidates:
            if candidate in self.index:
                return self.index[candidate]
        raise UsageError(f"replacement {replacement!r} is not in the vocabulary")

    def _encode_chars_fast(self, text: str) -> np.ndarray:
        return self.encode_corpus(text).astype(np.int32)

    def encode_corpus(self, text: str, chunk: int = 1 << 22) -> np.ndarray:
        """Ids of a character corpus in the smallest integer type that holds them.

        Works in chunks, so a corpus costs its ids (1 byte per character for up to 256 symbols) plus
        a few MB, never a 4- or 8-byte copy of the whole text.
        """
        if self.level != "char":
            return self.encode(text)
        ids: np.ndarray = np.empty(len(text), dtype=compact_dtype(len(self)))
        codes = np.array([ord(t) for t in self.tokens], dtype=np.uint32)
        order = np.argsort(codes)
        sorted_codes = codes[order]
        ascii_path = text.isascii() and sorted_codes[-1] < 128
        if ascii_path:
            table = np.zeros(128, dtype=ids.dtype)
            table[sorted_codes] = order
            known = np.zeros(128, dtype=bool)
            known[sorted_codes] = True
        for start in range(0, len(text), chunk):
            piece = text[start : start + chunk]
            if ascii_path:
                raw = np.frombuffer(piece.encode("ascii"), dtype=np.uint8)
                bad = ~known[raw]
                ids[start : start + len(piece)] = table[raw]
            else:
                raw = np.frombuffer(piece.encode("utf-32-le"), dtype=np.uint32)
                positions = np.minimum(np.searchsorted(sorted_codes, raw), len(sorted_codes) - 1)
                bad = sorted_codes[positions] != raw
                ids[start : start + len(piece)] = order[positions]
            if bad.any():
                missing = dict.fromkeys(chr(c) for c in raw[bad][:1000])
                raise VocabError(f"symbol(s) not in the vocabulary: {_show(missing)}")
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return detokenize((self.tokens[int(i)] for i in ids), self.level)

    def to_json(self) -> str:
        return json.dumps({"level": self.level, "tokens": self.tokens}, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise VocabError(f"vocabulary is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except (ValueError, RecursionError) as exc:  # a huge integer literal, or nesting too deep
            reason = str(exc).splitlines()[0] if str(exc) else "nested too deeply"
            raise VocabError(f"vocabulary is not valid JSON ({reason})") from None
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise VocabError("vocabulary JSON must be an object with a list of tokens")
        tokens = data["tokens"]
        if not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise VocabError("vocabulary tokens must be non-empty strings")
        level = data.get("level", "char")
        if level not in LEVELS:
            raise VocabError(f"vocabulary level must be char or word, got {level!r}")
        if level == "char" and any(len(t) != 1 for t in tokens):
            raise VocabError("a character vocabulary holds a token longer than one character")
        return cls(tokens, level)


def _show(tokens: Iterable[str], limit: int = 10) -> str:
    items = list(tokens)
    shown = ", ".join(repr(t) for t in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def compact_dtype(vocab_size: int) -> type:
    """The smallest unsigned type that holds every id of a vocabulary of ``vocab_size`` tokens."""
    return np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.int32


def build_char_vocab_and_ids(text: str) -> tuple[Vocab, np.ndarray]:
    """Vocabulary and compact ids of a character corpus, without a per-character Python object."""
    vocab = Vocab(sorted(set(text)), "char")
    return vocab, vocab.encode_corpus(text)
