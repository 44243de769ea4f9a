import numpy as np
import pytest

from seqpred.errors import VocabError
from seqpred.vocab import Vocab, build_char_vocab_and_ids, detokenize, tokenize


def test_char_vocab_is_sorted_and_round_trips():
    text = "hello, world\nHELLO"
    vocab = Vocab.build(text)
    assert vocab.tokens == sorted(set(text))
    ids = vocab.encode(text)
    assert ids.dtype == np.int32
    assert vocab.decode(ids) == text


def test_fast_char_encoding_matches_the_plain_one():
    text = ("naïve café — ünïcödé 🙂 text\n" * 400)[:9000]
    vocab, ids = build_char_vocab_and_ids(text)
    assert vocab == Vocab.build(text)
    assert np.array_equal(ids, np.array([vocab.index[c] for c in text]))
    assert np.array_equal(vocab.encode(text), ids)  # long text takes the vectorised path


def test_vocab_is_deterministic_and_saved_as_json():
    a = Vocab.build("banana bread")
    b = Vocab.build("bread banana")
    assert a == b
    assert Vocab.from_json(a.to_json()) == a


def test_word_level_tokens_and_spacing():
    text = "Fair is foul, and foul is fair:\nHover through the fog (and filthy air)."
    tokens = tokenize(text, "word")
    assert tokens[:4] == ["Fair", "is", "foul", ","]
    assert "\n" in tokens and " " not in tokens
    assert detokenize(tokens, "word") == text


def test_unknown_symbols_are_named_or_skipped_or_replaced():
    vocab = Vocab.build("abc ")
    with pytest.raises(VocabError, match=r"'x', 'y'"):
        vocab.encode("axby")
    assert vocab.decode(vocab.encode("axby", unknown="skip")) == "ab"
    assert vocab.decode(vocab.encode("axb", unknown="replace")) == "a b"
    with pytest.raises(VocabError, match="'x'"):
        vocab.encode("x" * 5000)  # the vectorised path names them too


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"tokens": []}',
        '{"tokens": ["a", "a"]}',
        '{"tokens": ["ab"], "level": "char"}',
        '{"tokens": ["a"], "level": "byte"}',
        '{"tokens": [1, 2]}',
    ],
)
def test_malformed_vocabulary_json_is_refused(text):
    with pytest.raises(VocabError):
        Vocab.from_json(text)
