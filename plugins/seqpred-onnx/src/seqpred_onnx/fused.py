"""Fused generation on onnxruntime: the model step and the core's sampling transform in the body of
one ONNX ``Loop``, so that one session call yields a whole chunk of tokens.

A session call costs tens of microseconds of Python and onnxruntime bookkeeping, a third of what a
step of one stream computes; in the loop it is paid once per chunk. The sampler is a translation of
:mod:`seqpred.sampling` (its numbered steps) into the same exact operations: float32 subtraction,
multiplication and rounding, int64 table lookups, integer divisions of non-negative numbers (the
shifts of the core), an int64 running sum and float64 products and comparisons. So it picks the
very token the core picks from the same logits and uniform (the conformance kit checks it).
Top-k and top-p are not translated: with them the model steps one session call per token.

The graph, with K tokens per stream to generate:

=============  =======  ===========  ===================================================
name           kind     shape        meaning
=============  =======  ===========  ===================================================
``count``      input    []           K (int64)
``tokens``     input    [B]          the last token of each stream (int64)
``initial_h``  input    [L, B, H]    the state before ``tokens``
``initial_c``  input    [L, B, H]
``uniforms``   input    [K, B, 1]    the core's uniform for each position (float64)
``scale``      input    []           :func:`seqpred.sampling.log2_scale` (float32)
``chosen``     output   [K, B]       the tokens (int64)
``Y_h``        output   [L, B, H]    the state after the last token fed
``Y_c``        output   [L, B, H]
``logits``     output   [K, B, V]    the logits each token was drawn from (only if asked for)
=============  =======  ===========  ===================================================
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper

from seqpred import ModelSpec
from seqpred.export import IR_VERSION, OPSET, GraphBuilder, add_network, join_state, split_state
from seqpred.sampling import (
    EXP2_HIGH,
    EXP2_LOW,
    FRACTION_BITS,
    LOWEST_LOG2,
    TABLE_BITS,
    WEIGHT_BITS,
    SamplingSettings,
)

#: ``t`` is clamped at LOWEST_LOG2 = -32: adding this to the fixed-point ``t`` makes it non-negative.
_OFFSET = -int(LOWEST_LOG2) * 2**FRACTION_BITS


def fusable(settings: SamplingSettings, vocab_size: int) -> bool:
    """Whether the loop translates ``settings``: greedy or temperature alone, no top-k or top-p."""
    return settings.greedy or (settings.active_top_k(vocab_size) is None and settings.active_top_p is None)


def _sampler(body: GraphBuilder, constants: GraphBuilder, logits: str, vocab: int) -> str:
    """Steps 3, 4 and 6 of :mod:`seqpred.sampling` on float32 ``logits`` [B, V]: the int64 token [B]."""
    const, node = constants.constant, body.node
    node("ReduceMax", [logits], ["top"], axes=[1], keepdims=1)
    node("Sub", [logits, "top"], ["below_top"])
    node("Mul", ["below_top", "scale"], ["t"])  # step 3, float32
    # Step 4: fixed = rint(max(t, -32) * 2**20) (exact steps, ties to even, as ONNX Round does).
    node("Max", ["t", const("lowest_log2", np.asarray(LOWEST_LOG2, np.float32))], ["t_clamped"])
    fraction_scale = const("fraction_scale", np.asarray(2.0**FRACTION_BITS, np.float32))
    node("Mul", ["t_clamped", fraction_scale], ["t_fixed"])
    node("Round", ["t_fixed"], ["t_rounded"])
    node("Cast", ["t_rounded"], ["fixed"], to=TensorProto.INT64)
    # The core's fixed >> 20 (from -32 to 0) and fixed & (2**20 - 1), from fixed + 32 * 2**20 >= 0,
    # and the fraction's two halves, which index the two tables (8 KiB each: they stay in cache).
    node("Add", ["fixed", const("offset", np.asarray(_OFFSET, np.int64))], ["shifted"])
    node("Div", ["shifted", const("fraction_unit", np.asarray(2**FRACTION_BITS, np.int64))], ["whole"])
    table_unit = const("table_unit", np.asarray(2**TABLE_BITS, np.int64))
    node("Div", ["shifted", table_unit], ["shifted_high"])
    node("Mod", ["shifted_high", table_unit], ["high_index"])
    node("Mod", ["shifted", table_unit], ["low_index"])
    node("Gather", [const("exp2_high", EXP2_HIGH), "high_index"], ["high"], axis=0)
    node("Gather", [const("exp2_low", EXP2_LOW), "low_index"], ["low"], axis=0)
    node("Mul", ["high", "low"], ["product"])  # below 2**62
    # The core shifts the product right by 30, then by 32 - whole: one division by 2**(62 - whole),
    # rounding down (non-negative numbers).
    powers = np.asarray([2 ** (WEIGHT_BITS + 32 - whole) for whole in range(33)], np.int64)
    node("Gather", [const("powers", powers), "whole"], ["divisor"], axis=0)
    node("Div", ["product", "divisor"], ["weights"])
    # Step 6: the first token whose cumulative weight exceeds u * total (compared in float64).
    node("CumSum", ["weights", const("vocab_axis", np.asarray(1, np.int64))], ["cdf"])
    node("Gather", ["cdf", const("last_id", np.asarray([vocab - 1], np.int64))], ["total"], axis=1)
    node("Cast", ["total"], ["total_float"], to=TensorProto.DOUBLE)
    node("Gather", ["uniforms", "k"], ["u"], axis=0)  # [B, 1]
    node("Mul", ["u", "total_float"], ["threshold"])
    node("Cast", ["cdf"], ["cdf_float"], to=TensorProto.DOUBLE)  # exact: below 2**53
    node("LessOrEqual", ["cdf_float", "threshold"], ["passed"])
    node("Cast", ["passed"], ["passed_count"], to=TensorProto.INT64)
    sum_axis = const("sum_axis", np.asarray([1], np.int64))
    return node("ReduceSum", ["passed_count", sum_axis], ["picked"], keepdims=0)


def generation_graph(
    spec: ModelSpec, weights: Mapping[str, np.ndarray], *, greedy: bool, return_logits: bool
) -> onnx.ModelProto:
    """The ``Loop`` graph of this module's table for ``spec`` with canonical ``weights``.

    The loop carries each layer's h and c on their own, so that no step splits or joins the state."""
    layers, hidden, vocab = spec.layers, spec.hidden, spec.vocab_size
    outer, body = GraphBuilder(), GraphBuilder()
    carried = [(f"carried_h{k}", f"carried_c{k}") for k in range(layers)]
    body.node("Unsqueeze", ["token", outer.constant("time_axis", np.asarray([0], np.int64))], ["token_tb"])
    logits, final = add_network(spec, weights, body, "token_tb", carried, constants=outer)
    body.node("Squeeze", [logits, "time_axis"], ["step_logits"])  # [B, V]
    if greedy:  # step 1: the first of the largest
        picked = body.node("ArgMax", ["step_logits"], ["picked"], axis=1, keepdims=0)
    else:
        picked = _sampler(body, outer, "step_logits", vocab)
    body.node("Identity", ["condition"], ["condition_out"])
    body.node("Identity", [picked], ["chosen_k"])
    if return_logits:
        body.node("Identity", ["step_logits"], ["logits_k"])

    def value(name, kind, shape):
        return helper.make_tensor_value_info(name, kind, shape)

    layer_state = [1, "batch", hidden]
    states = [name for pair in carried for name in pair]
    final_states = [name for pair in final for name in pair]
    loop_body = helper.make_graph(
        body.nodes,
        "step",
        inputs=[value("k", TensorProto.INT64, []), value("condition", TensorProto.BOOL, [])]
        + [value("token", TensorProto.INT64, ["batch"])]
        + [value(name, TensorProto.FLOAT, layer_state) for name in states],
        outputs=[value("condition_out", TensorProto.BOOL, []), value(picked, TensorProto.INT64, ["batch"])]
        + [value(name, TensorProto.FLOAT, layer_state) for name in final_states]
        + [value("chosen_k", TensorProto.INT64, ["batch"])]
        + ([value("logits_k", TensorProto.FLOAT, ["batch", vocab])] if return_logits else []),
    )
    initial = split_state(outer, spec, "initial_h", "initial_c")
    last = [(f"last.{h}", f"last.{c}") for h, c in carried]
    loop_inputs = ["count", "", "tokens"] + [name for pair in initial for name in pair]
    loop_outputs = ["last_token"] + [name for pair in last for name in pair] + ["chosen"]
    outer.node("Loop", loop_inputs, loop_outputs + (["logits"] if return_logits else []), body=loop_body)
    join_state(outer, last, "Y_h", "Y_c")
    state = [layers, "batch", hidden]
    graph = helper.make_graph(
        outer.nodes,
        "seqpred_generate",
        inputs=[
            value("count", TensorProto.INT64, []),
            value("tokens", TensorProto.INT64, ["batch"]),
            value("initial_h", TensorProto.FLOAT, state),
            value("initial_c", TensorProto.FLOAT, state),
            value("uniforms", TensorProto.DOUBLE, ["count", "batch", 1]),
            value("scale", TensorProto.FLOAT, []),
        ],
        outputs=[
            value("chosen", TensorProto.INT64, ["count", "batch"]),
            value("Y_h", TensorProto.FLOAT, state),
            value("Y_c", TensorProto.FLOAT, state),
        ]
        + ([value("logits", TensorProto.FLOAT, ["count", "batch", vocab])] if return_logits else []),
        initializer=outer.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="seqpred")
    model.ir_version = IR_VERSION
    return model
