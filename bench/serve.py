"""Serving speed: concurrent clients of a live ``seqpred serve`` against the in-process Generator.

A 2 x 300 LSTM over lower-cased Macbeth's symbols (random weights, torch) is served by a separate
process on 127.0.0.1. 1, 16 and 64 clients each stream requests of ``--length`` characters one after
another for ``--seconds``; the table gives their aggregate characters per second, the median time to
the first generated text, and the ratio to ``Generator.generate`` in this process with as many
streams in one batch. 16 clients also go through ``/v1/completions``, against ``/generate``.

    python bench/serve.py [--seconds 8] [--length 400] [--threads 1]

Both sides run torch with ``--threads`` intra-op threads (set before torch loads), so that the load
of a shared machine weighs on the server and on the baseline alike; the server's other threads
(HTTP) and the clients have the remaining cores.

Targets: 16 clients at least 4x one client; 64 clients at least 0.7x the in-process 64-stream rate;
``/v1/completions`` at least 0.9x ``/generate`` with 16 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _threads_from_argv(default: str = "1") -> str:
    """``--threads``, read before torch is imported: torch reads OMP_NUM_THREADS when it loads."""
    argv = sys.argv[1:]
    return argv[argv.index("--threads") + 1] if "--threads" in argv[:-1] else default


os.environ["OMP_NUM_THREADS"] = _threads_from_argv()
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import macbeth_vocab, rate, table  # noqa: E402

from seqpred.generate import Generator  # noqa: E402
from seqpred.runs import Run  # noqa: E402
from seqpred.sampling import SamplingSettings  # noqa: E402
from seqpred.spec import ModelSpec  # noqa: E402
from seqpred.weights import init_weights  # noqa: E402

BACKEND = "torch"


def bench_generator() -> Generator:
    vocab, _ = macbeth_vocab()
    spec = ModelSpec(vocab_size=len(vocab), hidden=300, layers=2, embedding=64)
    run = Run(
        path=Path("bench"), spec=spec, vocab=vocab, weights=init_weights(spec, 0), meta={"backend": BACKEND}
    )
    return Generator(run, BACKEND)


def child(max_streams: int) -> None:
    """The server process: the bench model behind ``seqpred serve``'s app on a free port."""
    from seqpred.serve.app import Service
    from seqpred.serve.limits import Limits
    from seqpred.serve.server import run_server

    service = Service(bench_generator(), Limits(max_streams=max_streams), model_name="bench")
    run_server(service, "127.0.0.1", 0)


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# -- the clients ------------------------------------------------------------------------------


async def one_request(port: int, path: str, body: dict) -> tuple[int, float | None]:
    """Stream one request on a raw connection; (characters received, seconds to the first text)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = json.dumps(body).encode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        + payload
    )
    start = time.perf_counter()
    first = None
    chars = 0
    openai = path.startswith("/v1/")
    buffer = b""
    await reader.readuntil(b"\r\n\r\n")  # headers; the body is chunked, events are parsed from it
    while True:
        data = await reader.read(65536)
        if not data:
            break
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if not line.startswith(b"data: {"):
                continue
            event = json.loads(line[6:])
            text = event["choices"][0]["text"] if openai and event.get("choices") else event.get("text", "")
            if text:
                chars += len(text)
                if first is None:
                    first = time.perf_counter() - start
    writer.close()
    return chars, first


async def clients(port: int, count: int, seconds: float, length: int, path: str) -> tuple[float, float]:
    """Aggregate characters per second and the median seconds to the first text of ``count`` clients."""
    if path == "/generate":
        body = {"prime": "", "length": length, "temperature": 1.0, "stream": True}
    else:
        body = {"prompt": "", "max_tokens": length, "temperature": 1.0, "stream": True}
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client() -> int:
        done = 0
        while time.perf_counter() < deadline:
            chars, first = await one_request(port, path, body)
            done += chars
            if first is not None:
                latencies.append(first)
        return done

    start = time.perf_counter()
    totals = await asyncio.gather(*(client() for _ in range(count)))
    elapsed = time.perf_counter() - start
    return sum(totals) / elapsed, statistics.median(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="time per measurement")
    parser.add_argument("--length", type=int, default=400, help="characters per request")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, both sides")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return

    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores; 2 x 300 LSTM on {BACKEND} with {args.threads} "
        f"intra-op thread(s); requests of {args.length} characters; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    generator = bench_generator()
    settings = SamplingSettings(temperature=1.0)

    def in_process(streams: int):
        return lambda: (
            generator.generate("", args.length, settings, num_samples=streams),
            args.length * streams,
        )[1]

    baseline = {n: rate(in_process(n), args.seconds / 2) for n in (1, 16, 64)}
    for n, value in baseline.items():
        print(f"  in-process Generator, {n} streams: {value:,.0f} characters/s", flush=True)

    server = subprocess.Popen(
        [sys.executable, __file__, "--child", "64", "--threads", str(args.threads)],
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    try:
        line = server.stderr.readline()
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        time.sleep(0.5)
        asyncio.run(clients(port, 2, 1.0, 50, "/generate"))  # warm-up
        results = {}
        for count, path in ((1, "/generate"), (16, "/generate"), (64, "/generate"), (16, "/v1/completions")):
            results[count, path] = asyncio.run(clients(port, count, args.seconds, args.length, path))
            chars, first = results[count, path]
            print(f"  {count} clients on {path}: {chars:,.0f} characters/s, first text {first * 1e3:.0f} ms")
    finally:
        server.terminate()
        server.wait(60)

    rows = [
        [
            str(count),
            path,
            f"{chars:,.0f}",
            f"{first * 1e3:.0f} ms",
            f"{baseline[count]:,.0f}",
            f"{chars / baseline[count]:.2f}x",
        ]
        for (count, path), (chars, first) in results.items()
    ]
    print()
    print(
        table(
            [
                "clients",
                "route",
                "characters/s",
                "first text (median)",
                "in-process, same batch",
                "vs in-process",
            ],
            rows,
        )
    )
    one = results[1, "/generate"][0]
    targets = [
        ("16 clients vs 1 client", results[16, "/generate"][0] / one, 4.0),
        ("64 clients vs in-process 64 streams", results[64, "/generate"][0] / baseline[64], 0.7),
        (
            "/v1/completions vs /generate, 16 clients",
            results[16, "/v1/completions"][0] / results[16, "/generate"][0],
            0.9,
        ),
    ]
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (other processes share these cores)")
    for name, ratio, target in targets:
        print(f"{name}: {ratio:.2f}x (target {target}x: {'met' if ratio >= target else 'missed'})")


if __name__ == "__main__":
    main()
