"""The inference half of the :class:`seqpred.Model` contract, on onnxruntime.

The model keeps the canonical weights; on first use it writes them as the ONNX graph of
:mod:`seqpred.export`, in memory, and opens an onnxruntime session on it. :meth:`OnnxModel.step`
and :meth:`OnnxModel.forward` are one session call each, with the state two float32 arrays
[layers, B, H], h and c, fed back as the graph's ``initial_h`` and ``initial_c``.
:meth:`OnnxModel.generate_tokens` runs a chunk of tokens in one call of a second graph, a ``Loop``
over the same network with the core's sampling inside (:mod:`seqpred_onnx.fused`).

The backend cannot train (it declares ``trains = False``, so the core never asks it to): the
training methods raise :class:`NotImplementedError`.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from seqpred import Model, ModelSpec, OptimizerSettings
from seqpred.export import build_graph
from seqpred.reference import cross_entropy
from seqpred.sampling import SamplingSettings, log2_scale, pick
from seqpred.threads import chosen_threads, recent_free_cores
from seqpred.weights import DTYPE, Weights, check_weights, init_weights

from .fused import fusable, generation_graph

State = tuple[np.ndarray, np.ndarray]  # h and c, each [layers, B, H]

#: Environment variable: onnxruntime's intra-op threads (default: seqpred's thread count, see
#: ``seqpred.threads``; without one, a thread per CPU core, up to 2).
THREADS_VARIABLE = "SEQPRED_ONNX_THREADS"

_INFERENCE_ONLY = (
    "the onnx backend runs inference only (generate, evaluate); train with another backend, such as torch"
)


def session_options() -> ort.SessionOptions:
    """The settings that generated fastest in bench/onnx_session_options.py on a 2-core machine:
    seqpred's thread count (one per free core), threads that spin between the graph's small
    operators when each has a free core to itself and sleep when it would share one (on the idle
    machine spinning ran 1.6 times as fast for one stream; beside another program, spinning threads
    ran at half speed, losing their share of the busy CPU), the basic graph optimisations (constant
    folding, redundant nodes removed; the extended ones gained nothing), sequential execution, and
    the NumPy arrays fed directly (I/O binding gained nothing). The choice is made once, when the
    session opens."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    value = os.environ.get(THREADS_VARIABLE, "")
    if value:
        try:
            threads = int(value)
        except ValueError:
            raise ValueError(f"{THREADS_VARIABLE} must be a whole number of threads, got {value!r}") from None
        if threads < 1:
            raise ValueError(f"{THREADS_VARIABLE} must be at least 1, got {threads}")
    else:  # seqpred's choice (--threads, SEQPRED_THREADS, or the free cores), else the cores up to 2
        threads = chosen_threads() or min(2, os.cpu_count() or 1)
    options.intra_op_num_threads = threads
    spin = threads == 1 or threads <= recent_free_cores()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.log_severity_level = 3  # errors only: no notices on stderr
    return options


class OnnxModel(Model):
    def __init__(self, spec: ModelSpec, *, seed: int = 0):
        self.spec = spec
        self.seed = seed
        # The core always sets the weights; seeded ones are made only if asked for before that, so
        # that loading a model for generation costs no initialisation (QR decompositions).
        self._weights: Weights | None = None
        self._options = session_options()  # here, so that a bad SEQPRED_ONNX_THREADS stops create_model
        self._session: ort.InferenceSession | None = None  # opened on first use
        self._loops: dict[tuple[bool, bool], ort.InferenceSession] = {}  # generation loops, by kind

    # -- weights -------------------------------------------------------------------------------
    @property
    def weights(self) -> Weights:
        if self._weights is None:
            self._weights = init_weights(self.spec, self.seed)
        return self._weights

    def get_weights(self) -> Weights:
        return {name: value.copy() for name, value in self.weights.items()}

    def set_weights(self, weights: Weights) -> None:
        self._weights = {name: value.copy() for name, value in check_weights(self.spec, weights).items()}
        self._session = None
        self._loops = {}

    def session(self) -> ort.InferenceSession:
        """The onnxruntime session over the exported graph of the current weights."""
        if self._session is None:
            self._session = self._open(build_graph(self.spec, self.weights))
        return self._session

    def loop_session(self, greedy: bool, return_logits: bool) -> ort.InferenceSession:
        """The session over the generation loop of :mod:`seqpred_onnx.fused` of one kind."""
        kind = (greedy, return_logits)
        if kind not in self._loops:
            graph = generation_graph(self.spec, self.weights, greedy=greedy, return_logits=return_logits)
            self._loops[kind] = self._open(graph)
        return self._loops[kind]

    def _open(self, graph) -> ort.InferenceSession:
        data = graph.SerializeToString()
        return ort.InferenceSession(data, self._options, providers=["CPUExecutionProvider"])

    # -- inference -----------------------------------------------------------------------------
    def initial_state(self, batch: int) -> State:
        zeros = np.zeros((self.spec.layers, batch, self.spec.hidden), dtype=DTYPE)
        return zeros, zeros.copy()

    def run(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One session call: tokens [B, T] → logits [B, T, V] and the state after the last step."""
        h, c = state
        feeds = {"tokens": np.asarray(tokens, dtype=np.int64), "initial_h": h, "initial_c": c}
        logits, h, c = self.session().run(None, feeds)
        return logits, (h, c)

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        logits, state = self.run(np.asarray(tokens)[:, None], state)
        return logits[:, 0], state

    def forward(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        return self.run(tokens, state)

    def generate_tokens(self, tokens, state, settings: SamplingSettings, uniforms, *, return_logits=False):
        """Fused generation: the whole chunk in one call of the ``Loop`` graph of
        :mod:`seqpred_onnx.fused` (greedy, or temperature alone); with top-k or top-p, one session
        call and the core's own :func:`~seqpred.sampling.pick` per token."""
        uniforms = np.asarray(uniforms, dtype=np.float64)
        if not fusable(settings, self.spec.vocab_size):
            return self._stepped(tokens, state, settings, uniforms, return_logits)
        streams, count = uniforms.shape
        h, c = state
        feeds = {
            "count": np.asarray(count, dtype=np.int64),
            "tokens": np.asarray(tokens, dtype=np.int64).reshape(streams),
            "initial_h": h,
            "initial_c": c,
            "uniforms": np.ascontiguousarray(uniforms.T[..., None]),
            "scale": np.asarray(log2_scale(settings), dtype=np.float32),
        }
        outputs = self.loop_session(settings.greedy, return_logits).run(None, feeds)
        chosen = outputs[0].T.astype(np.int32)
        seen = np.ascontiguousarray(outputs[3].transpose(1, 0, 2)) if return_logits else None
        return chosen, (outputs[1], outputs[2]), seen

    def _stepped(self, tokens, state, settings, uniforms, return_logits):
        """One session call and one :func:`~seqpred.sampling.pick` per token, nothing else between."""
        streams, count = uniforms.shape
        chosen = np.empty((streams, count), dtype=np.int32)
        seen = np.empty((streams, count, self.spec.vocab_size), DTYPE) if return_logits else None
        run = self.session().run
        h, c = state
        picked = np.asarray(tokens, dtype=np.int64).reshape(streams, 1)
        for k in range(count):
            logits, h, c = run(None, {"tokens": picked, "initial_h": h, "initial_c": c})
            if seen is not None:
                seen[:, k] = logits[:, 0]
            chosen[:, k] = pick(logits[:, 0], settings, uniforms[:, k])
            picked = chosen[:, k : k + 1].astype(np.int64)
        return chosen, (h, c), seen

    def state_to_numpy(self, state: State) -> np.ndarray:
        """The canonical state: float32 [layers, 2, B, H], h then c."""
        return np.stack(state, axis=1).astype(DTYPE)

    def state_from_numpy(self, array: np.ndarray) -> State:
        array = np.asarray(array, dtype=DTYPE)
        return np.ascontiguousarray(array[:, 0]), np.ascontiguousarray(array[:, 1])

    def evaluate_batch(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        logits, _ = self.run(inputs, self.initial_state(len(inputs)))
        if self.spec.objective == "last":
            logits = logits[:, -1]
        return cross_entropy(logits, targets)

    # -- training: not here ----------------------------------------------------------------------
    def configure_training(self, settings: OptimizerSettings) -> None:
        raise NotImplementedError(_INFERENCE_ONLY)

    def train_batch(self, inputs: np.ndarray, targets: np.ndarray, lr: float, *, step: int) -> float:
        raise NotImplementedError(_INFERENCE_ONLY)
