"""Choosing the next token from logits: greedy, temperature, top-k and nucleus (top-p) sampling.

The transform from logits and a uniform number to a token is defined here once, in operations that
every framework computes bit for bit alike, so that a backend's fused generation loop
(:meth:`seqpred.Model.generate_tokens`) can translate it and pick exactly the tokens this module
picks from the same logits and uniforms (the conformance kit checks it for every setting):

1. Greedy takes the first of the largest logits; nothing else below applies.
2. Top-k keeps the tokens whose float32 logit is at least the k-th largest (ties at the k-th are kept).
3. ``t = (logit - max) * scale`` in float32, with ``scale`` the float32 rounding of log2(e) / temperature
   (:func:`log2_scale`): the token's log2 probability relative to the most likely one, <= 0.
4. Its weight is the integer ``2**(30 + t)``: ``t`` clamped at -32 and rounded to the nearest
   multiple of 2**-20, ties to even (exact float32 steps, then int64), then two lookups in the
   integer tables :data:`EXP2_HIGH` and :data:`EXP2_LOW`, a product and shifts, all in int64. No
   ``exp`` of any library is involved, so the weights do not depend on one; the most likely token
   weighs 2**30, a token 2**30 times less likely 0.
5. Top-p keeps the shortest run of tokens, by weight descending (ties: lower id first), whose
   weight before each is short of ``top_p`` times the total (compared in float64).
6. The token is the first whose cumulative weight (int64, in id order) exceeds
   ``floor(u * total)``, computed in float64, for the uniform ``u`` in [0, 1) the core drew.

Randomness comes from one NumPy generator, ``u`` drawn in float64, one per stream and position
(:func:`draw_uniforms`), so a seed reproduces the same text whatever backend computed the logits,
whether it generates one token per call or many, and however the core cuts the text into calls.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .errors import UsageError

#: Seeds go to NumPy and to every framework: 0 up to the largest value all of them take.
MAX_SEED = 2**63 - 1

#: The weight of the most likely token is ``2**WEIGHT_BITS``.
WEIGHT_BITS = 30
#: ``t`` (step 3) is resolved to ``2**-FRACTION_BITS``; its fraction indexes two tables of 2**10 rows.
FRACTION_BITS = 20
TABLE_BITS = 10
#: Below this ``t`` a token's weight is 0.
LOWEST_LOG2 = -32.0

_FRACTIONS = np.arange(2**TABLE_BITS, dtype=np.float64)
#: ``round(2**(i / 2**10) * 2**30)``: the high half of the fraction of ``t``.
EXP2_HIGH = np.round(np.exp2(_FRACTIONS / 2**TABLE_BITS) * 2**WEIGHT_BITS).astype(np.int64)
#: ``round(2**(i / 2**20) * 2**30)``: the low half.
EXP2_LOW = np.round(np.exp2(_FRACTIONS / 2**FRACTION_BITS) * 2**WEIGHT_BITS).astype(np.int64)
_LOG2E = 1.4426950408889634
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class SamplingSettings:
    """How to pick tokens. ``greedy`` takes the most likely token and ignores the rest."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and np.isfinite(self.temperature)):
            raise UsageError(
                f"temperature must be greater than 0, got {self.temperature}; use --greedy for argmax"
            )
        if self.top_k is not None and self.top_k < 1:
            raise UsageError(f"top-k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UsageError(f"top-p must be in (0, 1], got {self.top_p}")

    def active_top_k(self, vocab_size: int) -> int | None:
        """``top_k`` where it removes something from a vocabulary of ``vocab_size``, else None."""
        return self.top_k if self.top_k is not None and self.top_k < vocab_size else None

    @property
    def active_top_p(self) -> float | None:
        """``top_p`` where it may remove something, else None."""
        return self.top_p if self.top_p is not None and self.top_p < 1 else None


def log2_scale(settings: SamplingSettings) -> np.float32:
    """log2(e) / temperature, rounded once to float32 (and kept finite): step 3's multiplier."""
    return np.float32(min(_LOG2E / settings.temperature, _FLOAT32_MAX))


def draw_uniforms(rng: np.random.Generator, streams: int, positions: int) -> np.ndarray:
    """Uniforms [streams, positions] in [0, 1), float64, drawn position by position: the same
    numbers whether a text is drawn in one call or in many."""
    return rng.random((positions, streams)).T


@functools.cache
def exp2_fractions() -> np.ndarray:
    """``(EXP2_HIGH[f >> 10] * EXP2_LOW[f & 1023]) >> 30`` for every fraction ``f`` (8 MiB): the
    two lookups and the product of step 4 in one lookup, for speed; the same integers."""
    return ((EXP2_HIGH[:, None] * EXP2_LOW[None, :]) >> WEIGHT_BITS).ravel()


def exp2_weights(t: np.ndarray) -> np.ndarray:
    """Step 4: the int64 weight ``2**(30 + t)`` of float32 ``t`` <= 0."""
    scaled = np.maximum(t, np.float32(LOWEST_LOG2)) * np.float32(2**FRACTION_BITS)
    fixed = np.rint(scaled).astype(np.int64)  # exact: ties to even
    fraction = np.take(exp2_fractions(), fixed & (2**FRACTION_BITS - 1))
    return fraction >> -(fixed >> FRACTION_BITS)  # the whole part, from -32 to 0


def weights(logits: np.ndarray, settings: SamplingSettings) -> np.ndarray:
    """Steps 2 to 5: int64 weights [B, V] proportional to the distribution that :func:`pick` draws from."""
    z = np.asarray(logits, dtype=np.float32)
    vocab = z.shape[-1]
    top = z.max(axis=-1, keepdims=True)
    t = (z - top) * log2_scale(settings)
    w = exp2_weights(t)
    top_k = settings.active_top_k(vocab)
    if top_k is not None:
        kth = np.partition(z, vocab - top_k, axis=-1)[:, vocab - top_k, None]
        w = np.where(z >= kth, w, 0)
    top_p = settings.active_top_p
    if top_p is not None:
        w = _nucleus(w, top_p)
    return w


def _nucleus(w: np.ndarray, top_p: float) -> np.ndarray:
    """Step 5: keep the heaviest tokens while the weight before each is short of top_p of the total."""
    order = np.argsort(-w, axis=-1, kind="stable")
    sorted_w = np.take_along_axis(w, order, axis=-1)
    before = np.cumsum(sorted_w, axis=-1) - sorted_w
    threshold = top_p * sorted_w.sum(axis=-1, keepdims=True).astype(np.float64)
    kept = (before.astype(np.float64) < threshold).sum(axis=-1, keepdims=True)  # a prefix, at least 1
    last = np.take_along_axis(order, kept - 1, axis=-1)  # the lightest token kept
    last_w = np.take_along_axis(w, last, axis=-1)
    ids = np.arange(w.shape[-1])
    keep = (w > last_w) | ((w == last_w) & (ids <= last))
    return np.where(keep, w, 0)


def probabilities(logits: np.ndarray, settings: SamplingSettings) -> np.ndarray:
    """The distribution [B, V] that :func:`sample` draws from, after temperature, top-k and top-p."""
    w = weights(logits, settings).astype(np.float64)
    return w / w.sum(axis=-1, keepdims=True)


def pick(logits: np.ndarray, settings: SamplingSettings, uniforms: np.ndarray) -> np.ndarray:
    """One token id per row of ``logits`` [B, V] for the uniforms [B] in [0, 1), as int32 [B]."""
    if settings.greedy:
        return np.argmax(np.asarray(logits, dtype=np.float32), axis=-1).astype(np.int32)
    cdf = np.cumsum(weights(logits, settings), axis=-1)
    # Below the total: u < 1 and total < 2**53 keep the rounded product under it. An integer is at
    # most the product exactly when it is at most its floor, so the floor itself is not taken.
    threshold = np.asarray(uniforms, dtype=np.float64) * cdf[:, -1]
    return (cdf <= threshold[:, None]).sum(axis=-1).astype(np.int32)


def sample(logits: np.ndarray, settings: SamplingSettings, rng: np.random.Generator) -> np.ndarray:
    """One token id per row of ``logits`` [B, V], as int32 [B]; greedy draws nothing from ``rng``."""
    if settings.greedy:
        return pick(logits, settings, np.zeros(len(logits)))
    return pick(logits, settings, draw_uniforms(rng, len(logits), 1)[:, 0])
