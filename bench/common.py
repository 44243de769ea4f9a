"""Shared pieces of the benchmarks: the reference corpus, timing, the roofline, tables."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from seqpred.text_sources import read_corpus
from seqpred.vocab import Vocab

ROOT = Path(__file__).resolve().parent.parent
MACBETH = ROOT.parent / "shared" / "corpora" / "macbeth.txt"


def macbeth_vocab() -> tuple[Vocab, np.ndarray]:
    """Lower-cased Macbeth (43 symbols) when the reference copy is beside the checkout, else the sonnets."""
    path = MACBETH if MACBETH.exists() else ROOT / "corpora" / "sonnets.txt"
    text = read_corpus(path, lower=True)
    vocab = Vocab.build(text)
    return vocab, vocab.encode(text)


def rate(fn: Callable[[], int], seconds: float, min_calls: int = 2) -> float:
    """Units per second of ``fn`` (which returns the units it did), run for about ``seconds``."""
    fn()  # warm-up: compilation, caches, allocator
    done = 0
    calls = 0
    start = time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        done += fn()
        calls += 1
    return done / (time.perf_counter() - start)


def matmul_gflops(seconds: float = 2.0, size: int = 1024, rounds: int = 4) -> float:
    """Measured float32 matrix-multiply throughput of this machine, with NumPy's BLAS: the best of
    ``rounds`` measurements sharing ``seconds``, since a roofline is a peak and one short
    measurement on a shared machine can read half of it (then the benches' shares of the roofline
    exceed 100%)."""
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    per_call = 2 * size**3
    return max(rate(lambda: (a @ b, per_call)[1], seconds / rounds) for _ in range(rounds)) / 1e9


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def machine() -> str:
    return f"{os.cpu_count()} CPU cores"
