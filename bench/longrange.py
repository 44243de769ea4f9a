"""Long-range memory: does the default preset learn a dependency ``distance`` characters back?

Writes the corpus of ``bench/synthetic.py`` (about 1 MB; by default every echo letter repeats the
key letter 20 characters before it) into a temporary folder, trains the default preset on each
backend for a budget of steps (``seqpred.train``, nothing changed but ``--max-steps`` and
``--val-every``), and scores the held-out tail (the validation tenth, never trained on) in bits per
character against the corpus' two exact limits: with memory of ``distance`` characters, and
without. The gap closed is (without - achieved) / (without - with).

Each held-out character is predicted as in training, by windows of ``--seq-len`` characters from a
zero state, but only once it has at least ``distance`` characters of context before it (windows
overlap by ``distance`` characters and only their later predictions count): the limits assume that
context, and a window's first predictions lack it. The two parts of the gap are also shown: the
echo letters (4 bits for a 16-letter alphabet without the memory, 0 with it) and the marker
characters, whose echoes a model times only by counting from the key.

    python bench/longrange.py [--backends torch,keras] [--steps 6000] [--chars 1000000]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, table  # noqa: E402
from synthetic import BOTH, ECHO, Synthetic  # noqa: E402

from seqpred.batches import split_validation  # noqa: E402
from seqpred.config import resolve  # noqa: E402
from seqpred.runs import load_run  # noqa: E402
from seqpred.train import build_model, train  # noqa: E402


class ValidationLines:
    """Print each validation of the run, with the gap closed, so that a long bench shows its progress."""

    def __init__(self, backend: str, limits: tuple[float, float]):
        self.backend = backend
        self.limits = limits

    def start(self, total_steps, first_step, info): ...

    def step(self, record): ...

    def validation(self, record):
        with_memory, without = self.limits
        bits = record.get("carried_bits_per_token", record["bits_per_token"])
        print(
            f"  {self.backend} step {record['step']:>5}: validation {record['bits_per_token']:.4f} "
            f"bits/char in windows from a zero state, {bits:.4f} with the state carried: "
            f"{(without - bits) / (without - with_memory):.0%} of the gap closed",
            flush=True,
        )

    def end(self, result): ...


def held_out_bits(run: Path, corpus: Synthetic, text: str) -> dict[str, float]:
    """Bits per character on the run's validation tail, each predicted from >= ``distance`` characters.

    Also the mean bits on the echo letters and on the marker characters (the even slots).
    """
    loaded = load_run(run, "latest")
    spec = loaded.spec
    ids = loaded.vocab.encode_corpus(text)
    _, held_out = split_validation(ids, float(loaded.config["val_fraction"]), spec.seq_len)
    start = len(ids) - len(held_out)
    model = build_model(loaded.backend, spec, "cpu", seed=0)
    model.set_weights(loaded.weights)
    stride = spec.seq_len - corpus.distance  # the last `stride` predictions of a window count
    if stride < 1:
        raise SystemExit(f"--seq-len must exceed the distance {corpus.distance}")
    starts = np.arange(0, len(held_out) - spec.seq_len, stride)
    nats = np.zeros(len(held_out))
    scored = np.zeros(len(held_out), dtype=bool)
    for first in range(0, len(starts), 256):
        rows = np.stack([held_out[s : s + spec.seq_len + 1] for s in starts[first : first + 256]])
        logits, _ = model.forward(rows[:, :-1].astype(np.int32), model.initial_state(len(rows)))
        logits = np.asarray(logits, dtype=np.float64)[:, -stride:]
        logits -= logits.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(logits).sum(axis=-1))
        targets = rows[:, -stride:]
        picked = np.take_along_axis(logits, targets[..., None].astype(np.int64), axis=-1)[..., 0]
        positions = starts[first : first + 256, None] + np.arange(spec.seq_len - stride + 1, spec.seq_len + 1)
        nats[positions] = log_z - picked
        scored[positions] = True
    # Which held-out characters are echo letters and which are markers (the even slots of the text).
    chars = np.array(list(text[start:]))
    before = np.array(list(text[start - 1 : -1]))
    echo = np.isin(before, [ECHO, BOTH])
    marker = ~np.char.isalpha(chars)
    to_bits = 1 / math.log(2)
    return {
        "bits": nats[scored].mean() * to_bits,
        "echo": nats[scored & echo].mean() * to_bits,
        "marker": nats[scored & marker].mean() * to_bits,
        "chars": int(scored.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="torch,keras")
    parser.add_argument(
        "--steps",
        type=int,
        default=6000,
        help="training steps of the default preset (its cosine schedule spans them)",
    )
    parser.add_argument("--chars", type=int, default=1_000_000, help="corpus size")
    parser.add_argument("--distance", type=int, default=Synthetic.distance)
    parser.add_argument("--key-rate", type=float, default=Synthetic.key_rate)
    parser.add_argument("--letters", type=int, default=Synthetic.letters)
    parser.add_argument("--val-every", type=int, default=200)
    args = parser.parse_args()
    corpus = Synthetic(args.distance, args.key_rate, args.letters)
    with_memory, without = corpus.entropy_rates()
    p, letter_bits = corpus.key_rate, math.log2(corpus.letters)
    h = -p * math.log2(p) - (1 - p) * math.log2(1 - p)
    text = corpus.generate(args.chars, seed=0)
    print(
        f"machine: {machine()}; corpus: {len(text):,} characters, dependency at {corpus.distance} "
        f"characters, key rate {p}, {corpus.letters} letters"
    )
    print(
        f"limits: {with_memory:.4f} bits/char with memory of {corpus.distance} characters, {without:.4f} "
        f"without (echo letters {letter_bits:.0f} -> 0 bits, markers {2 * h:.3f} -> {h:.3f} bits)"
    )
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "synthetic.txt"
        path.write_text(text, encoding="utf-8")
        for backend in args.backends.split(","):
            config = resolve(
                {
                    "corpus": str(path),
                    "backend": backend,
                    "max_steps": args.steps,
                    "epochs": 10**6,
                    "val_every": args.val_every,
                }
            )
            started = time.perf_counter()
            lines = ValidationLines(backend, (with_memory, without))
            result = train(config, Path(folder) / backend, reporter=lines)
            minutes = (time.perf_counter() - started) / 60
            scores = held_out_bits(Path(folder) / backend, corpus, text)
            per_step = config.batch_size * config.seq_len
            closed = (without - scores["bits"]) / (without - with_memory)
            rows.append(
                [
                    backend,
                    f"{result.steps:,}",
                    f"{result.steps * per_step / 1e6:.1f} M",
                    f"{minutes:.0f}",
                    f"{scores['bits']:.4f}",
                    f"{with_memory:.4f}",
                    f"{without:.4f}",
                    f"{closed:.0%}",
                    f"{scores['echo']:.3f}",
                    f"{scores['marker']:.3f}",
                ]
            )
            print(f"  {rows[-1]}", flush=True)
    print()
    header = [
        "backend",
        "steps",
        "predicted chars",
        "minutes",
        "held-out bits/char",
        "with memory",
        "without",
        "gap closed",
        "echo letters",
        "markers",
    ]
    print(table(header, rows))
    print(
        f"\n(default preset: 2 x 256 LSTM, batch 64 x {config.seq_len} characters per step; held-out bits "
        f"per character over {scores['chars']:,} characters, each seen with at least {corpus.distance} "
        f"characters of context)"
    )


if __name__ == "__main__":
    main()
