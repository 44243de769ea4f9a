"""The long-range bench's corpus: its exact entropy rates, and its dependency at the stated distance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.synthetic import BOTH, ECHO, KEY, LETTERS, PLAIN, Synthetic, conditional_entropy

CASES = [Synthetic(), Synthetic(distance=10, key_rate=0.3, letters=4), Synthetic(24, 0.125, 8)]
SAMPLE = 1_000_000  # characters: the plug-in estimates below are then within about 0.005 bits
TOLERANCE = 0.01


def ids_of(text: str) -> np.ndarray:
    symbols = sorted(set(text))
    table = np.zeros(128, dtype=np.int64)
    table[[ord(s) for s in symbols]] = np.arange(len(symbols))
    return table[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]


def test_the_entropy_rates_by_hand():
    # h(1/8) = 0.5435644 bits; (h + 7/8 * 4) / 2 and (2 h + 4) / 2
    with_memory, without = Synthetic(key_rate=0.125, letters=16).entropy_rates()
    assert with_memory == pytest.approx(2.0217822, abs=1e-7)
    assert without == pytest.approx(2.5435644, abs=1e-7)
    # the default: h(1/20) = 0.2863970 bits; (h + 19/20 * 4) / 2 and (2 h + 4) / 2
    with_memory, without = Synthetic().entropy_rates()
    assert with_memory == pytest.approx(2.0431985, abs=1e-7)
    assert without == pytest.approx(2.2863970, abs=1e-7)


@pytest.mark.parametrize("corpus", CASES, ids=lambda c: f"d{c.distance}-p{c.key_rate}-k{c.letters}")
def test_memory_of_the_stated_distance_and_no_other_lowers_the_entropy_to_the_formula(corpus):
    ids = ids_of(corpus.generate(SAMPLE, seed=1))
    with_memory, without = corpus.entropy_rates()
    d = corpus.distance
    # the last character alone tells a marker slot from a letter slot; the rest is fresh
    assert conditional_entropy(ids, (1,)) == pytest.approx(without, abs=TOLERANCE)
    assert conditional_entropy(ids, (1, d)) == pytest.approx(with_memory, abs=TOLERANCE)
    for other in (2, 3, d // 2, d - 2, d - 1, d + 1, d + 2, d + 3):
        assert conditional_entropy(ids, (1, other)) == pytest.approx(without, abs=TOLERANCE), other


def test_every_echo_repeats_the_key_distance_characters_back():
    corpus = Synthetic()
    text = corpus.generate(200_000, seed=2)
    d = corpus.distance
    assert len(text) == 200_000
    assert set(text[0::2]) == {PLAIN, KEY, ECHO, BOTH} and set(text[1::2]) == set(LETTERS[:16])
    echoes = [i for i in range(d + 1, len(text), 2) if text[i - 1] in (ECHO, BOTH)]
    keys = [i for i in range(1, len(text) - d, 2) if text[i - 1] in (KEY, BOTH)]
    assert len(echoes) == pytest.approx(len(text) / 2 * corpus.key_rate, rel=0.05)
    assert all(text[i] == text[i - d] and text[i - d - 1] in (KEY, BOTH) for i in echoes)
    assert all(text[i + d - 1] in (ECHO, BOTH) for i in keys)
    plain = [i for i in range(d + 1, len(text), 2) if text[i - 1] in (PLAIN, KEY)]
    same = np.mean([text[i] == text[i - d] for i in plain])
    assert same == pytest.approx(1 / 16, abs=0.01)  # a plain letter owes nothing to the one d back


def test_the_text_is_a_function_of_the_seed():
    corpus = Synthetic()
    assert corpus.generate(5000, seed=3) == corpus.generate(5000, seed=3)
    assert corpus.generate(5000, seed=3) != corpus.generate(5000, seed=4)


@pytest.mark.parametrize(
    "options", [{"distance": 41}, {"distance": 2}, {"key_rate": 0}, {"key_rate": 1}, {"letters": 1}]
)
def test_parameters_out_of_range_are_refused(options):
    with pytest.raises(ValueError):
        Synthetic(**options)


def test_the_gap_is_the_echo_letters_and_their_timing():
    corpus = Synthetic(distance=30, key_rate=0.2, letters=8)
    with_memory, without = corpus.entropy_rates()
    h = -0.2 * math.log2(0.2) - 0.8 * math.log2(0.8)
    assert without - with_memory == pytest.approx((h + 0.2 * 3) / 2)
