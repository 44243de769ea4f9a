"""Generation speed: seqpred against the tutorial's loop and a hand-written stateful loop.

For each backend, on the same random weights of a 2 x 300 LSTM over lower-cased Macbeth's 43
symbols, in one run:

* the tutorial's loop: the whole 50-character window re-run for every character, argmax, on the
  tutorial's model (scaled integer input);
* a plain hand-written stateful loop in the same framework (embedding 64), 1 and 64 streams;
* ``seqpred generate`` through the Python API on that backend, 1 and 64 streams: with the backend's
  fused loop (``Model.generate_tokens``, many tokens per call) where it has one, and stepped by the
  core (one ``Model.step`` per token) for comparison;

and two rooflines: for 64 streams, forward FLOPs per character against this machine's measured
matmul rate; for one stream, where every weight is read once per character and matrix-vector
products are bound by memory rather than arithmetic, the rate of one step's matrix-vector products
(every kernel of the model, NumPy's BLAS: ``bench/weights_read.py``). The onnx backend's figures
are also given as ratios to the torch backend's in the same run, and the targets are checked at
the end.

Each measurement starts with a warm-up: the Keras loop runs in TensorFlow's graph executor until it
has generated ``FusedGeneration.xla_after`` tokens per stream, then is compiled with XLA (the time
of that warm-up is shown), so the figures are those of a long generation.

``--torch-variants`` adds the torch step's kernels measured one against the other, in full
generation loops with the core's sampler: the model's own step, nn.LSTM's kernel, and the step
compiled by ``torch.compile`` (its compile time shown); with ``--device cuda``, also with CUDA
graphs (``mode="reduce-overhead"``), which need a GPU.

    python bench/generate.py [--backends torch,keras,onnx] [--seconds 3] [--rounds 3] [--torch-variants]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import macbeth_vocab, machine, matmul_gflops, rate, table  # noqa: E402
from weights_read import one_stream_roofline  # noqa: E402

from seqpred.generate import Generator  # noqa: E402
from seqpred.models import implements  # noqa: E402
from seqpred.runs import Run  # noqa: E402
from seqpred.sampling import SamplingSettings, pick  # noqa: E402
from seqpred.spec import ModelSpec  # noqa: E402
from seqpred.weights import init_weights  # noqa: E402

STREAMS = 64
CHARS = 1024  # characters per stream of one measured call


def seqpred_loop(backend: str, spec: ModelSpec, weights, vocab, streams: int, fused: bool):
    run = Run(path=Path("<bench>"), spec=spec, vocab=vocab, weights=weights, meta={"backend": backend})
    generator = Generator(run, backend, fused=fused)
    settings = SamplingSettings(temperature=1.0)

    def go(chars: int = CHARS) -> int:
        generator.generate("", chars, settings, seed=0, num_samples=streams)
        return chars * streams

    return go, generator


def warm_up(backend: str, generator: Generator, go) -> str:
    """Generate until the backend's fused loop is in its final form; say what it took."""
    start = time.perf_counter()
    if backend == "keras" and generator.fused:
        from seqpred_keras.fused import FusedGeneration

        go(FusedGeneration.xla_after + CHARS)
    go()
    return f"warm-up {time.perf_counter() - start:.1f} s"


def torch_variants(spec: ModelSpec, weights, seconds: float, device: str) -> None:
    """The torch step's kernels, each in a loop of steps sampled by the core, 1 and 64 streams."""
    import torch

    from seqpred.models import build_model

    model = build_model("torch", spec, device, 0)
    model.set_weights(weights)
    inner = model.wrapped
    settings = SamplingSettings()
    net = inner.net.eval()

    def kernel_step(rows, state):
        out, state = net.lstm(net.inputs(rows[:, None]), state)
        return net.dense(out[:, 0]), state

    inner._prepare_step()
    compiled_step = torch.compile(inner.step_tensors, dynamic=False)
    kernels = {
        "seqpred step (token table, one sigmoid)": inner.step_tensors,
        "nn.LSTM kernel": kernel_step,
        "torch.compile of the seqpred step": compiled_step,
    }
    if device != "cpu":  # CUDA graphs: replayed kernels, no launch per operation
        kernels["torch.compile, CUDA graphs"] = torch.compile(
            inner.step_tensors, mode="reduce-overhead", dynamic=False
        )
    rows = []
    for streams in (1, STREAMS):
        uniforms = np.random.default_rng(0).random((streams, 100))
        for name, step in kernels.items():

            @torch.inference_mode()
            def go(step=step, streams=streams, uniforms=uniforms) -> int:
                state = inner.initial_state(streams)
                tokens = np.zeros(streams, dtype=np.int64)
                for k in range(uniforms.shape[1]):
                    logits, state = step(torch.from_numpy(tokens).to(inner.device), state)
                    tokens = pick(logits.cpu().numpy(), settings, uniforms[:, k]).astype(np.int64)
                return uniforms.shape[1] * streams

            start = time.perf_counter()
            go()
            first = time.perf_counter() - start
            speed = rate(go, seconds)
            rows.append([str(streams), name, f"{speed:,.0f}", f"{first:.1f} s"])
            print(f"  torch x{streams}, {name}: {speed:,.0f} characters/s", flush=True)
    print()
    print(table(["streams", "step", "characters/s", "first call (compiles)"], rows))
    if device == "cpu":
        print("(CUDA graphs, torch.compile's mode='reduce-overhead', need a GPU: not measured on this CPU)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="torch,keras,onnx")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds sharing --seconds, the best of each loop's taken (1: one measurement)",
    )
    parser.add_argument("--torch-variants", action="store_true", help="also measure the torch step's kernels")
    parser.add_argument("--device", default="cpu", help="device of --torch-variants")
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
    single, megabytes = one_stream_roofline(spec, args.seconds)
    rooflines = {1: single, STREAMS: roofline}
    print(
        f"machine: {machine()}; matmul {gflops:.0f} GFLOP/s; {flops / 1e6:.2f} MFLOP per character "
        f"forward; roofline {roofline:,.0f} characters/s; one stream: one step's matrix-vector "
        f"products ({megabytes:.2f} MB of weights) {single:,.0f} per second"
    )

    # The tutorial's own loop is Keras' model.predict on the window; each framework's window loop
    # is also measured, to show what the re-run alone costs there.
    import baselines_keras

    keras_tutorial = rate(baselines_keras.tutorial_loop(article, article_weights, window), args.seconds)
    print(f"  the tutorial's loop (keras, model.predict per character): {keras_tutorial:,.1f} characters/s")
    rows = []
    speeds: dict[tuple[str, int], float] = {}
    hands: dict[tuple[str, int], float] = {}
    for backend in args.backends.split(","):
        baselines = importlib.import_module(f"baselines_{backend}")
        if backend == "keras":
            window_loop = keras_tutorial
        else:
            window_loop = rate(baselines.tutorial_loop(article, article_weights, window), args.seconds)
        for streams in (1, STREAMS):
            loops = {"hand": baselines.stateful_loop(spec, weights, streams)}
            notes = []
            for fused in (True, False):
                go, generator = seqpred_loop(backend, spec, weights, vocab, streams, fused)
                has_fused = implements(generator.model, "generate_tokens")
                if fused and not has_fused:
                    continue
                notes.append(f"{'fused' if fused else 'stepped'} {warm_up(backend, generator, go)}")
                loops[fused] = go
            # Interleaved rounds, the best of each loop: a burst of other work on the machine then
            # slows one round of every loop rather than all of one loop's time. The order turns
            # from round to round, so that no loop always follows the same one (whose threads may
            # still be spinning when it starts).
            measured: dict = dict.fromkeys(loops, 0.0)
            order = list(loops)
            for round_ in range(args.rounds):
                for key in order[round_ % len(order) :] + order[: round_ % len(order)]:
                    measured[key] = max(measured[key], rate(loops[key], args.seconds / args.rounds))
            hand = measured.pop("hand")
            ours = measured.get(True, measured[False])
            speeds[backend, streams], hands[backend, streams] = ours, hand
            rows.append(
                [
                    backend,
                    str(streams),
                    f"{window_loop:,.1f}",
                    f"{hand:,.0f}",
                    f"{measured[False]:,.0f}",
                    f"{measured[True]:,.0f}" if True in measured else "-",
                    f"{ours / hand:.2f}x",
                    f"{ours / keras_tutorial:,.0f}x",
                    f"{ours / window_loop:,.0f}x",
                    f"{ours / rooflines[streams]:.0%}",
                ]
            )
            print(
                f"  {backend} x{streams}: window loop {window_loop:,.1f}, hand-written {hand:,.0f}, "
                f"seqpred stepped {measured[False]:,.0f}, fused "
                f"{measured[True] if True in measured else float('nan'):,.0f} characters/s "
                f"({'; '.join(notes)})",
                flush=True,
            )
    print()
    header = [
        "backend",
        "streams",
        "window loop",
        "hand-written loop",
        "seqpred stepped",
        "seqpred fused",
        "vs hand-written",
        "vs the tutorial",
        "vs window loop",
        "of roofline",
    ]
    print(table(header, rows))
    print(
        "\n(characters per second; window loop: the whole 50-character window re-run for every character,"
        " argmax,\n one stream, in that framework; the tutorial: that loop in Keras with model.predict,"
        f" {keras_tutorial:,.1f} characters/s;\n stepped: one Model.step per token, the core's loop;"
        " fused: the backend's Model.generate_tokens; the ratios are the fused loop's where there is one;\n"
        f" of roofline: of {roofline:,.0f} characters/s for {STREAMS} streams, of {single:,.0f} for one)"
    )
    if ("onnx", 1) in speeds and ("torch", 1) in speeds:
        print("\nonnx backend against the torch backend, same run:")
        for streams in (1, STREAMS):
            ratio = speeds["onnx", streams] / speeds["torch", streams]
            roof = speeds["onnx", streams] / rooflines[streams]
            met = ratio >= 2 if streams == 1 else roof >= 0.8
            target = "target 2x" if streams == 1 else "target 80% of the roofline"
            print(
                f"  {streams} stream{'s' * (streams > 1)}: {ratio:.2f}x; {roof:.0%} of the roofline "
                f"({target}: {'met' if met else 'missed'})"
            )
    targets = [
        ("keras", 1, speeds.get(("keras", 1), 0) / keras_tutorial, 300, "the tutorial's loop"),
        ("torch", STREAMS, speeds.get(("torch", STREAMS), 0) / hands.get(("torch", STREAMS), 1), 1.0, "hand"),
        ("torch", 1, speeds.get(("torch", 1), 0) / hands.get(("torch", 1), 1), 3.0, "hand"),
    ]
    print("\ntargets:")
    for backend, streams, ratio, target, against in targets:
        if (backend, streams) not in speeds:
            continue
        against = "the hand-written loop" if against == "hand" else against
        verdict = "met" if ratio >= target else "missed"
        print(f"  {backend} x{streams}: {ratio:,.2f}x {against} (target {target:g}x: {verdict})")
    if args.torch_variants:
        print("\ntorch step kernels, same run:")
        torch_variants(spec, weights, args.seconds, args.device)


if __name__ == "__main__":
    main()
