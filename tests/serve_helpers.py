"""A live ``seqpred serve`` for tests: uvicorn on a free loopback port in a background thread, on a
tiny run trained once per session."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import TINY, Cli, make_text

uvicorn = pytest.importorskip("uvicorn")

from seqpred.generate import Generator  # noqa: E402
from seqpred.serve.app import Service, create_app  # noqa: E402
from seqpred.serve.limits import Limits  # noqa: E402
from seqpred.serve.server import bind  # noqa: E402


@pytest.fixture(scope="session")
def served_run(tmp_path_factory) -> Path:
    """A run trained long enough that its next-token distributions are far from uniform."""
    folder = tmp_path_factory.mktemp("serve")
    corpus = folder / "corpus.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    out = folder / "demo"
    result = Cli()("train", corpus, "--out", out, "--max-steps", "60", "--lr", "0.02", "--quiet", *TINY)
    assert result.exit_code == 0, result.output
    return out


class LiveServer:
    """``seqpred serve`` in this process: ``url``, the ``service``, and ``stop()``."""

    def __init__(self, run: Path, limits: Limits | None = None, **service_options):
        self.service = Service(Generator(run, "torch"), limits, **service_options)
        config = uvicorn.Config(
            create_app(self.service),
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            assert self.thread.is_alive(), "the server thread ended"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        assert not self.thread.is_alive(), "the server did not stop"

    def wait_for(self, condition, timeout: float = 10.0) -> dict:
        """Poll the engine's statistics until ``condition(stats)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.service.engine.stats()
            if condition(stats):
                return stats
            assert time.monotonic() < deadline, f"not reached: {stats}"
            time.sleep(0.01)


def sse_events(lines) -> list:
    """The ``data:`` payloads of a Server-Sent Events stream, JSON-decoded (``[DONE]`` kept as is)."""
    events = []
    for line in lines:
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events
