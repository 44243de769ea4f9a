"""Fused generation: the backends' many-tokens-per-call loops against the core's sampler and loop.

The conformance kit (:mod:`seqpred.testing`) checks each shipped loop as a backend author's suite
would; here: the paths the kit's small batches do not reach (the Keras loop compiled with XLA,
torch's loop on nn.LSTM's kernel), that the kit's check fails on broken loops, and that
``Generator`` gives the same text for a seed on every backend, with and without the fast path,
streamed or not, with stop strings and several samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seqpred.generate import Generator, stepped_tokens
from seqpred.models import build_model, implements
from seqpred.runs import Run
from seqpred.sampling import (
    FRACTION_BITS,
    LOWEST_LOG2,
    SamplingSettings,
    exp2_fractions,
    log2_scale,
    pick,
)
from seqpred.spec import ModelSpec
from seqpred.testing import SAMPLING_CASES, check_fused_generation, perturbed_weights, tied_weights
from seqpred.vocab import Vocab
from tests.backend_helpers import needs_keras, needs_torch

TEXT = "the cat sat on the mat. the dog sat on the log.\n"
VOCAB = Vocab.build(TEXT)
SPEC = ModelSpec(vocab_size=len(VOCAB), hidden=16, layers=2, embedding=8, dropout=0.0, seq_len=12)
#: Enough settings to reach every kind of compiled loop (greedy, top-k, top-p, both, neither).
KINDS = ["plain", "greedy", "top-k-5", "top-p-0.9", "all-three"]


def loaded(backend: str, weights=None):
    model = build_model(backend, SPEC, "cpu", 0)
    model.set_weights(weights if weights is not None else perturbed_weights(SPEC))
    return model


@pytest.fixture
def compiled_at_once(monkeypatch):
    """The Keras loop compiled with XLA from its first call."""
    from seqpred_keras.fused import FusedGeneration

    monkeypatch.setattr(FusedGeneration, "xla_after", 0)


@needs_keras
@pytest.mark.parametrize("case", KINDS)
def test_keras_loop_compiled_with_xla_picks_the_core_samplers_tokens(compiled_at_once, case):
    weights = tied_weights(SPEC)
    model = loaded("keras", weights)
    check_fused_generation(model, SPEC, weights, SAMPLING_CASES[case], count=20)
    assert model.wrapped._fused.functions, "no loop was compiled"
    assert all(xla for _, xla in model.wrapped._fused.functions), "a loop ran outside XLA"


@needs_keras
def test_keras_loop_moves_to_xla_after_its_threshold_and_carries_on(monkeypatch):
    """Calls past ``xla_after`` run the compiled loop, padded to its width and cut into pieces of
    it, and carry on the state of the graph loop's calls before: the same tokens as stepping."""
    from seqpred_keras.fused import FusedGeneration

    monkeypatch.setattr(FusedGeneration, "xla_after", 10)
    monkeypatch.setattr(FusedGeneration, "width", 8)
    model = loaded("keras")
    settings = SamplingSettings(temperature=0.9)
    uniforms = np.random.default_rng(3).random((2, 40))
    tokens = np.asarray([1, 2], dtype=np.int32)
    parts, state, last = [], model.initial_state(2), tokens
    for start, stop in ((0, 12), (12, 31), (31, 40)):  # graph, then XLA in 3 pieces, then XLA
        chosen, state, _ = model.generate_tokens(last, state, settings, uniforms[:, start:stop])
        parts.append(chosen)
        last = chosen[:, -1]
    assert [xla for _, xla in model.wrapped._fused.functions] == [False, True]
    stepped, _, _ = stepped_tokens(model, tokens, model.initial_state(2), settings, uniforms)
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), stepped)


@needs_torch
@pytest.mark.parametrize("case", KINDS)
def test_torch_loop_on_nn_lstms_kernel_picks_the_core_samplers_tokens(monkeypatch, case):
    """The kernel a GPU takes (and a CPU, from a number of streams, where one is set)."""
    from seqpred_torch import fused

    monkeypatch.setitem(fused.LSTM_KERNEL_STREAMS, "cpu", 4)
    used = []
    monkeypatch.setattr(fused.FusedGeneration, "kernel_step", spy(fused.FusedGeneration.kernel_step, used))
    weights = tied_weights(SPEC)
    check_fused_generation(loaded("torch", weights), SPEC, weights, SAMPLING_CASES[case], streams=6)
    boundary_calls = 0 if SAMPLING_CASES[case].greedy else 2  # the kit's check at the boundaries
    assert len(used) == 40 + boundary_calls, "nn.LSTM's kernel made every step"


def spy(function, calls: list):
    def spied(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    return spied


# -- the kit's check fails on broken loops ---------------------------------------------------------


class BrokenLoop:
    """A fused loop over the numpy backend's step with one defect in its sampler or its report."""

    def __init__(self, defect: str):
        self.model = loaded("numpy")
        self.defect = defect

    def __getattr__(self, name):
        return getattr(self.model, name)

    def generate_tokens(self, tokens, state, settings, uniforms, *, return_logits=False):
        chosen = np.empty(uniforms.shape, dtype=np.int32)
        seen = []
        for k in range(uniforms.shape[1]):
            logits, state = self.model.step(tokens, state)
            used, u = logits, uniforms[:, k]
            if self.defect == "temperature-ignored":
                settings = SamplingSettings(1.0, settings.top_k, settings.top_p, settings.greedy)
            elif self.defect == "uniform-reversed":
                u = 1.0 - u - 1e-12
            elif self.defect == "top-k-ignored":
                settings = SamplingSettings(settings.temperature, None, settings.top_p, settings.greedy)
            sampler = rounded_down_pick if self.defect == "rounded-down" else pick
            tokens = chosen[:, k] = sampler(used, settings, u)
            seen.append(logits if self.defect != "stale-logits" or k == 0 else seen[-1])
        return chosen, state, np.stack(seen, axis=1) if return_logits else None


def rounded_down_pick(logits, settings, uniforms):
    """:func:`seqpred.sampling.pick` with one defect: ``t`` rounded down to the 2**-20 grid, not to
    the nearest. Half the weights are off by a few parts in a million: random uniforms almost never
    see it, uniforms at the boundaries do."""
    z = np.asarray(logits, dtype=np.float32)
    t = (z - z.max(axis=-1, keepdims=True)) * log2_scale(settings)
    fixed = np.floor(np.maximum(t, np.float32(LOWEST_LOG2)) * np.float32(2**FRACTION_BITS)).astype(np.int64)
    w = np.take(exp2_fractions(), fixed & (2**FRACTION_BITS - 1)) >> -(fixed >> FRACTION_BITS)
    cdf = np.cumsum(w, axis=-1)
    return (cdf <= (uniforms * cdf[:, -1])[:, None]).sum(axis=-1).astype(np.int32)


@pytest.mark.parametrize(
    ("defect", "case", "message"),
    [
        ("temperature-ignored", "cold", "where seqpred.sampling.pick picks"),
        ("rounded-down", "plain", "at the boundary between two tokens"),
        ("uniform-reversed", "plain", "where seqpred.sampling.pick picks"),
        ("top-k-ignored", "top-k-5", "where seqpred.sampling.pick picks"),
        ("stale-logits", "plain", "position 2"),
    ],
)
def test_the_kits_check_fails_on_a_broken_loop(defect, case, message):
    broken = BrokenLoop(defect)
    weights = broken.model.get_weights()
    with pytest.raises(AssertionError, match=message):
        check_fused_generation(broken, SPEC, weights, SAMPLING_CASES[case], count=200, streams=8)
    intact = BrokenLoop("none")
    check_fused_generation(intact, SPEC, weights, SAMPLING_CASES[case], count=200, streams=8)


# -- the same text everywhere --------------------------------------------------------------------


def generator(backend: str, fused: bool = True) -> Generator:
    run = Run(path=Path("<test>"), spec=SPEC, vocab=VOCAB, weights=perturbed_weights(SPEC), meta={})
    return Generator(run, backend, fused=fused)


BACKENDS = [
    "numpy",
    pytest.param("torch", marks=needs_torch),
    pytest.param("keras", marks=needs_keras),
]
REQUESTS = {
    "sampled": {"settings": SamplingSettings(temperature=0.9), "seed": 3},
    "greedy": {"settings": SamplingSettings(greedy=True)},
    "top-k-top-p": {"settings": SamplingSettings(temperature=1.2, top_k=6, top_p=0.9), "seed": 4},
    "three-samples": {"settings": SamplingSettings(), "seed": 5, "num_samples": 3},
    "stop-strings": {"settings": SamplingSettings(), "seed": 6, "num_samples": 4, "stop": ["at", "\n"]},
}


@pytest.fixture(scope="module")
def expected():
    """The texts of the numpy backend, which has no fused loop: the core's loop over the reference."""
    numpy = generator("numpy")
    assert not implements(numpy.model, "generate_tokens")
    return {name: numpy.generate("the ", 300, **request).samples for name, request in REQUESTS.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "stepped"])
def test_a_seed_gives_the_same_text_on_every_backend_with_and_without_the_fast_path(expected, backend, fused):
    gen = generator(backend, fused)
    for name, request in REQUESTS.items():
        assert gen.generate("the ", 300, **request).samples == expected[name], name
        streamed: list[str] = []
        result = gen.generate("the ", 300, **request, on_text=streamed.append)
        assert result.samples == expected[name], f"{name}, streamed"
        assert "".join(streamed) == result.samples[0], f"{name}: the streamed text is the first sample"
    if backend != "numpy":
        assert implements(gen.model, "generate_tokens"), f"{backend} has a fused loop"


@needs_keras
def test_keras_text_compiled_with_xla_is_the_cores(expected, compiled_at_once):
    gen = generator("keras")
    for name in ("sampled", "top-k-top-p", "stop-strings"):
        assert gen.generate("the ", 300, **REQUESTS[name]).samples == expected[name], name


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_strings_end_each_sample_and_count_its_tokens(backend):
    result = generator(backend).generate("the ", 300, SamplingSettings(), seed=6, num_samples=4, stop=["a"])
    assert result.stopped == [True] * 4, "random text of 300 characters holds an 'a'"
    assert all("a" not in text for text in result.samples)
    assert result.tokens == max(len(text) for text in result.samples) + 1  # the longest, and its stop


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_top_k_only_emits_the_k_most_likely(backend):
    """From the logits the loop reports, every token picked is among the k most likely."""
    model = generator(backend).model
    settings = SamplingSettings(top_k=3)
    uniforms = np.random.default_rng(1).random((4, 100))
    tokens = np.zeros(4, dtype=np.int32)
    if implements(model, "generate_tokens"):
        chosen, _, logits = model.generate_tokens(
            tokens, model.initial_state(4), settings, uniforms, return_logits=True
        )
    else:
        chosen, _, logits = stepped_tokens(
            model, tokens, model.initial_state(4), settings, uniforms, return_logits=True
        )
    assert logits is not None
    top3 = np.argsort(-logits, axis=-1)[..., :3]
    assert (top3 == chosen[..., None]).any(axis=-1).all()


@needs_torch
def test_a_long_prime_is_one_sequence_pass_then_one_fused_call():
    gen = generator("torch")
    calls = {"step": 0, "forward": 0, "generate_tokens": 0}
    for name in calls:
        method = getattr(gen.model, name)

        def counted(*args, name=name, method=method, **kwargs):
            calls[name] += 1
            return method(*args, **kwargs)

        setattr(gen.model, name, counted)
    result = gen.generate("the cat sat " * 20, 5, SamplingSettings(), seed=0)
    assert len(result.samples[0]) == 5
    assert calls == {"step": 0, "forward": 1, "generate_tokens": 1}
