"""The canonical weight layout that every backend maps to and from.

With V the vocabulary size, E the embedding width, H the hidden size and ``in`` the width of a
layer's input (E, or 1 for scaled integer input, for layer 0; H above it):

==============================  ===========  ==================================================
name                            shape        meaning
==============================  ===========  ==================================================
``embedding``                   [V, E]       row v is the input vector of token v (absent when E = 0)
``lstm.{k}.kernel``             [in, 4H]     input-to-gates, gates stacked as i, f, c, o
``lstm.{k}.recurrent_kernel``   [H, 4H]      hidden-to-gates, same gate order
``lstm.{k}.bias``               [4H]         one bias per gate unit
``dense.kernel``                [H, V]       last hidden state to logits
``dense.bias``                  [V]
==============================  ===========  ==================================================

The gates of one LSTM step, with x the input row vector and (h, c) the carried state::

    z = x @ kernel + h @ recurrent_kernel + bias
    i, f, g, o = sigmoid(z[:H]), sigmoid(z[H:2H]), tanh(z[2H:3H]), sigmoid(z[3H:])
    c' = f * c + i * g
    h' = o * tanh(c')

This is Keras' own layout; PyTorch's ``nn.LSTM`` stores the transposes and two biases whose sum
is ``bias`` (see each backend's mapping). All tensors are float32.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .errors import RunError
from .spec import ModelSpec

Weights = dict[str, np.ndarray]

DTYPE = np.float32


def canonical_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Name → shape of every canonical tensor of ``spec``, in a stable order."""
    v, h = spec.vocab_size, spec.hidden
    shapes: dict[str, tuple[int, ...]] = {}
    if spec.embedding:
        shapes["embedding"] = (v, spec.embedding)
    for k in range(spec.layers):
        shapes[f"lstm.{k}.kernel"] = (spec.layer_input_size(k), 4 * h)
        shapes[f"lstm.{k}.recurrent_kernel"] = (h, 4 * h)
        shapes[f"lstm.{k}.bias"] = (4 * h,)
    shapes["dense.kernel"] = (h, v)
    shapes["dense.bias"] = (v,)
    return shapes


def parameter_count(weights: Mapping[str, np.ndarray]) -> int:
    return int(sum(w.size for w in weights.values()))


def check_weights(spec: ModelSpec, weights: Mapping[str, np.ndarray], source: str = "weights") -> Weights:
    """Return ``weights`` as float32 arrays after checking names, shapes and finiteness against ``spec``.

    Raises :class:`RunError` naming the first problem found.
    """
    expected = canonical_shapes(spec)
    missing = [n for n in expected if n not in weights]
    if missing:
        raise RunError(f"{source}: missing tensor(s) {_names(missing)}")
    extra = sorted(n for n in weights if n not in expected)
    if extra:
        raise RunError(f"{source}: unexpected tensor(s) {_names(extra)}")
    out: Weights = {}
    for name, shape in expected.items():
        array = np.asarray(weights[name])
        if array.shape != shape:
            raise RunError(
                f"{source}: tensor {name} has shape {list(array.shape)}, the model needs {list(shape)}"
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise RunError(f"{source}: tensor {name} has dtype {array.dtype}, expected a float type")
        with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 become inf here
            cast = np.ascontiguousarray(array, dtype=DTYPE)
        if not np.all(np.isfinite(cast)):  # after the cast: what the model will compute with
            beyond = np.all(np.isfinite(array))
            raise RunError(
                f"{source}: tensor {name} holds "
                + ("values beyond float32's range" if beyond else "NaN or infinite values")
            )
        out[name] = cast
    return out


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def _orthogonal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    return q if rows >= cols else q.T


def init_weights(spec: ModelSpec, seed: int) -> Weights:
    """Seeded initial weights in the canonical layout, the same for every backend.

    The embedding is drawn from N(0, 1), as PyTorch's ``nn.Embedding`` draws it; the rest follows
    Keras: Glorot-uniform kernels, orthogonal recurrent kernels (per gate block), zero biases
    except 1 on the forget gate. Keras' own embedding (uniform in ±0.05) gives the first layer an
    input about thirty times weaker, and the model learned markedly slower per predicted character
    with it (the README's "Why these defaults" has the figures).
    """
    rng = np.random.default_rng(seed)
    h = spec.hidden
    weights: Weights = {}
    if spec.embedding:
        weights["embedding"] = rng.standard_normal(size=(spec.vocab_size, spec.embedding))
    for k in range(spec.layers):
        n_in = spec.layer_input_size(k)
        weights[f"lstm.{k}.kernel"] = _glorot_uniform(rng, n_in, 4 * h)
        weights[f"lstm.{k}.recurrent_kernel"] = np.concatenate(
            [_orthogonal(rng, h, h) for _ in range(4)], axis=1
        )
        bias = np.zeros(4 * h)
        bias[h : 2 * h] = 1.0
        weights[f"lstm.{k}.bias"] = bias
    weights["dense.kernel"] = _glorot_uniform(rng, h, spec.vocab_size)
    weights["dense.bias"] = np.zeros(spec.vocab_size)
    return {name: np.ascontiguousarray(w, dtype=DTYPE) for name, w in weights.items()}
