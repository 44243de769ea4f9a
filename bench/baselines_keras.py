"""Plain Keras loops over canonical weights, written as a user would without seqpred."""

from __future__ import annotations

import numpy as np

from seqpred.spec import ModelSpec
from seqpred_keras.framework import keras  # pinned to TensorFlow, start-up notices silenced


def _lstm_weights(weights, k):
    return [weights[f"lstm.{k}.kernel"], weights[f"lstm.{k}.recurrent_kernel"], weights[f"lstm.{k}.bias"]]


def tutorial_loop(spec: ModelSpec, weights, window: np.ndarray):
    """The article's code: a Sequential model, ``model.predict`` on the whole window per character."""
    model = keras.Sequential(
        [
            keras.Input((len(window), 1)),
            keras.layers.LSTM(spec.hidden, return_sequences=True),
            keras.layers.Dropout(0.2),
            keras.layers.LSTM(spec.hidden),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(spec.vocab_size, activation="softmax"),
        ]
    )
    model.layers[0].set_weights(_lstm_weights(weights, 0))
    model.layers[2].set_weights(_lstm_weights(weights, 1))
    model.layers[4].set_weights([weights["dense.kernel"], weights["dense.bias"]])
    pattern = list(window)

    def run(chars: int = 2) -> int:
        for _ in range(chars):
            x = np.reshape(pattern[-len(window) :], (1, len(window), 1)) / float(spec.vocab_size)
            prediction = model.predict(x, verbose=0)
            pattern.append(int(np.argmax(prediction)))
        return chars

    return run


def stateful_loop(spec: ModelSpec, weights, streams: int):
    """The usual hand-written sampler: Keras layers called one step at a time with carried state."""
    embed = keras.layers.Embedding(spec.vocab_size, spec.embedding)
    lstms = [keras.layers.LSTM(spec.hidden, return_state=True) for _ in range(spec.layers)]
    dense = keras.layers.Dense(spec.vocab_size)
    embed.build((None, 1))
    embed.set_weights([weights["embedding"]])
    for k, layer in enumerate(lstms):
        layer.build((None, 1, spec.layer_input_size(k)))
        layer.set_weights(_lstm_weights(weights, k))
    dense.build((None, spec.hidden))
    dense.set_weights([weights["dense.kernel"], weights["dense.bias"]])
    rng = np.random.default_rng(0)

    def run(chars: int = 20) -> int:
        token = np.zeros((streams, 1), dtype=np.int32)
        states = [None] * spec.layers
        for _ in range(chars):
            x = embed(token)
            for k, layer in enumerate(lstms):
                x, h, c = layer(x, initial_state=states[k])
                states[k] = [h, c]
                x = x[:, None, :]
            probs = keras.ops.softmax(dense(x[:, 0])).numpy().astype(np.float64)
            probs /= probs.sum(axis=1, keepdims=True)
            token = np.array([[rng.choice(spec.vocab_size, p=p)] for p in probs], dtype=np.int32)
        return chars * streams

    return run


def train_loop(spec: ModelSpec, weights, batches, clip: float = 5.0):
    """The usual Keras way: a compiled functional model and ``train_on_batch``."""
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(spec.vocab_size, spec.embedding)(tokens)
    lstms = []
    for _ in range(spec.layers):
        lstms.append(keras.layers.LSTM(spec.hidden, return_sequences=True))
        x = keras.layers.Dropout(spec.dropout)(lstms[-1](x))
    dense = keras.layers.Dense(spec.vocab_size)
    model = keras.Model(tokens, dense(x))
    model.layers[1].set_weights([weights["embedding"]])
    for k, layer in enumerate(lstms):
        layer.set_weights(_lstm_weights(weights, k))
    dense.set_weights([weights["dense.kernel"], weights["dense.bias"]])
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3, global_clipnorm=clip),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    stream = batches.iter_from(0)

    def run(steps: int = 2) -> int:
        done = 0
        for _ in range(steps):
            batch = next(stream)
            model.train_on_batch(batch.inputs, batch.targets)
            done += batch.predicted_tokens
        return done

    return run
