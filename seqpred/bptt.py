"""The training loss of the stacked LSTM and its gradients, by backpropagation through time.

This is the reference gradient every backend must match: the conformance kit trains with it
beside the backend under test (:mod:`seqpred.reference_trainer`), and the NumPy backend trains
with it. Inference is :mod:`seqpred.reference`'s job. Training needs two things more: dropout, and
every gate activation of every step, kept for the backward pass. :func:`loss_and_gradients` is a
pure function of canonical weights and works in their dtype, so that tests check it in float64
against finite differences while the NumPy backend runs it in float32.

Notation: B streams, T steps, H hidden units, V tokens. Gates are stacked i, f, g, o as in
:mod:`seqpred.weights`, g being the cell candidate. For one step, with x the input and (h, c) the
carried state::

    z  = x @ kernel + h @ recurrent_kernel + bias          [B, 4H]
    i, f, g, o = sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)
    c' = f * c + i * g
    h' = o * tanh(c')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .reference import log_softmax, scaled_input, sigmoid
from .spec import ModelSpec
from .weights import Weights


@dataclass
class LayerCache:
    """What one LSTM layer's forward pass keeps for its backward pass."""

    inputs: np.ndarray  # [B, T, in]  the layer's input sequence (after the layer below's dropout)
    gates: np.ndarray  # [B, T, 4H]  activated gates i, f, g, o
    cells: np.ndarray  # [B, T, H]   c_t
    tanh_cells: np.ndarray  # [B, T, H]   tanh(c_t)
    outputs: np.ndarray  # [B, T, H]   h_t, before dropout
    mask: np.ndarray | None  # [B, T, H]   dropout multiplier applied to h_t, None without dropout
    h0: np.ndarray  # [B, H]      the state the sequence started from
    c0: np.ndarray  # [B, H]


def dropout_masks(spec: ModelSpec, rng: np.random.Generator, batch: int, steps: int, dtype) -> list | None:
    """One inverted-dropout multiplier per LSTM layer (None for a layer without dropout, as the
    last one is unless ``spec.output_dropout``), or None when the spec has no dropout.

    A unit is kept with probability 1 - p and then scaled by 1 / (1 - p), so that the expected
    value of every activation is the same in training and inference (where nothing is dropped).
    """
    if spec.dropout == 0:
        return None
    shape = (batch, steps, spec.hidden)
    masks = []
    for k in range(spec.layers):
        p = spec.layer_dropout(k)
        # Draw for every layer, so that the masks of the layers below do not depend on this one.
        mask = (rng.random(shape) >= p) * (1.0 / (1.0 - p))
        masks.append(mask.astype(dtype) if p > 0 else None)
    return masks


def first_layer_input(spec: ModelSpec, weights: Mapping[str, np.ndarray], tokens: np.ndarray) -> np.ndarray:
    """[B, T, in]: embedding rows, or the token id divided by V as a single feature."""
    dtype = weights["dense.kernel"].dtype
    if spec.embedding:
        return weights["embedding"][tokens]
    return scaled_input(tokens, spec.vocab_size).astype(dtype)


def layer_forward(
    x: np.ndarray,
    kernel: np.ndarray,
    recurrent: np.ndarray,
    bias: np.ndarray,
    mask: np.ndarray | None,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
) -> LayerCache:
    """Run one LSTM layer over the whole sequence x [B, T, in] from (h0, c0), zeros by default."""
    batch, steps, _ = x.shape
    hidden = recurrent.shape[0]
    dtype = kernel.dtype
    # The input part of z does not depend on the recurrence: one matrix product for all steps.
    z_inputs = x @ kernel + bias
    gates = np.empty((batch, steps, 4 * hidden), dtype=dtype)
    cells = np.empty((batch, steps, hidden), dtype=dtype)
    tanh_cells = np.empty_like(cells)
    outputs = np.empty_like(cells)
    h = np.zeros((batch, hidden), dtype=dtype) if h0 is None else np.asarray(h0, dtype=dtype)
    c = np.zeros((batch, hidden), dtype=dtype) if c0 is None else np.asarray(c0, dtype=dtype)
    h_start, c_start = h, c
    g_slice = slice(2 * hidden, 3 * hidden)
    for t in range(steps):
        z = z_inputs[:, t] + h @ recurrent
        gates[:, t] = sigmoid(z)  # right for i, f and o ...
        gates[:, t, g_slice] = np.tanh(z[:, g_slice])  # ... while g is a tanh
        i, f, g, o = np.split(gates[:, t], 4, axis=1)
        c = f * c + i * g
        cells[:, t] = c
        tanh_cells[:, t] = np.tanh(c)
        h = o * tanh_cells[:, t]
        outputs[:, t] = h
    return LayerCache(x, gates, cells, tanh_cells, outputs, mask, h_start, c_start)


def layer_backward(
    cache: LayerCache, d_outputs: np.ndarray, kernel: np.ndarray, recurrent: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Backpropagate d_outputs (dLoss/dh_t from above, [B, T, H]) through one layer.

    Returns the gradients of the layer's input [B, T, in], kernel, recurrent kernel and bias.
    Walking back in time, h_t also receives gradient from step t + 1 through the recurrent
    kernel (``dh_next``), and c_t from c_{t+1} through the forget gate (``dc_next``).
    """
    batch, steps, hidden = d_outputs.shape
    dtype = d_outputs.dtype
    d_z = np.empty((batch, steps, 4 * hidden), dtype=dtype)
    dh_next = np.zeros((batch, hidden), dtype=dtype)
    dc_next = np.zeros((batch, hidden), dtype=dtype)
    for t in reversed(range(steps)):
        i, f, g, o = np.split(cache.gates[:, t], 4, axis=1)
        tanh_c = cache.tanh_cells[:, t]
        c_prev = cache.cells[:, t - 1] if t > 0 else cache.c0
        dh = d_outputs[:, t] + dh_next
        # h = o * tanh(c): to o directly, to c through tanh' = 1 - tanh².
        dc = dh * o * (1 - tanh_c * tanh_c) + dc_next
        # Gate derivatives, each times its activation's derivative: sigmoid' = s(1 - s), tanh' = 1 - t².
        d_z[:, t, :hidden] = dc * g * i * (1 - i)
        d_z[:, t, hidden : 2 * hidden] = dc * c_prev * f * (1 - f)
        d_z[:, t, 2 * hidden : 3 * hidden] = dc * i * (1 - g * g)
        d_z[:, t, 3 * hidden :] = dh * tanh_c * o * (1 - o)
        dc_next = dc * f
        dh_next = d_z[:, t] @ recurrent.T
    # The weights are shared by all steps: their gradients sum over steps, one product each.
    flat_dz = d_z.reshape(-1, 4 * hidden)
    h_prev = np.concatenate([cache.h0[:, None], cache.outputs[:, :-1]], axis=1)
    d_kernel = cache.inputs.reshape(batch * steps, -1).T @ flat_dz
    d_recurrent = h_prev.reshape(-1, hidden).T @ flat_dz
    d_bias = flat_dz.sum(axis=0)
    d_inputs = d_z @ kernel.T
    return d_inputs, d_kernel, d_recurrent, d_bias


def forward(
    spec: ModelSpec,
    weights: Mapping[str, np.ndarray],
    inputs: np.ndarray,
    masks: list | None,
    state: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[LayerCache]]:
    """The training forward pass: (logits, top-layer output they were computed from, caches).

    Logits are [B, T, V] for the ``sequence`` objective and [B, V] for ``last``. ``state`` is the
    canonical [layers, 2, B, H] state to start from (zeros when None); :func:`final_state` reads
    the state after the last step from the caches.
    """
    x = first_layer_input(spec, weights, inputs)
    caches = []
    for k in range(spec.layers):
        mask = masks[k] if masks is not None else None
        cache = layer_forward(
            x,
            weights[f"lstm.{k}.kernel"],
            weights[f"lstm.{k}.recurrent_kernel"],
            weights[f"lstm.{k}.bias"],
            mask,
            None if state is None else state[k, 0],
            None if state is None else state[k, 1],
        )
        caches.append(cache)
        x = cache.outputs if mask is None else cache.outputs * mask
    top = x[:, -1] if spec.objective == "last" else x
    return top @ weights["dense.kernel"] + weights["dense.bias"], top, caches


def final_state(caches: list[LayerCache]) -> np.ndarray:
    """The canonical state [layers, 2, B, H] after the last step of a :func:`forward` pass."""
    return np.stack([np.stack([cache.outputs[:, -1], cache.cells[:, -1]]) for cache in caches])


def mean_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood of ``targets`` and its gradient with respect to ``logits``.

    For softmax followed by cross-entropy the gradient is simply ``softmax(logits) - onehot``,
    divided by the number of predicted tokens because the loss is a mean.
    """
    log_probs = log_softmax(logits)
    picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)
    loss = float(-picked.mean(dtype=np.float64))
    d_logits = np.exp(log_probs)
    rows = d_logits.reshape(-1, logits.shape[-1])  # a view: d_logits is freshly allocated
    rows[np.arange(len(rows)), targets.reshape(-1)] -= 1
    d_logits /= targets.size
    return loss, d_logits


def loss(
    spec: ModelSpec, weights: Mapping[str, np.ndarray], inputs: np.ndarray, targets: np.ndarray
) -> float:
    """The batch's mean cross-entropy without dropout."""
    logits, _, _ = forward(spec, weights, np.asarray(inputs, dtype=np.int64), None)
    return mean_cross_entropy(logits, np.asarray(targets, dtype=np.int64))[0]


def loss_and_gradients(
    spec: ModelSpec,
    weights: Mapping[str, np.ndarray],
    inputs: np.ndarray,
    targets: np.ndarray,
    masks: list | None = None,
    state: np.ndarray | None = None,
) -> tuple[float, Weights, np.ndarray]:
    """The batch's mean cross-entropy, its gradient for every canonical tensor and the final state.

    ``masks`` are the dropout multipliers of :func:`dropout_masks`, or None for no dropout;
    ``state`` is the canonical state to start from (zeros when None), which gets no gradient.
    """
    inputs = np.asarray(inputs, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    logits, top, caches = forward(spec, weights, inputs, masks, state)
    value, d_logits = mean_cross_entropy(logits, targets)

    hidden = spec.hidden
    grads: Weights = {
        "dense.kernel": top.reshape(-1, hidden).T @ d_logits.reshape(-1, spec.vocab_size),
        "dense.bias": d_logits.reshape(-1, spec.vocab_size).sum(axis=0),
    }
    d_top = d_logits @ weights["dense.kernel"].T
    if spec.objective == "last":
        # Only the last step fed the logits; every earlier output gets gradient only through time.
        d_x = np.zeros_like(caches[-1].outputs)
        d_x[:, -1] = d_top
    else:
        d_x = d_top
    for k in reversed(range(spec.layers)):
        cache = caches[k]
        d_outputs = d_x if cache.mask is None else d_x * cache.mask
        d_x, d_kernel, d_recurrent, d_bias = layer_backward(
            cache, d_outputs, weights[f"lstm.{k}.kernel"], weights[f"lstm.{k}.recurrent_kernel"]
        )
        grads[f"lstm.{k}.kernel"] = d_kernel
        grads[f"lstm.{k}.recurrent_kernel"] = d_recurrent
        grads[f"lstm.{k}.bias"] = d_bias
    if spec.embedding:
        # Row v of the embedding collects the input gradient of every position holding token v.
        d_embedding = np.zeros_like(weights["embedding"])
        np.add.at(d_embedding, inputs, d_x)
        grads["embedding"] = d_embedding
    return value, grads, final_state(caches)
