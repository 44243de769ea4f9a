"""Choosing the next token from logits: greedy, temperature, top-k and nucleus (top-p) sampling.

All streams of a batch are sampled at once. Randomness comes from one NumPy generator, so a seed
reproduces the same text whatever backend computed the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import UsageError

#: Seeds go to NumPy and to every framework: 0 up to the largest value all of them take.
MAX_SEED = 2**63 - 1


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


def probabilities(logits: np.ndarray, settings: SamplingSettings) -> np.ndarray:
    """The distribution [B, V] that :func:`sample` draws from, after temperature, top-k and top-p."""
    z = np.asarray(logits, dtype=np.float64) / settings.temperature
    vocab = z.shape[-1]
    if settings.top_k is not None and settings.top_k < vocab:
        kth = np.partition(z, vocab - settings.top_k, axis=-1)[:, vocab - settings.top_k, None]
        z = np.where(z >= kth, z, -np.inf)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    if settings.top_p is not None and settings.top_p < 1:
        order = np.argsort(-p, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it is short.
        before = np.cumsum(sorted_p, axis=-1) - sorted_p
        keep_sorted = before < settings.top_p
        keep = np.empty_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=-1, keepdims=True)
    return p


def sample(logits: np.ndarray, settings: SamplingSettings, rng: np.random.Generator) -> np.ndarray:
    """One token id per row of ``logits`` [B, V], as int32 [B]."""
    if settings.greedy:
        return np.argmax(logits, axis=-1).astype(np.int32)
    p = probabilities(logits, settings)
    cdf = np.cumsum(p, axis=-1)
    u = rng.random((p.shape[0], 1)) * cdf[:, -1:]
    picked = (cdf <= u).sum(axis=-1)
    # The first entry whose cumulative mass exceeds u has non-zero probability; only u rounded up to
    # the total mass finds none, and takes the most likely token.
    picked = np.where(picked < p.shape[1], picked, np.argmax(p, axis=-1))
    return picked.astype(np.int32)
