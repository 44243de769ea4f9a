"""Data-parallel scaling: training tokens per second on 1 and on 2 replicas, and their ratio.

Each row is a real ``python -m seqpred train`` with the same global batch (``--batch-size``), so both
runs do the same work per step; the speed is read from the run's own ``history.jsonl``, from the
first logged step after the warm-up to the last. The thread budget (``--threads``, all processes
together; by default what seqpred chooses from the cores free at the start) is shared the same way:
one replica gets all of it, two replicas half each.

What a CPU can show: on a machine with C cores, one process already spreads each step over C threads,
so replicas on the same cores only trade intra-op threads for processes and pay the all-reduce of
the gradients on top; a ratio near 1.0 is the best to expect there. Replicas pay off when each has
a device of its own: several GPUs (``--device cuda``), or many cores whose threads a single process
cannot keep busy.

    python bench/scale.py [--backends torch,keras] [--steps 30] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MACBETH, ROOT, table  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def tokens_per_second(run: Path, warmup: int) -> float:
    """Predicted tokens per second between step ``warmup`` and the last step, from the run's history."""
    records = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    train = [r for r in records if r["event"] == "train"]
    first, last = train[min(warmup, len(train) - 2)], train[-1]
    return (last["tokens"] - first["tokens"]) / (last["time"] - first["time"])


def train(backend: str, replicas: int, args: argparse.Namespace, folder: Path) -> float:
    corpus = MACBETH if MACBETH.exists() else ROOT / "corpora" / "sonnets.txt"
    out = folder / f"{backend}-{replicas}"
    command = [
        sys.executable, "-m", "seqpred", "train", str(corpus), "--backend", backend, "--out", str(out),
        "--replicas", str(replicas), "--device", args.device,
        *(["--threads", str(args.threads)] if args.threads else []),
        "--hidden", str(args.hidden), "--batch-size", str(args.batch_size), "--dropout", "0",
        "--max-steps", str(args.steps), "--val-every", str(10 * args.steps), "--val-fraction", "0.02",
        "--quiet",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{backend} on {replicas} replica(s) failed: {result.stderr.strip()}")
    return tokens_per_second(out, args.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="torch,keras")
    parser.add_argument("--steps", type=int, default=30, help="training steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the speed")
    parser.add_argument(
        "--threads", type=int, default=None, help="for all replicas together; default: seqpred's own choice"
    )
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: one GPU per replica")
    args = parser.parse_args()
    where = cpu_name() if args.device == "cpu" else f"{args.device} (GPUs), host {cpu_name()}"
    print(
        f"{where}, {os.cpu_count()} cores; threads in all: {args.threads or 'seqpred default'}; "
        f"2 x LSTM({args.hidden}), "
        f"global batch {args.batch_size} x 100, {args.steps} steps (first {args.warmup} left out)"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            one = train(backend, 1, args, Path(tmp))
            two = train(backend, 2, args, Path(tmp))
            rows.append([backend, f"{one:,.0f}", f"{two:,.0f}", f"{two / one:.2f}"])
    print(table(["backend", "1 replica tok/s", "2 replicas tok/s", "ratio 2/1"], rows))


if __name__ == "__main__":
    main()
