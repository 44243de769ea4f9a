"""Canonical weights ↔ Keras variables.

====================================  =====================================  ========
canonical (see ``seqpred.weights``)   Keras variable (attribute of the net)  relation
====================================  =====================================  ========
``embedding`` [V, E]                  ``embed.embeddings`` [V, E]            same
``lstm.{k}.kernel`` [in, 4H]          ``lstms[k].cell.kernel`` [in, 4H]      same
``lstm.{k}.recurrent_kernel`` [H,4H]  ``lstms[k].cell.recurrent_kernel``     same
``lstm.{k}.bias`` [4H]                ``lstms[k].cell.bias`` [4H]            same
``dense.kernel`` [H, V]               ``dense.kernel`` [H, V]                same
``dense.bias`` [V]                    ``dense.bias`` [V]                     same
====================================  =====================================  ========

The canonical layout is Keras' own: the same shapes, one bias per gate unit, and the gates in the
order input, forget, cell candidate, output. The mapping is therefore a table of names, and the
weights and Adam's moments (kept per canonical name) cross it unchanged.
"""

from __future__ import annotations

import numpy as np


def canonical_variables(net) -> dict:
    """Canonical name → the Keras variable of ``net`` (an :class:`~seqpred_keras.model.LSTMNet`)."""
    variables = {}
    if net.embed is not None:
        variables["embedding"] = net.embed.embeddings
    for k, lstm in enumerate(net.lstms):
        variables[f"lstm.{k}.kernel"] = lstm.cell.kernel
        variables[f"lstm.{k}.recurrent_kernel"] = lstm.cell.recurrent_kernel
        variables[f"lstm.{k}.bias"] = lstm.cell.bias
    variables["dense.kernel"] = net.dense.kernel
    variables["dense.bias"] = net.dense.bias
    return variables


def to_canonical(variables: dict) -> dict[str, np.ndarray]:
    """Values of ``canonical_variables`` → canonical float32 arrays."""
    return {name: np.array(var.numpy(), dtype=np.float32) for name, var in variables.items()}


def from_canonical(variables: dict, weights: dict[str, np.ndarray]) -> None:
    """Assign canonical ``weights`` to the variables of ``canonical_variables``."""
    for name, var in variables.items():
        var.assign(np.asarray(weights[name], dtype=np.float32))
