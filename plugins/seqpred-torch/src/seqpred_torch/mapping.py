"""Canonical weights ↔ ``torch.nn`` parameters.

====================================  =====================  ====================================
canonical (see ``seqpred.weights``)   torch parameter        relation
====================================  =====================  ====================================
``embedding`` [V, E]                  ``embed.weight``       same
``lstm.{k}.kernel`` [in, 4H]          ``weight_ih_l{k}``     transposed, [4H, in]
``lstm.{k}.recurrent_kernel`` [H,4H]  ``weight_hh_l{k}``     transposed, [4H, H]
``lstm.{k}.bias`` [4H]                ``bias_ih_l{k}``       ``bias_ih + bias_hh``; on the way in
                                      ``bias_hh_l{k}``       ``bias_ih = bias``, ``bias_hh = 0``
``dense.kernel`` [H, V]               ``dense.weight``       transposed, [V, H]
``dense.bias`` [V]                    ``dense.bias``         same
====================================  =====================  ====================================

Both frameworks order the gates input, forget, cell candidate, output. ``bias_hh`` is kept at zero
and frozen, so that Adam updates one bias per unit as Keras does and both backends train alike.
"""

from __future__ import annotations

import numpy as np


# canonical name -> (torch parameter name, transposed?)
def parameter_map(spec) -> dict[str, tuple[str, bool]]:
    mapping: dict[str, tuple[str, bool]] = {}
    if spec.embedding:
        mapping["embedding"] = ("embed.weight", False)
    for k in range(spec.layers):
        mapping[f"lstm.{k}.kernel"] = (f"lstm.weight_ih_l{k}", True)
        mapping[f"lstm.{k}.recurrent_kernel"] = (f"lstm.weight_hh_l{k}", True)
        mapping[f"lstm.{k}.bias"] = (f"lstm.bias_ih_l{k}", False)
    mapping["dense.kernel"] = ("dense.weight", True)
    mapping["dense.bias"] = ("dense.bias", False)
    return mapping


def to_canonical(spec, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Torch parameter arrays (by ``named_parameters`` name) → canonical weights."""
    out = {}
    for name, (torch_name, transposed) in parameter_map(spec).items():
        value = params[torch_name]
        if name.startswith("lstm.") and name.endswith(".bias"):
            value = value + params[torch_name.replace("bias_ih", "bias_hh")]
        out[name] = np.ascontiguousarray(value.T if transposed else value, dtype=np.float32)
    return out


def from_canonical(spec, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical weights → torch parameter arrays, ``bias_hh`` zero."""
    out = {}
    for name, (torch_name, transposed) in parameter_map(spec).items():
        value = weights[name]
        out[torch_name] = np.ascontiguousarray(value.T if transposed else value, dtype=np.float32)
        if name.startswith("lstm.") and name.endswith(".bias"):
            out[torch_name.replace("bias_ih", "bias_hh")] = np.zeros_like(value, dtype=np.float32)
    return out
