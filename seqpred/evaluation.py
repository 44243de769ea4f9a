"""Scoring any text with a trained run, on any backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .corpus import read_corpus
from .metrics import summary
from .models import build_model
from .runs import load_run
from .scoring import window_loss as evaluate


def evaluate_text(
    run: str | Path,
    corpus: str | Path,
    *,
    backend: str | None = None,
    checkpoint: str = "best",
    device: str = "cpu",
    unknown: str = "error",
) -> dict[str, Any]:
    """Loss of the run's model on ``corpus``: nats, bits per token, perplexity and the token count.

    The text is prepared as for training (lower-cased if the run was) and cut into the same
    evaluation windows as the validation set.
    """
    loaded = load_run(run, checkpoint)
    text = read_corpus(corpus, lower=bool(loaded.config.get("lower", False)))
    # The compact encoder keeps memory low on large texts; skipping unknown symbols needs the general one.
    ids = loaded.vocab.encode_corpus(text) if unknown == "error" else loaded.vocab.encode(text, unknown)
    name = backend or loaded.backend or "torch"
    model = build_model(name, loaded.spec, device, seed=0)
    model.set_weights(loaded.weights)
    nats = evaluate(model, ids, loaded.spec)
    return {
        "run": str(loaded.path),
        "corpus": str(corpus),
        "backend": name,
        "tokens": int(len(ids)),
        **summary(nats),
    }
