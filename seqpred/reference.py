"""A NumPy forward pass that reads the canonical layout: the oracle for tests, and a way to score
or generate with no deep-learning framework installed.

Dropout is not applied (inference). The first layer's input projection is precomputed for every
token, so that one step costs a table lookup plus the recurrent and dense matrix products.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .spec import ModelSpec
from .weights import check_weights

State = list[tuple[np.ndarray, np.ndarray]]


def sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warnings for large negative inputs, and exact to rounding.
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def scaled_input(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """The tutorial's input: token id divided by the vocabulary size, as one feature."""
    return (np.asarray(tokens, dtype=np.float64) / float(vocab_size))[..., None]


def first_layer_inputs(spec: ModelSpec, weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """[V, in] matrix whose row v is the first LSTM layer's input for token v."""
    if spec.embedding:
        return np.asarray(weights["embedding"])
    return scaled_input(np.arange(spec.vocab_size), spec.vocab_size)


def lstm_cell(z: np.ndarray, c: np.ndarray, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply the gates to pre-activations ``z`` [B, 4H] (order i, f, c, o); return (h', c')."""
    i = sigmoid(z[:, :hidden])
    f = sigmoid(z[:, hidden : 2 * hidden])
    g = np.tanh(z[:, 2 * hidden : 3 * hidden])
    o = sigmoid(z[:, 3 * hidden :])
    c = f * c + i * g
    return o * np.tanh(c), c


class ReferenceModel:
    """Inference with canonical weights in float64 (or the dtype given)."""

    def __init__(self, spec: ModelSpec, weights: Mapping[str, np.ndarray], dtype: type = np.float64):
        weights = check_weights(spec, weights)
        self.spec = spec
        self.dtype = dtype
        w: dict[str, np.ndarray] = {name: np.asarray(value, dtype=dtype) for name, value in weights.items()}
        self.kernels = [w[f"lstm.{k}.kernel"] for k in range(spec.layers)]
        self.recurrent = [w[f"lstm.{k}.recurrent_kernel"] for k in range(spec.layers)]
        self.biases = [w[f"lstm.{k}.bias"] for k in range(spec.layers)]
        self.dense_kernel = w["dense.kernel"]
        self.dense_bias = w["dense.bias"]
        inputs: np.ndarray = np.asarray(first_layer_inputs(spec, w), dtype=dtype)
        self.token_gates = inputs @ self.kernels[0] + self.biases[0]

    def initial_state(self, batch: int) -> State:
        zeros: np.ndarray = np.zeros((batch, self.spec.hidden), dtype=self.dtype)
        return [(zeros.copy(), zeros.copy()) for _ in range(self.spec.layers)]

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One step for a batch of streams: tokens [B] → logits [B, V] and the new state."""
        tokens = np.asarray(tokens, dtype=np.int64)
        hidden = self.spec.hidden
        new_state: State = []
        x = None
        for k, (h, c) in enumerate(state):
            if k == 0:
                z = self.token_gates[tokens] + h @ self.recurrent[0]
            else:
                z = x @ self.kernels[k] + h @ self.recurrent[k] + self.biases[k]
            h, c = lstm_cell(z, c, hidden)
            new_state.append((h, c))
            x = h
        return x @ self.dense_kernel + self.dense_bias, new_state

    def forward(self, tokens: np.ndarray, state: State | None = None) -> tuple[np.ndarray, State]:
        """Tokens [B, T] → logits [B, T, V] and the state after the last step."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if state is None:
            state = self.initial_state(tokens.shape[0])
        logits: np.ndarray = np.empty(
            (tokens.shape[0], tokens.shape[1], self.spec.vocab_size), dtype=self.dtype
        )
        for t in range(tokens.shape[1]):
            logits[:, t], state = self.step(tokens[:, t], state)
        return logits, state


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-likelihood in nats of ``targets`` under ``logits`` [..., V]."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64))
    picked = np.take_along_axis(logp, np.asarray(targets)[..., None], axis=-1)
    return float(-picked.mean())
