"""Weights under which one training loss tells how much of a layer's output dropout kept.

The conformance kit sees a backend's dropout only through the loss that ``train_batch`` returns.
With the weights made here, one stream and one step, that loss is an invertible function of S,
the sum over the H units of one LSTM layer of the multipliers that dropout applied to them:
``S = k / (1 - p)`` for inverted dropout at rate p that kept k units, ``S = H`` without dropout.

* An *emitter* layer has zero kernels and biases that make its input and output gates 1 and its
  cell candidate tanh(A): every unit outputs ``a = tanh(tanh(A))``, whatever its input.
* A *summing* layer's unit 0 takes ``w`` times the sum of the layer's inputs as its cell
  candidate's pre-activation; its other units output 0.
* The dense layer's logit 0 is ``W`` times the sum of the top layer's outputs; the others are 0.
  The target is token 1, so the loss is ``log(exp(logit 0) + V - 1)``.

Three placements, as :class:`~seqpred.spec.ModelSpec` puts dropout (rate p, 0 < p < 1):

``after-the-only-layer``
    One emitter layer, ``output_dropout``: S is the dropout after it, before the dense layer.
``between-layers``
    Layer 0 emits, layer 1 sums, no ``output_dropout``: S is the dropout between the layers, and a
    dropout after layer 1 would break the relation (S would no longer be k / (1 - p)).
``after-the-last-layer``
    Two emitter layers, ``output_dropout``: layer 1 ignores its input, so S is the dropout after it.
"""

from __future__ import annotations

import math

import numpy as np

from .spec import ModelSpec
from .weights import Weights, canonical_shapes

#: Placement name → (layers, output_dropout).
PLACEMENTS: dict[str, tuple[int, bool]] = {
    "after-the-only-layer": (1, True),
    "between-layers": (2, False),
    "after-the-last-layer": (2, True),
}

_SATURATED = 30.0  # sigmoid(30) is 1 in float32
_CANDIDATE = 1.0  # A: an emitter's cell candidate is tanh(A)
_EMITTED = math.tanh(math.tanh(_CANDIDATE))  # a: what every unit of an emitter outputs
_SUMMED = 0.5  # w * a * H: the summing unit's pre-activation without dropout, far from saturation
_LOGIT = 2.0  # logit 0 without dropout


def probe_spec(placement: str, *, vocab_size: int, hidden: int, dropout: float, **fields) -> ModelSpec:
    """The spec of a probe: the layers and ``output_dropout`` of ``placement``, one step."""
    layers, output_dropout = PLACEMENTS[placement]
    return ModelSpec(
        vocab_size=vocab_size,
        hidden=hidden,
        layers=layers,
        dropout=dropout,
        output_dropout=output_dropout,
        seq_len=1,
        **fields,
    )


def _sums(placement: str) -> bool:
    """Whether the probe's top layer is a summing one (else an emitter)."""
    return placement == "between-layers"


def _gates(hidden: int, candidate: float) -> np.ndarray:
    """A bias [4H] that saturates the input and output gates and sets the candidate's pre-activation."""
    bias = np.zeros(4 * hidden)
    bias[:hidden] = _SATURATED
    bias[2 * hidden : 3 * hidden] = candidate
    bias[3 * hidden :] = _SATURATED
    return bias


def _summing_scales(hidden: int) -> tuple[float, float]:
    """(w, W) of a summing top layer."""
    w = _SUMMED / (_EMITTED * hidden)
    return w, _LOGIT / math.tanh(math.tanh(_SUMMED))


def probe_weights(spec: ModelSpec, placement: str) -> Weights:
    """Canonical weights of the probe for ``placement`` (``spec`` from :func:`probe_spec`)."""
    h = spec.hidden
    weights = {name: np.zeros(shape) for name, shape in canonical_shapes(spec).items()}
    for k in range(spec.layers):
        weights[f"lstm.{k}.bias"] = _gates(h, _CANDIDATE)
    if _sums(placement):
        w, dense = _summing_scales(h)
        weights["lstm.1.bias"] = _gates(h, 0.0)
        weights["lstm.1.kernel"][:, 2 * h] = w  # unit 0's candidate: w times the sum of the inputs
    else:
        dense = _LOGIT / (_EMITTED * h)
    weights["dense.kernel"][:, 0] = dense
    return {name: value.astype(np.float32) for name, value in weights.items()}


def probe_batch(spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of the probe: one stream, one step, token 0 in and token 1 expected."""
    inputs = np.zeros((1, 1), dtype=np.int32)
    targets = np.ones((1, 1) if spec.objective == "sequence" else (1,), dtype=np.int32)
    return inputs, targets


def kept_sum(spec: ModelSpec, placement: str, loss: float) -> float:
    """S, the sum of the probed layer's dropout multipliers, from the probe's ``loss``."""
    excess = math.exp(loss) - (spec.vocab_size - 1)
    logit = math.log(max(excess, 1e-30))
    if _sums(placement):
        w, dense = _summing_scales(spec.hidden)
        top = min(logit / dense, 1 - 1e-7)
        return math.atanh(min(math.atanh(top), 1 - 1e-7)) / (w * _EMITTED)
    return logit / (_LOGIT / spec.hidden)


def dropout_problems(sums: list[float], hidden: int, rate: float) -> list[str]:
    """What is wrong with the dropout that gave ``sums`` (one S per step), or nothing.

    Inverted dropout at ``rate`` keeps each of the ``hidden`` units with probability 1 - p and
    scales it by 1 / (1 - p): every S is a whole number of kept units divided by 1 - p, their mean
    is H, and about (1 - p) H units are kept.
    """
    values = np.asarray(sums, dtype=np.float64)
    if np.ptp(values) < 1e-3:
        if abs(values[0] - hidden) < 1e-2:
            return [f"no dropout: every step kept all {hidden} units unscaled"]
        return [f"the same mask at every step (sum of multipliers {values[0]:.3f} each time)"]
    problems = []
    mean = float(values.mean()) / hidden
    if abs(mean - 1.0) > 0.1:
        problems.append(
            f"the mean output is {mean:.3f} times its value without dropout, expected 1: kept units "
            f"must be scaled by 1 / (1 - p) = {1 / (1 - rate):.4g}"
        )
    kept = values * (1 - rate)
    off = np.abs(kept - np.round(kept))
    if off.max() > 0.02:
        worst = int(off.argmax())
        problems.append(
            f"at step {worst} the multipliers sum to {values[worst]:.4f}, which is no whole number of "
            f"units times 1 / (1 - p) = {1 / (1 - rate):.4g}"
        )
    fraction = float(np.round(kept).mean()) / hidden
    if abs(fraction - (1 - rate)) > 0.1:
        problems.append(f"{fraction:.3f} of the units were kept, expected 1 - p = {1 - rate:.3f}")
    return problems
