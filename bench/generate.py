"""Generation speed: seqpred against the tutorial's loop and a hand-written stateful loop.

For each backend, on the same random weights of a 2 x 300 LSTM over lower-cased Macbeth's 43
symbols, in one run:

* the tutorial's loop: the whole 50-character window re-run for every character, argmax, on the
  tutorial's model (scaled integer input);
* a plain hand-written stateful loop in the same framework (embedding 64), 1 and 64 streams;
* ``seqpred generate`` through the Python API on that backend, 1 and 64 streams;

and the roofline: forward FLOPs per character against this machine's measured matmul rate. The
onnx backend's figures are also given as ratios to the torch backend's in the same run.

    python bench/generate.py [--backends torch,keras,onnx] [--seconds 3]
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import macbeth_vocab, machine, matmul_gflops, rate, table  # noqa: E402

from seqpred.generate import Generator  # noqa: E402
from seqpred.runs import Run  # noqa: E402
from seqpred.sampling import SamplingSettings  # noqa: E402
from seqpred.spec import ModelSpec  # noqa: E402
from seqpred.weights import init_weights  # noqa: E402

STREAMS = 64


def seqpred_loop(backend: str, spec: ModelSpec, weights, vocab, streams: int):
    run = Run(path=Path("<bench>"), spec=spec, vocab=vocab, weights=weights, meta={"backend": backend})
    generator = Generator(run, backend)
    settings = SamplingSettings(temperature=1.0)

    def go(chars: int = 200) -> int:
        generator.generate("", chars, settings, seed=0, num_samples=streams)
        return chars * streams

    return go


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="torch,keras,onnx")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()

    vocab, ids = macbeth_vocab()
    spec = ModelSpec(vocab_size=len(vocab), hidden=300, layers=2, embedding=64)
    article = ModelSpec(
        vocab_size=len(vocab), hidden=300, layers=2, embedding=0, objective="last", seq_len=50
    )
    weights, article_weights = init_weights(spec, 0), init_weights(article, 0)
    window = ids[:50]

    gflops = matmul_gflops()
    flops = spec.flops_per_token()
    roofline = gflops * 1e9 / flops
    print(
        f"machine: {machine()}; matmul {gflops:.0f} GFLOP/s; {flops / 1e6:.2f} MFLOP per character "
        f"forward; roofline {roofline:,.0f} characters/s"
    )

    # The tutorial's own loop is Keras' model.predict on the window; each framework's window loop
    # is also measured, to show what the re-run alone costs there.
    import baselines_keras

    keras_tutorial = rate(baselines_keras.tutorial_loop(article, article_weights, window), args.seconds)
    print(f"  the tutorial's loop (keras, model.predict per character): {keras_tutorial:,.1f} characters/s")
    rows = []
    speeds: dict[tuple[str, int], float] = {}
    for backend in args.backends.split(","):
        baselines = importlib.import_module(f"baselines_{backend}")
        if backend == "keras":
            window_loop = keras_tutorial
        else:
            window_loop = rate(baselines.tutorial_loop(article, article_weights, window), args.seconds)
        for streams in (1, STREAMS):
            hand = rate(baselines.stateful_loop(spec, weights, streams), args.seconds)
            ours = rate(seqpred_loop(backend, spec, weights, vocab, streams), args.seconds)
            speeds[backend, streams] = ours
            rows.append(
                [
                    backend,
                    str(streams),
                    f"{window_loop:,.1f}",
                    f"{hand:,.0f}",
                    f"{ours:,.0f}",
                    f"{ours / hand:.1f}x",
                    f"{ours / keras_tutorial:,.0f}x",
                    f"{ours / window_loop:,.0f}x",
                    f"{ours / roofline:.0%}",
                ]
            )
            print(
                f"  {backend} x{streams}: window loop {window_loop:,.1f}, hand-written {hand:,.0f}, "
                f"seqpred {ours:,.0f} characters/s",
                flush=True,
            )
    print()
    header = [
        "backend",
        "streams",
        "window loop",
        "hand-written loop",
        "seqpred",
        "vs hand-written",
        "vs the tutorial",
        "vs window loop",
        "of roofline",
    ]
    print(table(header, rows))
    print(
        "\n(characters per second; window loop: the whole 50-character window re-run for every character,"
        " argmax,\n one stream, in that framework; the tutorial: that loop in Keras with model.predict,"
        f" {keras_tutorial:,.1f} characters/s)"
    )
    if ("onnx", 1) in speeds and ("torch", 1) in speeds:
        print("\nonnx backend against the torch backend, same run:")
        for streams, target in ((1, "target 2x"), (STREAMS, "")):
            ratio = speeds["onnx", streams] / speeds["torch", streams]
            roof = speeds["onnx", streams] / roofline
            note = f" ({target})" if target else f"; {roof:.0%} of the roofline (target 80%)"
            print(f"  {streams} stream{'s' * (streams > 1)}: {ratio:.2f}x{note}")


if __name__ == "__main__":
    main()
