"""Training speed and quality.

Speed: predicted tokens per second of each backend's ``train_batch`` against a plain hand-written
training loop in the same framework, same model (2 x 300 LSTM, embedding 64, sequence 100, batch
64) and same batches, in one run; and the roofline: a training step costs about three forward
passes, so 3 x forward FLOPs per predicted token, against this machine's measured matmul rate.

Quality: validation loss on lower-cased Macbeth after the same number of predicted characters, for
the default preset and for the tutorial's model (``--preset article``), on the torch backend.

    python bench/train.py [--backends torch,keras] [--seconds 10] [--budget 200000]
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MACBETH, macbeth_vocab, machine, matmul_gflops, rate, table  # noqa: E402

from seqpred.backend import OptimizerSettings  # noqa: E402
from seqpred.batches import TrainBatches  # noqa: E402
from seqpred.config import resolve  # noqa: E402
from seqpred.spec import ModelSpec  # noqa: E402
from seqpred.train import build_model, train  # noqa: E402
from seqpred.weights import init_weights  # noqa: E402


def seqpred_loop(backend: str, spec: ModelSpec, weights, batches):
    model = build_model(backend, spec, "cpu", seed=0)
    model.set_weights(weights)
    model.configure_training(OptimizerSettings(clip=5.0))
    stream = batches.iter_from(0)
    taken = 0

    def run(steps: int = 2) -> int:
        nonlocal taken
        done = 0
        for _ in range(steps):
            batch = next(stream)
            model.train_batch(batch.inputs, batch.targets, 2e-3, step=taken)
            taken += 1
            done += batch.predicted_tokens
        return done

    return run


def speed(backends: list[str], seconds: float) -> None:
    vocab, ids = macbeth_vocab()
    spec = ModelSpec(vocab_size=len(vocab), hidden=300, layers=2, embedding=64, dropout=0.0, seq_len=100)
    weights = init_weights(spec, 0)
    gflops = matmul_gflops()
    flops = 3 * spec.flops_per_token()
    roofline = gflops * 1e9 / flops
    print(
        f"machine: {machine()}; matmul {gflops:.0f} GFLOP/s; {flops / 1e6:.2f} MFLOP per predicted token "
        f"(3 x forward); roofline {roofline:,.0f} tokens/s"
    )
    rows = []
    for backend in backends:
        baselines = importlib.import_module(f"baselines_{backend}")
        batches = TrainBatches(ids, spec.seq_len, 64, "sequence", seed=0)
        hand = rate(baselines.train_loop(spec, weights, batches), seconds)
        ours = rate(seqpred_loop(backend, spec, weights, batches), seconds)
        rows.append(
            [backend, f"{hand:,.0f}", f"{ours:,.0f}", f"{ours / hand:.2f}x", f"{ours / roofline:.0%}"]
        )
        print(f"  {backend}: hand-written {hand:,.0f}, seqpred {ours:,.0f} tokens/s", flush=True)
    print()
    print(table(["backend", "hand-written loop", "seqpred", "vs hand-written", "of roofline"], rows))
    print("\n(predicted tokens per second, training)")


def quality(budget: int) -> None:
    """Both presets after ``budget`` predicted characters, then the default for as long as the article."""
    if not MACBETH.exists():
        print(f"\nquality: skipped, {MACBETH} is not there")
        return
    rows = []
    article_seconds = None
    for preset, same_time in (("article", False), ("default", False), ("default", True)):
        config = resolve(
            {
                "corpus": str(MACBETH),
                "preset": preset,
                "backend": "torch",
                "lower": True,
                "epochs": 10_000,
                "val_every": 10**9,
            }
        )
        per_step = config.batch_size * (config.seq_len if config.objective == "sequence" else 1)
        if same_time:
            config.time_limit = article_seconds
        else:
            config.max_steps = max(1, budget // per_step)
        with tempfile.TemporaryDirectory() as out:
            result = train(config, out)
        if preset == "article":
            article_seconds = result.seconds
        label = preset + (" (same time as article)" if same_time else "")
        rows.append(
            [
                label,
                f"{result.steps * per_step:,}",
                f"{result.steps:,}",
                f"{result.best_val:.3f}",
                f"{result.best_val / math.log(2):.3f}",
                f"{result.val['loss']:.3f}",
                f"{result.seconds:.0f} s",
            ]
        )
        print(f"  {rows[-1]}", flush=True)
    print()
    header = [
        "preset",
        "predicted characters",
        "steps",
        "best val loss",
        "bits/char",
        "last val loss",
        "time",
    ]
    print(table(header, rows))
    print(
        "\n(validation loss in nats per character, checked at every epoch end; the best is what a run keeps)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="torch,keras")
    parser.add_argument("--seconds", type=float, default=10.0, help="time per speed measurement")
    parser.add_argument(
        "--budget", type=int, default=200_000, help="predicted characters for the quality run"
    )
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    if not args.skip_speed:
        speed(args.backends.split(","), args.seconds)
    if not args.skip_quality:
        quality(args.budget)


if __name__ == "__main__":
    main()
