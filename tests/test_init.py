"""The initial weights: seeded, identical on every backend, and scaled as the defaults promise."""

from __future__ import annotations

import numpy as np

from seqpred.spec import ModelSpec
from seqpred.weights import init_weights

SPEC = ModelSpec(vocab_size=80, hidden=64, layers=2, embedding=64)


def test_initial_weights_are_a_function_of_the_seed():
    a, b, c = init_weights(SPEC, 1), init_weights(SPEC, 1), init_weights(SPEC, 2)
    assert all(np.array_equal(a[n], b[n]) for n in a)
    assert not np.array_equal(a["embedding"], c["embedding"])


def test_the_embedding_is_standard_normal():
    """A unit-variance embedding gives the first layer an input as strong as PyTorch's default does."""
    embedding = init_weights(SPEC, 0)["embedding"]
    assert abs(float(embedding.mean())) < 0.05
    assert 0.95 < float(embedding.std()) < 1.05


def test_kernels_are_glorot_recurrent_kernels_orthogonal_and_the_forget_bias_one():
    weights = init_weights(SPEC, 0)
    h = SPEC.hidden
    kernel = weights["lstm.0.kernel"]
    limit = np.sqrt(6.0 / (kernel.shape[0] + kernel.shape[1]))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.9 * limit
    for gate in range(4):
        block = weights["lstm.1.recurrent_kernel"][:, gate * h : (gate + 1) * h].astype(np.float64)
        np.testing.assert_allclose(block.T @ block, np.eye(h), atol=1e-5)
    bias = weights["lstm.0.bias"]
    assert np.all(bias[h : 2 * h] == 1.0) and np.all(bias[:h] == 0) and np.all(bias[2 * h :] == 0)
