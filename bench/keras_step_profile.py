"""Where the time of one Keras generation step goes, for one stream of a 2 x 300 LSTM.

Shows why one stream on Keras stays near 2,000 characters/s: the dispatch of any tf.function call
costs hundreds of microseconds on a CPU, whatever the call computes.

    python bench/keras_step_profile.py
"""

from __future__ import annotations

import time

import numpy as np

from seqpred.sampling import SamplingSettings, sample
from seqpred.spec import ModelSpec
from seqpred.train import build_model
from seqpred.weights import init_weights

CALLS = 2000


def per_call(fn) -> float:
    """Microseconds per call of ``fn``."""
    fn()
    start = time.perf_counter()
    for _ in range(CALLS):
        fn()
    return (time.perf_counter() - start) / CALLS * 1e6


def main() -> None:
    spec = ModelSpec(vocab_size=43, hidden=300, embedding=64)
    model = build_model("keras", spec, "cpu", 0)
    model.set_weights(init_weights(spec, 0))
    token = np.zeros(1, np.int32)
    state = model.initial_state(1)
    logits, _ = model.step(token, state)

    from seqpred_keras.framework import tf

    table = model._step_table()
    token_tensor = tf.constant(token)
    kernel = model.net.lstms[0].cell.recurrent_kernel
    one_matmul = tf.function(lambda h: tf.matmul(h, kernel))
    hidden = tf.zeros((1, spec.hidden))
    rng = np.random.default_rng(0)
    settings = SamplingSettings()

    full = per_call(lambda: model.step(token, state))
    graph = per_call(lambda: model._step_fn(table, token_tensor, state))
    dispatch = per_call(lambda: one_matmul(hidden))
    sampling = per_call(lambda: sample(logits, settings, rng))
    print(f"keras step, one stream: {full:.0f} us per call of Model.step")
    print(f"  compiled step function alone (tf.function call): {graph:.0f} us")
    print(f"  of which the dispatch of any tf.function call (one matmul): {dispatch:.0f} us")
    print(f"  NumPy conversion and argument handling: {full - graph:.0f} us")
    print(f"sampling in NumPy: {sampling:.0f} us per token")
    print(f"ceiling with one tf.function call per token: {1e6 / (dispatch + sampling):,.0f} characters/s")


if __name__ == "__main__":
    main()
