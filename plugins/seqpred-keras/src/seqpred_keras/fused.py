"""Fused generation on Keras: the model step and the core's sampling transform in one
``tf.while_loop`` inside one ``tf.function``, so that one call yields many tokens.

One ``tf.function`` call costs hundreds of microseconds of dispatch on a CPU, more than a step of
one stream computes; in the loop the call is paid once per chunk. The sampler is a line-by-line
translation of :mod:`seqpred.sampling` (its numbered steps), in the same exact operations: float32
subtraction and multiplication, floor, int64 tables, shifts and sums, float64 products. So it picks
the very token the core picks from the same logits and uniform (the conformance kit checks it).
"""

from __future__ import annotations

import numpy as np

from seqpred.sampling import (
    EXP2_HIGH,
    EXP2_LOW,
    FRACTION_BITS,
    LOWEST_LOG2,
    TABLE_BITS,
    WEIGHT_BITS,
    SamplingSettings,
    log2_scale,
)

from .framework import tf


def _int(value: int):
    return tf.constant(value, tf.int64)


def exp2_weights(t):
    """Step 4 (:func:`seqpred.sampling.exp2_weights`): int64 ``2**(30 + t)`` of float32 ``t`` <= 0."""
    shift, mask = tf.bitwise.right_shift, tf.bitwise.bitwise_and
    fixed = tf.cast(tf.math.rint(tf.maximum(t, LOWEST_LOG2) * float(2**FRACTION_BITS)), tf.int64)
    whole = shift(fixed, _int(FRACTION_BITS))  # arithmetic: floor
    fraction = mask(fixed, _int(2**FRACTION_BITS - 1))
    high = tf.gather(tf.constant(EXP2_HIGH), shift(fraction, _int(TABLE_BITS)))
    low = tf.gather(tf.constant(EXP2_LOW), mask(fraction, _int(2**TABLE_BITS - 1)))
    return shift(shift(high * low, _int(WEIGHT_BITS)), -whole)


def nucleus(w, top_p):
    """Step 5 (:func:`seqpred.sampling._nucleus`) on int64 weights [B, V]."""
    order = tf.argsort(-w, axis=-1, stable=True)  # ties: the lower id first
    sorted_w = tf.gather(w, order, batch_dims=1)
    before = tf.cumsum(sorted_w, axis=-1) - sorted_w
    threshold = top_p * tf.cast(tf.reduce_sum(sorted_w, axis=-1, keepdims=True), tf.float64)
    kept = tf.reduce_sum(tf.cast(tf.cast(before, tf.float64) < threshold, tf.int32), axis=-1, keepdims=True)
    last = tf.gather(order, kept - 1, batch_dims=1)
    last_w = tf.gather(w, last, batch_dims=1)
    ids = tf.range(tf.shape(w)[-1])[None, :]
    keep = (w > last_w) | ((w == last_w) & (ids <= last))
    return tf.where(keep, w, tf.zeros_like(w))


def pick(z, uniforms, scale, top_k, top_p, *, greedy: bool, use_top_k: bool, use_top_p: bool):
    """:func:`seqpred.sampling.pick` for float32 logits ``z`` [B, V] and float64 ``uniforms`` [B]."""
    top = tf.reduce_max(z, axis=-1, keepdims=True)
    ids = tf.range(tf.shape(z)[-1])[None, :]
    if greedy:  # step 1: the first of the largest
        return tf.reduce_min(tf.where(z == top, ids, tf.shape(z)[-1]), axis=-1)
    w = exp2_weights((z - top) * scale)  # step 3, then 4
    if use_top_k:  # step 2
        kth = tf.math.top_k(z, top_k, sorted=True).values[:, -1:]
        w = tf.where(z >= kth, w, tf.zeros_like(w))
    if use_top_p:
        w = nucleus(w, top_p)
    cdf = tf.cumsum(w, axis=-1)  # step 6
    threshold = tf.cast(tf.floor(uniforms * tf.cast(cdf[:, -1], tf.float64)), tf.int64)
    return tf.reduce_sum(tf.cast(cdf <= threshold[:, None], tf.int32), axis=-1)


class FusedGeneration:
    """:meth:`seqpred.Model.generate_tokens` for a :class:`~seqpred_keras.model.KerasModel`: one
    traced function per kind of sampling (greedy, top-k, top-p, logits returned or not).

    The loop runs in TensorFlow's graph executor at first, whose per-operation overhead caps one
    stream at a few thousand tokens a second. Once the model has generated :attr:`xla_after` tokens
    per stream with one kind of sampling and one number of streams, that loop is compiled with XLA
    (a few seconds, once), which fuses each step into a few kernels: several times faster for one
    stream. The compiled loop takes the uniforms padded to :attr:`width` columns, so that one
    compilation serves every chunk.
    """

    #: Tokens per stream generated in the graph executor before XLA compiles the loop.
    xla_after = 4096
    #: Columns of the compiled loop's uniforms: the most tokens per stream of one call.
    width = 256

    def __init__(self, model):
        self.model = model
        spec = model.spec
        h = tf.TensorSpec([None, spec.hidden], tf.float32)
        self.signature = [
            tf.TensorSpec([spec.vocab_size, 4 * spec.hidden], tf.float32),  # the step's token table
            tf.TensorSpec([None], tf.int32),
            tuple((h, h) for _ in range(spec.layers)),
            tf.TensorSpec([None, None], tf.float64),  # uniforms [B, K or width]
            tf.TensorSpec([], tf.int32),  # tokens to generate, at most the uniforms' columns
            tf.TensorSpec([], tf.float32),  # log2(e) / temperature
            tf.TensorSpec([], tf.int32),  # top-k
            tf.TensorSpec([], tf.float64),  # top-p
        ]
        self.functions: dict[tuple, object] = {}
        self.generated: dict[tuple, int] = {}  # tokens per stream, by kind and number of streams

    def function(self, kind: tuple[bool, bool, bool, bool], xla: bool):
        if (kind, xla) not in self.functions:
            greedy, use_top_k, use_top_p, return_logits = kind
            step = self.model._step_graph
            vocab = self.model.spec.vocab_size

            def loop(table, tokens, states, uniforms, count, scale, top_k, top_p):
                size = tf.shape(uniforms)[1]
                chosen = tf.TensorArray(tf.int32, size=size)
                seen = tf.TensorArray(tf.float32, size=size if return_logits else 0)

                def body(k, tokens, states, chosen, seen):
                    logits, states = step(table, tokens, states)
                    picked = pick(
                        logits,
                        uniforms[:, k],
                        scale,
                        top_k,
                        top_p,
                        greedy=greedy,
                        use_top_k=use_top_k,
                        use_top_p=use_top_p,
                    )
                    chosen = chosen.write(k, picked)
                    if return_logits:
                        seen = seen.write(k, logits)
                    return k + 1, picked, states, chosen, seen

                _, _, states, chosen, seen = tf.while_loop(
                    lambda k, *_: k < count, body, (tf.constant(0), tokens, states, chosen, seen)
                )
                chosen = chosen.stack()  # unwritten rows (past count) are zeros
                logits = (
                    tf.transpose(seen.stack(), [1, 0, 2])
                    if return_logits
                    else tf.zeros([0, 0, vocab], tf.float32)
                )
                return tf.transpose(chosen), states, logits

            self.functions[kind, xla] = tf.function(loop, input_signature=self.signature, jit_compile=xla)
        return self.functions[kind, xla]

    def __call__(self, table, tokens, state, settings: SamplingSettings, uniforms, return_logits: bool):
        use_top_k = settings.active_top_k(self.model.spec.vocab_size) is not None
        kind = (settings.greedy, use_top_k, settings.active_top_p is not None, return_logits)
        uniforms = np.asarray(uniforms, dtype=np.float64)
        streams, count = uniforms.shape
        done = self.generated.get((kind, streams), 0)
        if done < self.xla_after:
            self.generated[kind, streams] = done + count
            return self.run(self.function(kind, False), table, tokens, state, settings, uniforms, kind)
        chosen, seen = [], []
        for start in range(0, count, self.width):  # the compiled loop takes at most width columns
            part = uniforms[:, start : start + self.width]
            padded = np.zeros((streams, self.width))
            padded[:, : part.shape[1]] = part
            picked, state, logits = self.run(
                self.function(kind, True), table, tokens, state, settings, padded, kind, part.shape[1]
            )
            tokens = picked[:, -1]
            chosen.append(picked)
            seen.append(logits)
        return np.concatenate(chosen, axis=1), state, np.concatenate(seen, axis=1) if return_logits else None

    def run(self, function, table, tokens, state, settings, uniforms, kind, count=None):
        """One call of a traced loop: ``count`` tokens (all the uniforms' columns by default)."""
        count = uniforms.shape[1] if count is None else count
        top_k = settings.active_top_k(self.model.spec.vocab_size)
        chosen, state, logits = function(
            table,
            np.asarray(tokens, dtype=np.int32),
            state,
            uniforms,
            np.int32(count),
            log2_scale(settings),
            np.int32(top_k or 1),
            np.float64(settings.active_top_p or 1.0),
        )
        return chosen.numpy()[:, :count], state, logits.numpy()[:, :count] if kind[3] else None
