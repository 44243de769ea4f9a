"""``seqpred serve --backend onnx`` serves as the other backends do: the seeded text of ``seqpred
generate``, from a run folder and from an exported file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import TINY

pytest.importorskip("uvicorn")


def served_text(target, *args) -> str:
    """The text ``POST /generate`` returns from ``seqpred serve TARGET ARGS`` on a free port."""
    command = [sys.executable, "-m", "seqpred", "serve", str(target), "--port", "0", *args]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()  # serve names its address on stderr
        assert " at http://" in line, line
        url = line.split(" at ", 1)[1].split()[0].rstrip("/")
        deadline = time.monotonic() + 60
        while True:  # the address is printed before the server listens
            try:
                urllib.request.urlopen(f"{url}/health", timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        body = json.dumps({"prime": "The ", "length": 60, "seed": 9}).encode()
        request = urllib.request.Request(f"{url}/generate", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            reply = json.loads(response.read())
        assert reply["backend"] == "onnx"
        return reply["text"]
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0


def test_serve_on_the_onnx_backend_gives_the_text_of_generate(cli, corpus, tmp_path):
    run = tmp_path / "run"
    assert (
        cli(
            "train", corpus, "--backend", "numpy", "--out", run, "--max-steps", "6", "--quiet", *TINY
        ).exit_code
        == 0
    )
    assert cli("export", run).exit_code == 0
    expected = cli("generate", run, "--backend", "numpy", "--prime", "The ", "--length", "60", "--seed", "9")
    assert expected.exit_code == 0, expected.output
    assert "The " + served_text(run, "--backend", "onnx") + "\n" == expected.stdout
    assert "The " + served_text(tmp_path / "run.onnx") + "\n" == expected.stdout
