"""Loss in the units people compare: nats, bits per token, perplexity."""

from __future__ import annotations

import math


def bits(nats: float) -> float:
    return nats / math.log(2)


def perplexity(nats: float) -> float:
    return math.exp(min(nats, 700.0))


def summary(nats: float) -> dict[str, float]:
    return {"loss": nats, "bits_per_token": bits(nats), "perplexity": perplexity(nats)}
