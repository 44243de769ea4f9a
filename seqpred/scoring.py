"""Scoring a text with a model: window by window, as training sees it, or in one pass with the
state carried from the first token to the last, as generation runs the network.

* :func:`window_loss` cuts the text into the evaluation windows of :func:`seqpred.batches.eval_batches`
  (non-overlapping ``seq_len``-token windows for the ``sequence`` objective), each scored from a zero
  state. It is the figure training has always reported.
* :func:`carried_loss` predicts every token from all the tokens before it: token ``i + 1`` from
  tokens ``0..i``, the state carried through the whole text. A model that degrades past the length
  of its training windows shows it here.
"""

from __future__ import annotations

import numpy as np

from .backend import Model
from .batches import eval_batches
from .errors import UsageError
from .reference import log_softmax
from .spec import ModelSpec

#: Tokens fed to the model per call when scoring with the state carried.
CARRIED_CHUNK = 512


def window_loss(model: Model, ids: np.ndarray, spec: ModelSpec, batch_size: int = 256) -> float:
    """Mean loss in nats over every evaluation window of ``ids``."""
    total = 0.0
    count = 0
    for batch in eval_batches(ids, spec.seq_len, spec.objective, batch_size):
        total += model.evaluate_batch(batch.inputs, batch.targets) * batch.predicted_tokens
        count += batch.predicted_tokens
    if count == 0:
        raise UsageError(
            f"nothing to evaluate: the text is shorter than one window of {spec.seq_len + 1} tokens"
        )
    return total / count


def carried_loss(model: Model, ids: np.ndarray, *, stripes: int = 1, chunk: int = CARRIED_CHUNK) -> float:
    """Mean loss in nats of every token of ``ids`` but the first, the state carried along.

    With ``stripes`` > 1 the text is cut into that many contiguous stripes run side by side as one
    batch (faster; each stripe starts from a zero state, so the figure moves by at most the cost of
    ``stripes - 1`` context resets). ``stripes = 1`` is one pass from the first token to the last.
    """
    ids = np.asarray(ids)
    if len(ids) < 2:
        raise UsageError("nothing to evaluate: the text needs at least two tokens")
    stripes = max(1, min(int(stripes), (len(ids) - 1)))
    length = (len(ids) - 1) // stripes
    inputs = np.stack([ids[s * length : (s + 1) * length] for s in range(stripes)]).astype(np.int32)
    targets = np.stack([ids[s * length + 1 : (s + 1) * length + 1] for s in range(stripes)]).astype(np.int64)
    state = model.initial_state(stripes)
    total = 0.0
    for start in range(0, length, chunk):
        logits, state = model.forward(inputs[:, start : start + chunk], state)
        logp = log_softmax(np.asarray(logits, dtype=np.float64))
        picked = np.take_along_axis(logp, targets[:, start : start + chunk, None], axis=-1)
        total -= float(picked.sum())
    return total / (stripes * length)


def validation_stripes(tokens: int, seq_len: int, limit: int = 64) -> int:
    """How many stripes validation runs side by side: each at least ten windows long, at most ``limit``."""
    return max(1, min(limit, tokens // (10 * seq_len)))
