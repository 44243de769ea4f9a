"""ONNX export from the canonical weights: one self-contained graph that any ONNX runtime can run.

The graph is written node by node with the ``onnx`` package's graph API from the canonical layout
of :mod:`seqpred.weights`; no framework traces anything, so a run trained on any backend exports
the same way. ``onnx`` is imported inside the functions that need it: importing this module costs
nothing, and ``seqpred export`` needs the optional extra ``seqpred[onnx]``.

The graph, with B streams, T steps, L layers, H hidden units and V tokens:

=============  =======  ===========  ===================================================
name           kind     shape        meaning
=============  =======  ===========  ===================================================
``tokens``     input    [B, T]       token ids (int64)
``initial_h``  input    [L, B, H]    the LSTM state to start from (zeros for a new text)
``initial_c``  input    [L, B, H]
``logits``     output   [B, T, V]    the next-token logits at every position
``Y_h``        output   [L, B, H]    the state after the last step: feed it back as
``Y_c``        output   [L, B, H]    ``initial_h`` and ``initial_c`` to continue
=============  =======  ===========  ===================================================

So one graph both scores a whole sequence (T > 1) and generates one token at a time (T = 1, the
state carried). The first layer's input is a ``Gather`` from the embedding, or, for a spec with
``embedding`` 0, the token id divided by V. Each layer is one ONNX ``LSTM`` operator: ONNX orders
the gates i, o, f, c where the canonical layout has i, f, c, o, stores ``W`` [1, 4H, in] and
``R`` [1, 4H, H], the transposes of the canonical kernels, and ``B`` [1, 8H], an input and a
recurrent bias whose sum is the canonical one (the recurrent half is written as zeros). A
``MatMul`` and an ``Add`` make the dense layer.

The model's metadata (``metadata_props``) holds everything else a generator needs: the model
spec, the vocabulary, the text and sampling settings of the run, and seqpred's version. The graph
uses opset :data:`OPSET` and IR version :data:`IR_VERSION`, which onnxruntime reads from 1.13 on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._version import __version__
from .errors import RunError, SeqpredError, UsageError
from .spec import ModelSpec
from .vocab import Vocab
from .weights import Weights, check_weights

if TYPE_CHECKING:
    import onnx

    from .runs import Run

#: The ONNX operator set the graph is written for (the LSTM operator of opset 14).
OPSET = 17
#: The ONNX file format version matching :data:`OPSET`.
IR_VERSION = 8
#: ``metadata_props`` keys; ``seqpred.format`` marks a file written by :func:`export_run`.
FORMAT = "seqpred-onnx"
FORMAT_VERSION = 1
INPUTS = ("tokens", "initial_h", "initial_c")
OUTPUTS = ("logits", "Y_h", "Y_c")
#: Training options that shape the text or the sampling, kept with the model.
CONFIG_KEYS = ("level", "lower", "greedy", "temperature")

#: ONNX gate block p holds canonical block _TO_ONNX[p] (canonical i, f, c, o; ONNX i, o, f, c).
_TO_ONNX = (0, 3, 1, 2)
_FROM_ONNX = tuple(int(i) for i in np.argsort(_TO_ONNX))

_INSTALL = "pip install 'seqpred[onnx]' (or seqpred-onnx)"


def _onnx():
    try:
        import onnx
    except ImportError:
        raise UsageError(f"ONNX export and .onnx files need the onnx package: {_INSTALL}") from None
    return onnx


def _reorder(matrix: np.ndarray, hidden: int, order: tuple[int, ...]) -> np.ndarray:
    """``matrix`` [..., 4H] with its four gate blocks of the last axis taken in ``order``."""
    blocks = [matrix[..., g * hidden : (g + 1) * hidden] for g in order]
    return np.concatenate(blocks, axis=-1)


def lstm_tensors(spec: ModelSpec, weights: Mapping[str, np.ndarray], layer: int) -> dict[str, np.ndarray]:
    """The ONNX ``LSTM`` operator's ``W``, ``R`` and ``B`` for one layer of canonical weights."""
    h = spec.hidden
    kernel = _reorder(np.asarray(weights[f"lstm.{layer}.kernel"]), h, _TO_ONNX)
    recurrent = _reorder(np.asarray(weights[f"lstm.{layer}.recurrent_kernel"]), h, _TO_ONNX)
    bias = _reorder(np.asarray(weights[f"lstm.{layer}.bias"]), h, _TO_ONNX)
    return {
        "W": np.ascontiguousarray(kernel.T[None], dtype=np.float32),
        "R": np.ascontiguousarray(recurrent.T[None], dtype=np.float32),
        "B": np.concatenate([bias, np.zeros_like(bias)])[None].astype(np.float32),
    }


def canonical_lstm(spec: ModelSpec, w: np.ndarray, r: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """The inverse of :func:`lstm_tensors`: canonical kernel, recurrent kernel and bias (suffixes)."""
    h = spec.hidden
    return {
        "kernel": _reorder(w[0].T, h, _FROM_ONNX),
        "recurrent_kernel": _reorder(r[0].T, h, _FROM_ONNX),
        "bias": _reorder(b[0, : 4 * h] + b[0, 4 * h :], h, _FROM_ONNX),
    }


class GraphBuilder:
    """Nodes and initializers of an ONNX graph under construction, with one name per value."""

    def __init__(self) -> None:
        _onnx()
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, value: np.ndarray) -> str:
        """An initializer holding ``value``; returns its name."""
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], **attributes: Any) -> str:
        """One operator node, named after its first output; returns that output's name."""
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0], **attributes))
        return outputs[0]


def add_network(
    spec: ModelSpec,
    weights: Mapping[str, np.ndarray],
    graph: GraphBuilder,
    tokens_tb: str,
    initial: list[tuple[str, str]],
    constants: GraphBuilder | None = None,
) -> tuple[str, list[tuple[str, str]]]:
    """The network's nodes from token ids [T, B] (int64) and each layer's state (h, c), each
    [1, B, H], to the logits [T, B, V] and each layer's state after the last step; returns the names.

    The weights go into ``constants`` (by default ``graph`` itself): a subgraph, such as the body
    of a ``Loop``, may read them from the graph that holds it.
    """
    from onnx import TensorProto

    constant, node = (constants or graph).constant, graph.node
    hidden, vocab = spec.hidden, spec.vocab_size
    if spec.embedding:
        node("Gather", [constant("embedding", weights["embedding"]), tokens_tb], ["x0"], axis=0)
    else:  # the tutorial's input: the id divided by the vocabulary size, one feature
        node("Cast", [tokens_tb], ["tokens_float"], to=TensorProto.FLOAT)
        node("Div", ["tokens_float", constant("vocab_size", np.asarray(vocab, np.float32))], ["scaled"])
        node("Unsqueeze", ["scaled", constant("feature_axis", np.asarray([2], np.int64))], ["x0"])
    x = "x0"
    final = []
    direction_axis = constant("direction_axis", np.asarray([1], np.int64))
    for k, (start_h, start_c) in enumerate(initial):
        tensors = {n: constant(f"lstm.{k}.{n}", v) for n, v in lstm_tensors(spec, weights, k).items()}
        outputs = [f"lstm.{k}.Y", f"lstm.{k}.Y_h", f"lstm.{k}.Y_c"]
        lstm_inputs = [x, tensors["W"], tensors["R"], tensors["B"], "", start_h, start_c]
        node("LSTM", lstm_inputs, outputs, hidden_size=hidden, direction="forward")
        # Y is [T, directions = 1, B, H]; the next layer and the dense layer take [T, B, H].
        x = node("Squeeze", [outputs[0], direction_axis], [f"h{k}"])
        final.append((outputs[1], outputs[2]))
    node("MatMul", [x, constant("dense.kernel", weights["dense.kernel"])], ["dense"])
    logits = node("Add", ["dense", constant("dense.bias", weights["dense.bias"])], ["logits_tb"])
    return logits, final


def split_state(graph: GraphBuilder, spec: ModelSpec, h: str, c: str) -> list[tuple[str, str]]:
    """Each layer's (h, c), [1, B, H], from the whole state h and c, [L, B, H]."""
    if spec.layers == 1:
        return [(h, c)]
    names = {s: [f"{source}.layer{k}" for k in range(spec.layers)] for s, source in (("h", h), ("c", c))}
    graph.node("Split", [h], names["h"], axis=0)
    graph.node("Split", [c], names["c"], axis=0)
    return list(zip(names["h"], names["c"], strict=True))


def join_state(graph: GraphBuilder, layers: list[tuple[str, str]], h: str, c: str) -> None:
    """The whole state h and c, [L, B, H], from each layer's (h, c)."""
    for name, parts in ((h, [p[0] for p in layers]), (c, [p[1] for p in layers])):
        if len(parts) > 1:
            graph.node("Concat", parts, [name], axis=0)
        else:
            graph.node("Identity", parts, [name])


def build_graph(spec: ModelSpec, weights: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """The inference graph of ``spec`` with ``weights`` (canonical), without seqpred's metadata."""
    from onnx import TensorProto, helper

    weights = check_weights(spec, weights)
    layers, hidden, vocab = spec.layers, spec.hidden, spec.vocab_size
    graph = GraphBuilder()
    # Time-major inside the graph: the LSTM operator takes [T, B, in] (onnxruntime has no batch-major LSTM).
    graph.node("Transpose", ["tokens"], ["tokens_tb"], perm=[1, 0])
    initial = split_state(graph, spec, "initial_h", "initial_c")
    logits, final = add_network(spec, weights, graph, "tokens_tb", initial)
    graph.node("Transpose", [logits], ["logits"], perm=[1, 0, 2])
    join_state(graph, final, "Y_h", "Y_c")

    state_shape: list[str | int] = [layers, "batch", hidden]
    onnx_graph = helper.make_graph(
        graph.nodes,
        "seqpred_lstm",
        inputs=[
            helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "steps"]),
            helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, state_shape),
            helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, state_shape),
        ],
        outputs=[
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "steps", vocab]),
            helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, state_shape),
            helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, state_shape),
        ],
        initializer=graph.initializers,
    )
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="seqpred",
        producer_version=__version__,
        doc_string=(
            f"seqpred stacked LSTM language model: {layers} x {hidden}, vocabulary {vocab}. Inputs tokens "
            f"[B, T] and the state initial_h, initial_c [{layers}, B, {hidden}] (zeros to start); outputs "
            f"logits [B, T, {vocab}] and the state after the last step, Y_h and Y_c."
        ),
    )
    model.ir_version = IR_VERSION
    return model


def onnx_model(
    spec: ModelSpec,
    weights: Mapping[str, np.ndarray],
    vocab: Vocab,
    config: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> onnx.ModelProto:
    """:func:`build_graph` with the metadata that makes the file alone enough to generate."""
    onnx = _onnx()
    model = build_graph(spec, weights)
    meta = meta or {}
    settings = {key: config[key] for key in CONFIG_KEYS if config and key in config}
    props = {
        "seqpred.format": FORMAT,
        "seqpred.format_version": str(FORMAT_VERSION),
        "seqpred.version": __version__,
        "seqpred.spec": json.dumps(spec.to_dict()),
        "seqpred.vocab": vocab.to_json(),
        "seqpred.config": json.dumps(settings),
        "seqpred.trained_backend": str(meta.get("backend", "")),
        "seqpred.step": str(meta.get("step", "")),
    }
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    return model


def export_run(run: Run, out: str | Path) -> Path:
    """Write ``run`` as a self-contained ONNX file at ``out``, atomically; returns the path."""
    from .runs import atomic_write_bytes

    model = onnx_model(run.spec, run.weights, run.vocab, run.config, run.meta)
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"{out}: is a folder; give the .onnx file to write with --out")
    try:
        atomic_write_bytes(out, model.SerializeToString())
    except FileNotFoundError:
        raise UsageError(f"{out.parent}: no such folder; create it or choose another --out") from None
    except OSError as exc:
        raise UsageError(f"{out}: cannot write there ({exc.strerror or exc}); choose another --out") from None
    return out


def _graph_weights(spec: ModelSpec, model: onnx.ModelProto, source: str) -> Weights:
    """Canonical weights from the initializers of a graph written by :func:`build_graph`."""
    from onnx import numpy_helper

    tensors: dict[str, np.ndarray] = {}
    for tensor in model.graph.initializer:
        if tensor.data_location == 1:  # EXTERNAL: never read files a model names
            raise RunError(
                f"{source}: tensor {tensor.name} is stored outside the file; seqpred does not read it"
            )
        tensors[tensor.name] = numpy_helper.to_array(tensor)
    weights: Weights = {}
    try:
        if spec.embedding:
            weights["embedding"] = tensors["embedding"]
        for k in range(spec.layers):
            w, r, b = (tensors[f"lstm.{k}.{n}"] for n in "WRB")
            if w.shape != (1, 4 * spec.hidden, spec.layer_input_size(k)) or r.shape[:2] != (
                1,
                4 * spec.hidden,
            ):
                raise RunError(f"{source}: LSTM layer {k} does not match the model spec")
            for name, value in canonical_lstm(spec, w, r, b).items():
                weights[f"lstm.{k}.{name}"] = value
        weights["dense.kernel"] = tensors["dense.kernel"]
        weights["dense.bias"] = tensors["dense.bias"]
    except KeyError as exc:
        raise RunError(f"{source}: the graph lacks the tensor {exc.args[0]}") from None
    except (ValueError, IndexError) as exc:
        raise RunError(f"{source}: a tensor does not match the model spec ({exc})") from None
    return check_weights(spec, weights, source)


def load_onnx_run(path: str | Path) -> Run:
    """A :class:`~seqpred.runs.Run` from a file written by ``seqpred export``: spec, vocabulary and
    settings from its metadata, canonical weights read back from its graph.

    Its backend is ``onnx``, so that such a file generates with onnxruntime unless told otherwise.
    """
    onnx = _onnx()
    from .runs import Run

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunError(f"{path}: no such file") from None
    except OSError as exc:
        raise RunError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError, and whatever a damaged file provokes
        raise RunError(f"{path}: not a valid ONNX file ({type(exc).__name__})") from None
    props = {p.key: p.value for p in model.metadata_props}
    if props.get("seqpred.format") != FORMAT:
        raise RunError(
            f"{path}: not a seqpred export (no seqpred metadata); seqpred reads the .onnx files that "
            f"seqpred export writes"
        )
    version = props.get("seqpred.format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise RunError(
            f"{path}: export format version {version or '?'} is newer than this seqpred ({__version__}) "
            f"reads; upgrade to seqpred {props.get('seqpred.version', 'newer')} or later"
        )
    try:
        spec = ModelSpec.from_dict(json.loads(props["seqpred.spec"]))
        vocab = Vocab.from_json(props["seqpred.vocab"])
        config = json.loads(props.get("seqpred.config", "{}"))
    except (KeyError, ValueError, TypeError, SeqpredError) as exc:
        raise RunError(f"{path}: damaged seqpred metadata ({exc}); export the run again") from None
    if len(vocab) != spec.vocab_size or not isinstance(config, dict):
        raise RunError(
            f"{path}: damaged seqpred metadata (vocabulary and spec disagree); export the run again"
        )
    weights = _graph_weights(spec, model, str(path))
    meta = {
        "format": "seqpred-run",
        "seqpred_version": props.get("seqpred.version", ""),
        "backend": "onnx",
        "trained_backend": props.get("seqpred.trained_backend", ""),
    }
    if props.get("seqpred.step", "").isdigit():
        meta["step"] = int(props["seqpred.step"])
    return Run(path=path, spec=spec, vocab=vocab, weights=weights, meta=meta, config=config)
