"""Plain onnxruntime loops over the graph seqpred exports, written as a user would without seqpred."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from seqpred.export import build_graph
from seqpred.spec import ModelSpec


def _session(spec: ModelSpec, weights) -> ort.InferenceSession:
    """onnxruntime's defaults, as a first script would have them."""
    return ort.InferenceSession(
        build_graph(spec, weights).SerializeToString(), providers=["CPUExecutionProvider"]
    )


def tutorial_loop(spec: ModelSpec, weights, window: np.ndarray):
    """The article's generation: the whole window through the graph for every character, argmax."""
    session = _session(spec, weights)
    zeros = np.zeros((spec.layers, 1, spec.hidden), np.float32)
    pattern = list(window)

    def run(chars: int = 20) -> int:
        for _ in range(chars):
            tokens = np.asarray([pattern[-len(window) :]], dtype=np.int64)
            logits, _, _ = session.run(None, {"tokens": tokens, "initial_h": zeros, "initial_c": zeros})
            pattern.append(int(logits[0, -1].argmax()))
        return chars

    return run


def stateful_loop(spec: ModelSpec, weights, streams: int):
    """The usual hand-written sampler: one step per call with the state fed back, softmax in NumPy."""
    session = _session(spec, weights)
    rng = np.random.default_rng(0)

    def run(chars: int = 100) -> int:
        token = np.zeros((streams, 1), dtype=np.int64)
        h = c = np.zeros((spec.layers, streams, spec.hidden), np.float32)
        for _ in range(chars):
            logits, h, c = session.run(None, {"tokens": token, "initial_h": h, "initial_c": c})
            p = np.exp(logits[:, 0] - logits[:, 0].max(axis=-1, keepdims=True))
            cdf = np.cumsum(p / p.sum(axis=-1, keepdims=True), axis=-1)
            token = (cdf < rng.random((streams, 1))).sum(axis=-1, keepdims=True).clip(max=spec.vocab_size - 1)
        return chars * streams

    return run
