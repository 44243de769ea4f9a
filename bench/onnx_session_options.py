"""Which onnxruntime session options generate fastest on this machine: the evidence for the settings
of ``seqpred_onnx.model.session_options``.

The 2 x 300 LSTM of bench/generate.py (embedding 64, lower-cased Macbeth's symbols), exported by
seqpred, stepped one token at a time with the state carried and sampled in NumPy, 1 and 64 streams,
under each combination of intra-op threads, graph optimisation level and thread spinning, with the
state passed as NumPy arrays (``run``) or through I/O binding into fresh arrays. Rows are in
characters per second, with the ratio to the first row. The machine may be shared: every setting is
measured once per round, the rounds interleave them, and each keeps its best round.

    python bench/onnx_session_options.py [--seconds 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import macbeth_vocab, machine, rate, table  # noqa: E402

from seqpred.export import build_graph  # noqa: E402
from seqpred.sampling import SamplingSettings, sample  # noqa: E402
from seqpred.spec import ModelSpec  # noqa: E402
from seqpred.weights import init_weights  # noqa: E402

LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def session(graph: bytes, threads: int, level: str, spinning: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = LEVELS[level]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def loop(sess: ort.InferenceSession, spec: ModelSpec, streams: int, binding: bool):
    settings = SamplingSettings()
    rng = np.random.default_rng(0)
    shape = (spec.layers, streams, spec.hidden)
    io = sess.io_binding()

    def step_run(tokens, h, c):
        logits, h, c = sess.run(None, {"tokens": tokens, "initial_h": h, "initial_c": c})
        return logits, h, c

    def step_bound(tokens, h, c):
        logits = np.empty((streams, 1, spec.vocab_size), np.float32)
        h2, c2 = np.empty(shape, np.float32), np.empty(shape, np.float32)
        for name, array in (("tokens", tokens), ("initial_h", h), ("initial_c", c)):
            io.bind_cpu_input(name, array)
        for name, array in (("logits", logits), ("Y_h", h2), ("Y_c", c2)):
            io.bind_output(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
        sess.run_with_iobinding(io)
        return logits, h2, c2

    step = step_bound if binding else step_run

    def go(chars: int = 100) -> int:
        h = c = np.zeros(shape, np.float32)
        tokens = np.zeros((streams, 1), np.int64)
        for _ in range(chars):
            logits, h, c = step(tokens, h, c)
            tokens = sample(logits[:, 0], settings, rng).astype(np.int64)[:, None]
        return chars * streams

    return go


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each setting; the best counts")
    args = parser.parse_args()
    vocab, _ = macbeth_vocab()
    spec = ModelSpec(vocab_size=len(vocab), hidden=300, layers=2, embedding=64)
    graph = build_graph(spec, init_weights(spec, 0)).SerializeToString()
    print(f"machine: {machine()} ({cpu_name()}); onnxruntime {ort.__version__}")
    settings = list(itertools.product((1, 2), ("basic", "all"), (True, False), (False, True)))
    sessions = {s: session(graph, *s[:3]) for s in settings}
    best: dict[tuple, float] = {}
    for round_ in range(args.rounds):
        for setting in settings:
            for streams in (1, 64):
                speed = rate(loop(sessions[setting], spec, streams, setting[3]), args.seconds)
                best[setting, streams] = max(speed, best.get((setting, streams), 0.0))
        print(f"  round {round_ + 1} of {args.rounds} done", flush=True)
    rows = []
    for setting in settings:
        threads, level, spinning, binding = setting
        cells = [str(threads), level, "on" if spinning else "off", "yes" if binding else "no"]
        for streams in (1, 64):
            speed = best[setting, streams]
            cells += [f"{speed:,.0f}", f"{speed / best[settings[0], streams]:.2f}"]
        rows.append(cells)
    print()
    header = [
        "threads",
        "optimisation",
        "spinning",
        "I/O binding",
        "1 stream",
        "ratio",
        "64 streams",
        "ratio",
    ]
    print(table(header, rows))


if __name__ == "__main__":
    main()
