"""Scoring any text with a trained run, on any backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import progress
from .errors import CorpusError
from .metrics import summary
from .models import build_model
from .runs import load_run
from .scoring import carried_loss, window_loss
from .text_sources import read_corpus
from .vocab import UnknownPolicy


def evaluate_text(
    run: str | Path,
    corpus: str | Path,
    *,
    backend: str | None = None,
    checkpoint: str = "best",
    device: str = "cpu",
    unknown: UnknownPolicy = "error",
) -> dict[str, Any]:
    """Loss of the run's model on ``corpus``: nats, bits per token, perplexity and the token count.

    The text is prepared as for training (lower-cased if the run was). ``loss`` scores it in the
    evaluation windows of the validation set, each from a zero state; ``carried_loss`` in one pass
    with the state carried from the first token to the last, as generation runs the model.
    """
    loaded = load_run(run, checkpoint)
    text = read_corpus(corpus, lower=bool(loaded.config.get("lower", False)))
    # The compact encoder keeps memory low on large texts; skipping unknown symbols needs the general one.
    ids = loaded.vocab.encode_corpus(text) if unknown == "error" else loaded.vocab.encode(text, unknown)
    if len(ids) < loaded.spec.seq_len + 1:
        raise CorpusError(
            f"{corpus}: {len(ids):,} {loaded.vocab.level} tokens, shorter than one window of "
            f"{loaded.spec.seq_len + 1}; give a longer text"
        )
    name = backend or loaded.backend or "torch"
    model = build_model(name, loaded.spec, device, seed=0)
    model.set_weights(loaded.weights)
    with progress.scoring(f"scoring {corpus}", model, len(ids), loaded.spec) as scored:
        nats = window_loss(scored, ids, loaded.spec)
        carried = carried_loss(scored, ids)
    return {
        "run": str(loaded.path),
        "corpus": str(corpus),
        "backend": name,
        "tokens": int(len(ids)),
        "window": loaded.spec.seq_len,
        **summary(nats),
        **{f"carried_{key}": value for key, value in summary(carried).items()},
    }
