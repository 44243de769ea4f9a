"""Threads on a busy machine: training and generation speed with seqpred's default thread count, and
with 1 and 2 threads, without and with one competing CPU-bound process (spawned here).

Each figure is a fresh process, as a user runs seqpred: ``seqpred train`` on the Sonnets with the
README demo's model (2 x 256, batches of 32, for ``--seconds``; tokens per second after the first
steps) and generation through the Python API (``--length`` tokens a call, for ``--seconds``).
Nothing in the environment chooses threads for the default (``OMP_NUM_THREADS`` and
``SEQPRED_THREADS`` are removed).

Targets, with one competing process: the default at least 0.8x the best setting, and at least 0.4x
its own speed without the competitor.

    python bench/threads.py [--train torch,keras] [--generate numpy,torch] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, table  # noqa: E402

CORPUS = ROOT / "corpora" / "sonnets.txt"
SETTINGS = ("default", "1", "2")
DEMO_MODEL = ["--batch-size", "32", "--val-fraction", "0"]
SKIP_STEPS = 2  # compilation and warm-up: not part of the speed
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "SEQPRED_THREADS",
)

GENERATE = """
import json, sys, time
from seqpred.threads import apply_option
run, backend, setting, length, seconds = sys.argv[1:6]
used = apply_option(None if setting == "default" else int(setting))
from seqpred.generate import Generator
from seqpred.sampling import SamplingSettings
generator = Generator(run, backend, checkpoint="latest")
settings = SamplingSettings(temperature=0.8)
generator.generate("Shall I ", 20, settings, seed=0)  # warm-up
done, start = 0, time.perf_counter()
while done == 0 or time.perf_counter() - start < float(seconds):
    generator.generate("Shall I ", int(length), settings, seed=done)
    done += int(length)
print(json.dumps({"threads": used, "tokens_per_s": done / (time.perf_counter() - start)}))
"""


def environment(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env["SEQPRED_TOKEN_CACHE"] = str(cache)
    return env


def run_json(command: list[str], env: dict[str, str]) -> list[dict]:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def train_speed(
    backend: str, setting: str, seconds: float, tmp: Path, env: dict[str, str]
) -> tuple[int, float]:
    """(threads used, training tokens per second after the first steps)."""
    threads = [] if setting == "default" else ["--threads", setting]
    records = run_json(
        [
            sys.executable, "-m", "seqpred", "train", str(CORPUS), "--backend", backend,
            "--out", str(tmp / f"train-{backend}"), "--force", "--max-steps", "100000",
            "--time-limit", f"{seconds}s", "--log-format", "json", *DEMO_MODEL, *threads,
        ],
        env,
    )  # fmt: skip
    start = next(r for r in records if r.get("event") == "start")
    steps = [r for r in records if r.get("event") == "train"]
    if len(steps) <= SKIP_STEPS:
        first, last = {"tokens": 0, "time": 0.0}, steps[-1]
    else:
        first, last = steps[SKIP_STEPS - 1], steps[-1]
    return start["threads"], (last["tokens"] - first["tokens"]) / max(last["time"] - first["time"], 1e-9)


def generate_speed(
    run: Path, backend: str, setting: str, length: int, seconds: float, env: dict[str, str]
) -> tuple[int, float]:
    (record,) = run_json(
        [sys.executable, "-c", GENERATE, str(run), backend, setting, str(length), str(seconds)], env
    )
    return record["threads"], record["tokens_per_s"]


class Competitor:
    """One CPU-bound process, for as long as the ``with`` block lasts."""

    def __enter__(self) -> Competitor:
        self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)  # running, and seen as running, before the measured process starts
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.kill()
        self.process.wait()


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line)
    except (OSError, StopIteration):
        name = "unknown CPU"
    return f"{name}, {len(os.sched_getaffinity(0))} cores"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", default="torch,keras", help="backends to train on ('' for none)")
    parser.add_argument("--generate", default="numpy,torch", help="backends to generate on ('' for none)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time of each figure")
    parser.add_argument("--length", type=int, default=200, help="tokens generated per call")
    args = parser.parse_args()
    print(f"machine: {cpu_name()}; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    jobs = [("train", b) for b in args.train.split(",") if b] + [
        ("generate", b) for b in args.generate.split(",") if b
    ]
    results: dict[tuple[str, str, str, bool], tuple[int, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        env = environment(tmp / "cache")
        run = tmp / "run"
        if any(
            task == "generate" for task, _ in jobs
        ):  # weights to generate from: their values do not matter
            run_json(
                [
                    sys.executable, "-m", "seqpred", "train", str(CORPUS), "--backend", "torch",
                    "--out", str(run), "--max-steps", "1", "--threads", "1", "--log-format", "json",
                    *DEMO_MODEL,
                ],
                env,
            )  # fmt: skip
        for busy in (False, True):
            for task, backend in jobs:
                for setting in SETTINGS:
                    with Competitor() if busy else _nothing():
                        if task == "train":
                            figure = train_speed(backend, setting, args.seconds, tmp, env)
                        else:
                            figure = generate_speed(run, backend, setting, args.length, args.seconds, env)
                    results[task, backend, setting, busy] = figure
                    print(
                        f"  {task} {backend} threads={setting} ({figure[0]} used) "
                        f"{'with' if busy else 'without'} a competitor: {figure[1]:,.0f} tokens/s",
                        flush=True,
                    )
    rows, verdicts = [], []
    for task, backend in jobs:
        for setting in SETTINGS:
            alone, busy = results[task, backend, setting, False], results[task, backend, setting, True]
            rows.append(
                [task, backend, setting, f"{alone[0]}", f"{alone[1]:,.0f}", f"{busy[0]}", f"{busy[1]:,.0f}"]
            )
        best = max(results[task, backend, s, True][1] for s in SETTINGS)
        default_busy = results[task, backend, "default", True][1]
        default_alone = results[task, backend, "default", False][1]
        vs_best, vs_alone = default_busy / best, default_busy / default_alone
        verdicts.append(
            [
                task, backend, f"{vs_best:.2f}", "ok" if vs_best >= 0.8 else "MISSED",
                f"{vs_alone:.2f}", "ok" if vs_alone >= 0.4 else "MISSED",
            ]
        )  # fmt: skip
    print()
    print(
        table(
            ["task", "backend", "threads", "used", "tokens/s alone", "used", "tokens/s, one competitor"], rows
        )
    )
    print()
    print(
        table(
            [
                "task",
                "backend",
                "default / best, competing",
                "target 0.8",
                "competing / alone (default)",
                "target 0.4",
            ],
            verdicts,
        )
    )


class _nothing:
    def __enter__(self) -> None: ...
    def __exit__(self, *exc: object) -> None: ...


if __name__ == "__main__":
    main()
