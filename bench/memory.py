"""Peak memory of training on a corpus larger than memory should allow: the corpus is streamed into the
token cache and mapped, never held.

Writes a generated corpus (1 GiB by default) and a tiny one (its first 100 KiB: the same symbols),
then for each backend runs ``seqpred train`` for a few steps of the same model, each in a fresh
process, and reads its peak resident memory:

* on the tiny corpus (the baseline);
* on the large corpus with an empty token cache: hashing, the vocabulary pass and the encoding,
  then training from the map;
* on the large corpus again: the cache entry found, checked and mapped.

Target: each large-corpus run peaks at most 300 MiB above the baseline. For scale: holding the text
as a Python string takes 1 byte per character, its ids as int64 8, the tutorial's windows 50 x 8.

    nice python bench/memory.py [--backends torch,keras] [--megabytes 1024]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import table  # noqa: E402

MODEL = ["--hidden", "300", "--embedding", "64", "--seq-len", "100", "--batch-size", "64"]
#: A validation tail of a few thousand tokens on the tiny corpus as on the large one.
VALIDATION = ["--val-fraction", "0.00002"]
TARGET_MIB = 300
TINY_BYTES = 100 * 1024


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


def peak_rss(command: list[str], env: dict[str, str]) -> tuple[int, float]:
    """(peak resident memory in bytes, seconds) of a child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        assert process.stderr is not None
        raise SystemExit(f"failed: {' '.join(command)}\n{process.stderr.read().decode()}")
    return usage.ru_maxrss * 1024, time.perf_counter() - started


def train(corpus: Path, backend: str, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "seqpred", "train", str(corpus), "--backend", backend, "--out", str(out),
        "--force", "--max-steps", "3", "--quiet", *VALIDATION, *MODEL,
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="torch,keras")
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--folder", type=Path, default=None, help="where to write the corpora and the cache")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        big = Path(tmp) / "big.txt"
        size, symbols = write_corpus(big, args.megabytes)
        tiny = Path(tmp) / "tiny.txt"
        with big.open("rb") as handle:
            tiny.write_bytes(handle.read(TINY_BYTES).rsplit(b"\n", 1)[0] + b"\n")
        cache = Path(tmp) / "cache"
        env = {**os.environ, "SEQPRED_TOKEN_CACHE": str(cache)}
        print(
            f"corpus: {size / 2**20:,.0f} MiB, {symbols} symbols; as a Python string it takes "
            f"{size / 2**20:,.0f} MiB, its int64 ids {size * 8 / 2**30:,.1f} GiB, the tutorial's windows "
            f"{size * 50 * 8 / 2**30:,.1f} GiB",
            flush=True,
        )
        rows = []
        for backend in args.backends.split(","):
            shutil.rmtree(cache, ignore_errors=True)
            base, _ = peak_rss(train(tiny, backend, Path(tmp) / "tiny-run"), env)
            shutil.rmtree(cache, ignore_errors=True)
            for label in ("encoding", "cached"):
                peak, seconds = peak_rss(train(big, backend, Path(tmp) / "big-run"), env)
                extra = (peak - base) / 2**20
                rows.append(
                    [
                        backend,
                        label,
                        f"{base / 2**20:,.0f}",
                        f"{peak / 2**20:,.0f}",
                        f"{extra:,.0f}",
                        f"{seconds:,.0f}",
                        "ok" if extra <= TARGET_MIB else "OVER",
                    ]
                )
                print(
                    f"  {backend}, {label}: tiny corpus {base / 2**20:,.0f} MiB, large corpus "
                    f"{peak / 2**20:,.0f} MiB (+{extra:,.0f} MiB) in {seconds:,.0f} s",
                    flush=True,
                )
            shutil.rmtree(cache, ignore_errors=True)
    print()
    header = [
        "backend",
        "large corpus",
        "tiny MiB",
        "large MiB",
        "extra MiB",
        "seconds",
        f"<= {TARGET_MIB} MiB",
    ]
    print(table(header, rows))


if __name__ == "__main__":
    main()
