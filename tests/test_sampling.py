import numpy as np
import pytest

from seqpred.errors import UsageError
from seqpred.sampling import (
    EXP2_HIGH,
    EXP2_LOW,
    SamplingSettings,
    draw_uniforms,
    exp2_weights,
    pick,
    probabilities,
    sample,
    weights,
)

LOGITS = np.log(np.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))


def draw(settings, n=20000, seed=0, logits=LOGITS):
    rng = np.random.default_rng(seed)
    batch = np.repeat(logits, n, axis=0)
    return sample(batch, settings, rng)


def test_plain_sampling_matches_the_softmax():
    counts = np.bincount(draw(SamplingSettings()), minlength=5) / 20000
    assert np.allclose(counts, [0.5, 0.2, 0.15, 0.1, 0.05], atol=0.015)


def test_greedy_is_argmax():
    logits = np.random.default_rng(1).standard_normal((50, 30))
    assert np.array_equal(
        sample(logits, SamplingSettings(greedy=True), np.random.default_rng()), logits.argmax(1)
    )


def test_top_k_never_leaves_the_k_most_likely():
    logits = np.random.default_rng(2).standard_normal((1, 40))
    picks = draw(SamplingSettings(top_k=3), n=5000, logits=logits)
    allowed = set(np.argsort(-logits[0])[:3])
    assert set(np.unique(picks)) == allowed


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    # 0.7 itself is the mass of the first two to within the weights' rounding: either side of it.
    p = probabilities(LOGITS, SamplingSettings(top_p=0.69))
    assert np.allclose(p[0], [0.5 / 0.7, 0.2 / 0.7, 0, 0, 0])
    p = probabilities(LOGITS, SamplingSettings(top_p=0.71))
    assert np.count_nonzero(p) == 3
    assert set(np.unique(draw(SamplingSettings(top_p=0.69)))) == {0, 1}


def test_low_temperature_approaches_greedy_and_high_flattens():
    cold = np.bincount(draw(SamplingSettings(temperature=0.05)), minlength=5) / 20000
    assert cold[0] > 0.999
    hot = np.bincount(draw(SamplingSettings(temperature=100.0)), minlength=5) / 20000
    assert np.all(np.abs(hot - 0.2) < 0.02)


def test_a_seed_reproduces_the_draws():
    s = SamplingSettings(temperature=0.9, top_k=4, top_p=0.95)
    assert np.array_equal(draw(s, n=500, seed=7), draw(s, n=500, seed=7))
    assert not np.array_equal(draw(s, n=500, seed=7), draw(s, n=500, seed=8))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0}, "temperature"),
        ({"temperature": -1}, "temperature"),
        ({"top_k": 0}, "top-k"),
        ({"top_p": 0}, "top-p"),
        ({"top_p": 1.5}, "top-p"),
    ],
)
def test_invalid_settings_are_refused(kwargs, message):
    with pytest.raises(UsageError, match=message):
        SamplingSettings(**kwargs)


def softmax(logits, temperature=1.0):
    z = np.asarray(logits, np.float64) / temperature
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_integer_weights_are_the_softmax_to_a_millionth(temperature):
    logits = (np.random.default_rng(3).standard_normal((8, 60)) * 4).astype(np.float32)
    p = probabilities(logits, SamplingSettings(temperature=temperature))
    q = softmax(logits, temperature)
    assert np.abs(p - q).max() < 1e-6
    likely = q > 1e-3
    assert np.abs(p[likely] / q[likely] - 1).max() < 2e-6


def test_exp2_weights_are_exact_at_whole_powers_and_zero_far_below():
    t = np.asarray([0.0, -1.0, -2.0, -10.0, -30.0, -31.0, -40.0, -1e30], dtype=np.float32)
    assert exp2_weights(t).tolist() == [2**30, 2**29, 2**28, 2**20, 1, 0, 0, 0]
    assert EXP2_HIGH[0] == EXP2_LOW[0] == 2**30
    assert EXP2_HIGH.dtype == EXP2_LOW.dtype == np.int64
    assert EXP2_HIGH[-1] * EXP2_LOW[-1] >> 30 < 2**31  # the product of the largest rows fits in int64


def test_pick_is_a_function_of_the_logits_and_the_uniforms():
    logits = np.random.default_rng(4).standard_normal((6, 20)).astype(np.float32)
    settings = SamplingSettings(temperature=0.8, top_k=10, top_p=0.9)
    u = np.random.default_rng(5).random(6)
    assert np.array_equal(pick(logits, settings, u), pick(logits.copy(), settings, u.copy()))
    w = weights(logits, settings)
    cdf = np.cumsum(w, axis=-1)
    expected = [int(np.searchsorted(cdf[b], np.floor(u[b] * cdf[b, -1]), side="right")) for b in range(6)]
    assert pick(logits, settings, u).tolist() == expected


def test_uniforms_near_one_take_the_last_token_with_weight():
    logits = np.log(np.asarray([[0.5, 0.5, 1e-20]], dtype=np.float32))
    u = np.asarray([np.nextafter(1.0, 0.0)])
    assert pick(logits, SamplingSettings(), u).tolist() == [1]
    assert pick(logits, SamplingSettings(), np.zeros(1)).tolist() == [0]


def test_ties_greedy_takes_the_first_and_top_k_keeps_every_tie():
    logits = np.asarray([[1.0, 3.0, 2.0, 3.0, 2.0, 0.0]], dtype=np.float32)
    assert pick(logits, SamplingSettings(greedy=True), np.zeros(1)).tolist() == [1]
    kept = weights(logits, SamplingSettings(top_k=3)) > 0
    assert kept.tolist() == [[False, True, True, True, True, False]]  # the 3rd largest, 2.0, twice


def test_top_p_breaks_ties_by_the_lower_id():
    logits = np.log(np.asarray([[0.1, 0.3, 0.3, 0.3]], dtype=np.float32))
    kept = weights(logits, SamplingSettings(top_p=0.5)) > 0
    assert kept.tolist() == [[False, True, True, False]]


def test_uniforms_are_the_same_however_the_positions_are_cut():
    whole = draw_uniforms(np.random.default_rng(9), 3, 10)
    rng = np.random.default_rng(9)
    parts = np.concatenate([draw_uniforms(rng, 3, n) for n in (1, 4, 5)], axis=1)
    assert whole.shape == (3, 10)
    assert np.array_equal(whole, parts)


def test_greedy_draws_nothing():
    rng = np.random.default_rng(1)
    sample(np.zeros((2, 4)), SamplingSettings(greedy=True), rng)
    assert rng.random() == np.random.default_rng(1).random()
