"""The one-stream roofline: how fast this machine reads a model's weights once per token.

Generating one stream, each token multiplies one vector by every kernel of the network: the
work is matrix-vector products, which read each weight once and are bound by memory bandwidth,
not by arithmetic (the matmul roofline of ``bench/generate.py`` does not apply). This times exactly
those products, with NumPy's BLAS (and its threads) on float32 kernels of the model's shapes, and
nothing else of a step (no gates, no sampling): a loop that computes them all runs at most about
this fast (one that looks layer 0's input products up in a table per token reads a little less).
"""

from __future__ import annotations

import numpy as np
from common import rate

from seqpred.spec import ModelSpec


def one_stream_roofline(spec: ModelSpec, seconds: float) -> tuple[float, float]:
    """(steps per second of one step's matrix-vector products, megabytes of kernels they read)."""
    h = spec.hidden
    shapes = [(spec.input_size, 4 * h), (h, 4 * h)]
    shapes += [(h, 4 * h), (h, 4 * h)] * (spec.layers - 1)
    shapes.append((h, spec.vocab_size))
    rng = np.random.default_rng(0)
    kernels = [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]
    vectors = [rng.standard_normal((1, shape[0]), dtype=np.float32) for shape in shapes]

    def step() -> int:
        for vector, kernel in zip(vectors, kernels, strict=True):
            vector @ kernel
        return 1

    return rate(step, seconds), sum(k.nbytes for k in kernels) / 1e6
