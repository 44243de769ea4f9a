import numpy as np
import pytest

from seqpred.errors import UsageError
from seqpred.sampling import SamplingSettings, probabilities, sample

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
    p = probabilities(LOGITS, SamplingSettings(top_p=0.7))
    assert np.allclose(p[0], [0.5 / 0.7, 0.2 / 0.7, 0, 0, 0])
    p = probabilities(LOGITS, SamplingSettings(top_p=0.71))
    assert np.count_nonzero(p) == 3
    assert set(np.unique(draw(SamplingSettings(top_p=0.7)))) == {0, 1}


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
