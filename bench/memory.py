"""Peak memory of training on a large corpus: windows are never materialised.

Writes a generated corpus (100 MB by default), then for each backend runs, in fresh processes:

* the baseline: the framework imported, the same model built and trained a few steps on one
  in-memory batch, no corpus at all;
* ``seqpred train`` on the corpus for a few steps.

and checks peak RSS <= baseline + 4 x corpus size. For scale: the tutorial's window arrays take
50 x 8 bytes per character.

    python bench/memory.py [--backends torch,keras] [--megabytes 100]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import table  # noqa: E402

MODEL = ["--hidden", "300", "--embedding", "64", "--seq-len", "100", "--batch-size", "64"]

BASELINE = """
import numpy as np, sys
from seqpred.backend import OptimizerSettings
from seqpred.spec import ModelSpec
from seqpred.train import build_model
from seqpred.weights import init_weights
spec = ModelSpec(vocab_size=int(sys.argv[2]), hidden=300, embedding=64, seq_len=100)
model = build_model(sys.argv[1], spec, "cpu", 0)
model.set_weights(init_weights(spec, 0))
model.configure_training(OptimizerSettings(clip=5.0))
rng = np.random.default_rng(0)
for step in range(3):
    x = rng.integers(0, spec.vocab_size, (64, 101), dtype=np.int32)
    model.train_batch(x[:, :-1], x[:, 1:], 1e-3, step=step)
model.evaluate_batch(x[:, :-1], x[:, 1:])
"""


def write_corpus(path: Path, megabytes: int) -> tuple[int, int]:
    """English-like text: random words from a small lexicon, in lines; returns (bytes, symbols)."""
    rng = np.random.default_rng(0)
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
    lexicon = ["".join(rng.choice(letters, rng.integers(1, 9))) for _ in range(3000)]
    block = []
    for _ in range(20_000):
        words = rng.choice(lexicon, rng.integers(4, 12))
        block.append(" ".join(words).capitalize() + rng.choice([".", ",", ";", "!", "?"]))
    chunk = ("\n".join(block) + "\n").encode()
    with path.open("wb") as handle:
        written = 0
        while written < megabytes * 2**20:
            handle.write(chunk)
            written += len(chunk)
    return written, len(set(chunk.decode()))


def peak_rss(command: list[str]) -> int:
    """Peak resident memory in bytes of a child process."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{process.stderr.read().decode()}")
    return usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="torch,keras")
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "big.txt"
        size, symbols = write_corpus(corpus, args.megabytes)
        print(
            f"corpus: {size / 2**20:,.0f} MiB, {symbols} symbols; the tutorial's windows would take "
            f"{size * 50 * 8 / 2**30:,.1f} GiB"
        )
        rows = []
        for backend in args.backends.split(","):
            base = peak_rss([sys.executable, "-c", BASELINE, backend, str(symbols)])
            train = peak_rss(
                [
                    sys.executable,
                    "-m",
                    "seqpred",
                    "train",
                    str(corpus),
                    "--backend",
                    backend,
                    "--out",
                    str(Path(tmp) / backend),
                    "--max-steps",
                    "3",
                    "--val-fraction",
                    "0.0005",
                    "--quiet",
                    *MODEL,
                ]
            )
            limit = base + 4 * size
            rows.append(
                [
                    backend,
                    f"{base / 2**20:,.0f}",
                    f"{train / 2**20:,.0f}",
                    f"{(train - base) / size:.2f}",
                    f"{limit / 2**20:,.0f}",
                    "ok" if train <= limit else "OVER",
                ]
            )
            print(
                f"  {backend}: baseline {base / 2**20:,.0f} MiB, training {train / 2**20:,.0f} MiB",
                flush=True,
            )
    print()
    print(
        table(["backend", "baseline MiB", "training MiB", "extra / corpus size", "limit MiB", "within"], rows)
    )


if __name__ == "__main__":
    main()
