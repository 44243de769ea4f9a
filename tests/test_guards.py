"""Guards for behaviours that a one-line slip breaks silently: the prime fed once, the state carried
through generation, word-level contractions, and ``--unknown`` on texts long enough for the fast path.

Each was checked by breaking the code it guards (see tests/README.md). The numpy backend needs no
framework, so every guard here runs, and fails, even where torch and keras are not installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpred.generate import Generator
from seqpred.runs import Run
from seqpred.sampling import SamplingSettings
from seqpred.spec import ModelSpec
from seqpred.testing import perturbed_weights
from seqpred.vocab import FAST_PATH_MIN_CHARS, Vocab, detokenize, tokenize

from .backend_helpers import needs_keras, needs_torch, reference_generate

TEXT = "the quick brown fox jumps over the lazy dog.\nhow vexingly quick daft zebras jump!\n"
VOCAB = Vocab.build(TEXT)
SPEC = ModelSpec(vocab_size=len(VOCAB), hidden=24, layers=2, embedding=8, dropout=0.0, seq_len=16)
# Weights with noise on every tensor: a token fed twice or a dropped state changes the logits markedly.
WEIGHTS = {name: w * 2.0 for name, w in perturbed_weights(SPEC, seed=3).items()}

BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("torch", id="torch", marks=needs_torch),
    pytest.param("keras", id="keras", marks=needs_keras),
]


def _generator(backend: str) -> Generator:
    run = Run(path=Path("in-memory"), spec=SPEC, vocab=VOCAB, weights=WEIGHTS, meta={"backend": backend})
    return Generator(run, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("prime", ["the lazy dog jumps", "q", ""], ids=["multi-token", "one-token", "empty"])
def test_seeded_generation_equals_the_reference_stepping_through_the_prime(backend, prime):
    """The prime goes through the model exactly once, and the state is carried from step to step."""
    generator = _generator(backend)
    sampling = SamplingSettings(temperature=1.0)
    got = generator.generate(prime, length=120, settings=sampling, seed=11)
    start = generator.start_tokens(prime, "error")
    expected = reference_generate(SPEC, WEIGHTS, start, 120, sampling, seed=11)
    assert got.samples[0] == VOCAB.decode(expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_streams_after_a_prime_follow_the_reference(backend):
    """Several streams at once: every stream's state is its own and is carried."""
    generator = _generator(backend)
    greedy = SamplingSettings(greedy=True)
    got = generator.generate("how vexingly", length=60, settings=greedy, num_samples=3)
    expected = VOCAB.decode(
        reference_generate(SPEC, WEIGHTS, VOCAB.encode("how vexingly"), 60, greedy, seed=None)
    )
    assert got.samples == [expected] * 3


# -- word level: contractions and possessives ------------------------------------------------------

APOSTROPHE_WORDS = ["Don't", "it's", "O’Neill's", "O'Neill’s", "can’t", "Macbeth's", "we’ll", "isn't"]
PLAIN_WORDS = ["the", "king", "said", "O", "rain", "night", "2024"]


def test_contractions_and_possessives_are_one_token_each():
    text = "Don't say it's O’Neill's horse, nor O'Neill’s; we’ll see."
    assert tokenize(text, "word") == [
        "Don't", "say", "it's", "O’Neill's", "horse", ",", "nor", "O'Neill’s", ";", "we’ll", "see", ".",
    ]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.tuples(
            st.lists(st.sampled_from(APOSTROPHE_WORDS + PLAIN_WORDS), min_size=1, max_size=8),
            st.sampled_from(["", ".", ",", "!", "?", ";"]),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_word_text_with_apostrophes_round_trips(lines):
    text = "\n".join(" ".join(words) + mark for words, mark in lines)
    tokens = tokenize(text, "word")
    for word in APOSTROPHE_WORDS:
        assert tokens.count(word) == sum(words.count(word) for words, _ in lines)
    assert detokenize(tokens, "word") == text
    vocab = Vocab.build(text, "word")
    assert vocab.decode(vocab.encode(text)) == text


# -- --unknown on long texts -----------------------------------------------------------------------

KNOWN = Vocab.build("abcdef \n")


def _encode_in_short_pieces(text: str, unknown: str) -> np.ndarray:
    """The slow path's answer: pieces far below the fast path's threshold, encoded and joined."""
    pieces = [text[i : i + 500] for i in range(0, len(text), 500)] or [""]
    return np.concatenate([KNOWN.encode(piece, unknown) for piece in pieces]).astype(np.int32)


@settings(max_examples=40, deadline=None)
@given(
    length=st.one_of(
        st.integers(1, 300),
        st.integers(FAST_PATH_MIN_CHARS - 3, FAST_PATH_MIN_CHARS + 3),
        st.integers(FAST_PATH_MIN_CHARS + 4, 3 * FAST_PATH_MIN_CHARS),
    ),
    seed=st.integers(0, 2**16),
    unknown=st.sampled_from(["skip", "replace"]),
)
def test_unknown_symbols_are_skipped_or_replaced_at_any_length(length, seed, unknown):
    rng = np.random.default_rng(seed)
    alphabet = np.array(list("abcdef \nXYZé"))  # the last four are not in the vocabulary
    text = "".join(rng.choice(alphabet, size=length))
    ids = KNOWN.encode(text, unknown)
    assert np.array_equal(ids, _encode_in_short_pieces(text, unknown))
    known_count = sum(ch in KNOWN for ch in text)
    assert len(ids) == (known_count if unknown == "skip" else length)
