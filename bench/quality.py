"""Model quality at equal predicted characters: seqpred's default preset against hand-written loops.

Each framework gets the loop its users would write without seqpred, at the default preset's size
(2 x 256 LSTM, embedding 64, windows of 100, batch 64, Adam 2e-3, gradient norm clipped at 5,
dropout 0.2 between the LSTM layers) with the framework's own initialisation and windows that start
anywhere in the text:

* torch: ``nn.Embedding`` -> ``nn.LSTM(num_layers=2, dropout=0.2)`` -> ``nn.Linear``, ``torch.optim.Adam``;
* keras: ``Embedding`` -> ``LSTM`` -> ``Dropout`` -> ``LSTM`` -> ``Dense``, ``model.train_on_batch``
  with ``keras.optimizers.Adam(clipnorm=5)``.

seqpred trains with ``seqpred train --backend B --hidden 256`` and every other option at its
default. All of them see the same corpus, split the same way (the last 10% for validation), and
are scored on the same validation windows (non-overlapping windows of 100 characters, each from a
zero state: what ``seqpred train`` reports as the validation loss) at four points of the curve.

    python bench/quality.py [--backends torch,keras] [--steps 800] [--threads 2]

The corpus is ``../shared/corpora/macbeth.txt`` beside the checkout when it is there, else the
shipped ``corpora/sonnets.txt``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MACBETH, ROOT, table  # noqa: E402

from seqpred.batches import eval_batches, split_validation  # noqa: E402
from seqpred.config import resolve  # noqa: E402
from seqpred.text_sources import read_corpus  # noqa: E402
from seqpred.train import train  # noqa: E402
from seqpred.vocab import Vocab  # noqa: E402

HIDDEN, EMBEDDING, SEQ_LEN, BATCH, LR, CLIP, DROPOUT = 256, 64, 100, 64, 2e-3, 5.0, 0.2


def corpus_path() -> Path:
    return MACBETH if MACBETH.exists() else ROOT / "corpora" / "sonnets.txt"


def load_ids(path: Path) -> tuple[Vocab, np.ndarray, np.ndarray]:
    text = read_corpus(path)
    vocab = Vocab.build(text)
    train_ids, val_ids = split_validation(vocab.encode(text), 0.1, SEQ_LEN)
    return vocab, np.asarray(train_ids), np.asarray(val_ids)


def random_windows(rng: np.random.Generator, ids: np.ndarray) -> np.ndarray:
    """A batch of windows of SEQ_LEN + 1 tokens starting anywhere, as hand-written char-rnns draw them."""
    starts = rng.integers(0, len(ids) - SEQ_LEN - 1, BATCH)
    return ids[starts[:, None] + np.arange(SEQ_LEN + 1)].astype(np.int64)


# -- the hand-written loops ----------------------------------------------------------------------


def torch_loop(vocab_size: int, train_ids, val_ids, checkpoints: list[int], seed: int = 0) -> list[float]:
    import torch
    from torch import nn

    torch.manual_seed(seed)

    class CharRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab_size, EMBEDDING)
            self.lstm = nn.LSTM(EMBEDDING, HIDDEN, num_layers=2, dropout=DROPOUT, batch_first=True)
            self.head = nn.Linear(HIDDEN, vocab_size)

        def forward(self, x):
            out, _ = self.lstm(self.embed(x))
            return self.head(out)

    net = CharRNN()
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()

    @torch.no_grad()
    def validate() -> float:
        net.eval()
        total, count = 0.0, 0
        for batch in eval_batches(val_ids, SEQ_LEN, "sequence"):
            logits = net(torch.tensor(batch.inputs, dtype=torch.long))
            y = torch.tensor(batch.targets, dtype=torch.long)
            total += float(loss_fn(logits.reshape(-1, vocab_size), y.reshape(-1))) * y.numel()
            count += y.numel()
        net.train()
        return total / count

    rng = np.random.default_rng(seed)
    curve = []
    for step in range(1, checkpoints[-1] + 1):
        rows = torch.from_numpy(random_windows(rng, train_ids))
        logits = net(rows[:, :-1])
        loss = loss_fn(logits.reshape(-1, vocab_size), rows[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), CLIP)
        optimizer.step()
        if step in checkpoints:
            curve.append(validate())
            print(f"    torch hand-written, step {step}: {curve[-1]:.4f}", flush=True)
    return curve


def keras_loop(vocab_size: int, train_ids, val_ids, checkpoints: list[int], seed: int = 0) -> list[float]:
    from seqpred_keras.framework import keras  # Keras 3 pinned to TensorFlow

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(vocab_size, EMBEDDING),
            keras.layers.LSTM(HIDDEN, return_sequences=True),
            keras.layers.Dropout(DROPOUT),
            keras.layers.LSTM(HIDDEN, return_sequences=True),
            keras.layers.Dense(vocab_size),
        ]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(LR, clipnorm=CLIP), loss=loss)

    def validate() -> float:
        total, count = 0.0, 0
        for batch in eval_batches(val_ids, SEQ_LEN, "sequence"):
            value = model.evaluate(batch.inputs, batch.targets, verbose=0, batch_size=len(batch.inputs))
            total += float(value) * batch.targets.size
            count += batch.targets.size
        return total / count

    rng = np.random.default_rng(seed)
    curve = []
    for step in range(1, checkpoints[-1] + 1):
        rows = random_windows(rng, train_ids).astype(np.int32)
        model.train_on_batch(rows[:, :-1], rows[:, 1:])
        if step in checkpoints:
            curve.append(validate())
            print(f"    keras hand-written, step {step}: {curve[-1]:.4f}", flush=True)
    return curve


# -- seqpred ---------------------------------------------------------------------------------------


def seqpred_curve(backend: str, corpus: Path, checkpoints: list[int], **options) -> list[float]:
    """``seqpred train CORPUS --backend B --hidden 256``, defaults otherwise, validated at ``checkpoints``."""
    every = checkpoints[0]
    config = resolve(
        {
            "corpus": str(corpus),
            "backend": backend,
            "hidden": HIDDEN,
            "max_steps": checkpoints[-1],
            "epochs": 10**6,
            "val_every": every,
            **options,
        }
    )
    with tempfile.TemporaryDirectory() as out:
        train(config, out)
        records = [json.loads(line) for line in (Path(out) / "history.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r["loss"] for r in records if r["event"] == "validation"}
    curve = [by_step[s] for s in checkpoints]
    for step, value in zip(checkpoints, curve, strict=True):
        print(f"    seqpred {backend}, step {step}: {value:.4f}", flush=True)
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="torch,keras")
    parser.add_argument("--steps", type=int, default=800, help="the last point of the curve (4 points)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    backends = args.backends.split(",")
    checkpoints = [args.steps * i // 4 for i in range(1, 5)]
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if "torch" in backends:
        import torch

        torch.set_num_threads(args.threads)

    corpus = corpus_path()
    vocab, train_ids, val_ids = load_ids(corpus)
    print(
        f"corpus: {corpus.name}, {len(train_ids):,} training and {len(val_ids):,} validation characters, "
        f"vocabulary {len(vocab)}; {BATCH * SEQ_LEN:,} predicted characters per step",
        flush=True,
    )
    loops = {"torch": torch_loop, "keras": keras_loop}
    curves: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    for backend in backends:
        for label, run in (
            (
                f"{backend} hand-written",
                lambda b=backend: loops[b](len(vocab), train_ids, val_ids, checkpoints),
            ),
            (f"seqpred {backend}", lambda b=backend: seqpred_curve(b, corpus, checkpoints)),
        ):
            start = time.perf_counter()
            curves[label] = run()
            seconds[label] = time.perf_counter() - start

    hand = [curves[f"{b} hand-written"] for b in backends]
    best_hand = [min(values) for values in zip(*hand, strict=True)]
    header = ["steps", *(f"{s:,}" for s in checkpoints), "time"]
    rows = [
        [label, *(f"{v:.4f}" for v in values), f"{seconds[label]:.0f} s"] for label, values in curves.items()
    ]
    rows.append(["better hand-written", *(f"{v:.4f}" for v in best_hand), ""])
    for backend in backends:
        ours = curves[f"seqpred {backend}"]
        ratios = [o / h for o, h in zip(ours, best_hand, strict=True)]
        rows.append([f"seqpred {backend} / better hand-written", *(f"{r:.3f}" for r in ratios), ""])
    print()
    print(table(header, rows))
    print(
        f"\n(validation loss in nats per character on the last 10% of {corpus.name}; "
        f"{BATCH * SEQ_LEN:,} predicted characters per step; ratio <= 1: seqpred learned at least as much)"
    )
    worst = max(o / h for b in backends for o, h in zip(curves[f"seqpred {b}"], best_hand, strict=True))
    print(f"worst ratio: {worst:.3f}" + (" (target met)" if worst <= 1.0 else " (target missed)"))
    if not math.isfinite(worst):
        sys.exit(1)


if __name__ == "__main__":
    main()
