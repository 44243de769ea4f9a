"""``seqpred serve``: the continuous-batching engine, and seqpred's own routes through HTTP."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.serve_helpers import LiveServer, served_run, sse_events  # noqa: F401

httpx = pytest.importorskip("httpx")

from seqpred.generate import Generator  # noqa: E402
from seqpred.sampling import SamplingSettings  # noqa: E402
from seqpred.serve.engine import Delta, Done, Engine, Job  # noqa: E402
from seqpred.serve.limits import Limits  # noqa: E402
from tests.conftest import Cli, one_line_error  # noqa: E402

# Requests of several shapes: each must get exactly the text `seqpred generate` gives for it.
REQUESTS = [
    {"prime": "The king", "length": 80, "seed": 1, "temperature": 0.8},
    {"prime": "", "length": 50, "seed": 2, "temperature": 1.2, "top_k": 5},
    {"prime": "And the", "length": 120, "seed": 3, "top_p": 0.9, "num_samples": 3},
    {"prime": "The sea", "length": 60, "seed": 4, "stop": [" the", "!"]},
    {"prime": "Rain", "length": 40, "greedy": True},
    {"prime": "The", "length": 0, "seed": 5},
]


def cli_samples(run, request: dict) -> list[str]:
    """What ``seqpred generate --json`` prints for the same settings."""
    args = ["generate", run, "--json", "--length", request["length"], "--prime", request.get("prime", "")]
    for name in ("seed", "temperature", "top_k", "top_p", "num_samples"):
        if name in request:
            args += [f"--{name.replace('_', '-')}", request[name]]
    for stop in request.get("stop", []):
        args += ["--stop", stop]
    if request.get("greedy"):
        args.append("--greedy")
    result = Cli()(*args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["samples"]


@pytest.fixture(scope="module")
def server(served_run):  # noqa: F811
    live = LiveServer(served_run, Limits(max_streams=16, max_length=5000))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def expected(served_run):  # noqa: F811
    return [cli_samples(served_run, r) for r in REQUESTS]


def post(server, path: str, body, **kwargs):
    return httpx.post(server.url + path, json=body, timeout=30, **kwargs)


# -- the engine, without HTTP -----------------------------------------------------------------


def test_engine_gives_each_job_the_generators_text_while_jobs_join_and_leave(served_run):  # noqa: F811
    generator = Generator(served_run, "torch")
    cases = [
        ("The king", 90, SamplingSettings(temperature=0.7), 11, 1, ()),
        ("", 30, SamplingSettings(top_k=3), 12, 2, ()),
        ("And", 140, SamplingSettings(top_p=0.8), 13, 4, ("e ",)),
        ("Rain", 20, SamplingSettings(greedy=True), None, 1, ()),
    ]
    events: dict[int, queue.Queue] = {i: queue.Queue() for i in range(len(cases))}
    engine = Engine(generator.model, generator.vocab, max_streams=6)
    engine.start()
    try:
        for i, (prime, length, settings, seed, rows, stop) in enumerate(cases):
            job = Job(
                generator.start_tokens(prime, "error"),
                emit=events[i].put,
                primed=bool(prime),
                length=length,
                settings=settings,
                seed=seed,
                num_samples=rows,
                stop=stop,
                stream=True,
            )
            engine.submit(job)  # the third waits for room: 1 + 2 + 4 rows > 6
            time.sleep(0.01 * i)
        for i, (prime, length, settings, seed, rows, stop) in enumerate(cases):
            received = []
            while not received or not isinstance(received[-1], Done):
                received += events[i].get(timeout=30)
            want = generator.generate(prime, length, settings, seed=seed, num_samples=rows, stop=stop)
            done = received[-1]
            assert [s.text for s in done.samples] == want.samples
            assert [s.finish_reason == "stop" for s in done.samples] == want.stopped
            for row in range(rows):  # the streamed pieces add up to the final text
                pieces = [e.text for e in received if isinstance(e, Delta) and e.index == row]
                assert "".join(pieces) == want.samples[row]
        assert engine.stats()["running_streams"] == 0 and engine.steps > 0
    finally:
        engine.stop(10)


@pytest.mark.parametrize(("interval", "sizes"), [(3600.0, [1, 49]), (0.0, [1] * 50)])
def test_engine_hands_out_a_jobs_first_token_at_once_then_text_per_flush_interval(
    served_run,  # noqa: F811
    interval,
    sizes,
):
    generator = Generator(served_run, "torch")
    settings = SamplingSettings(temperature=0.9)
    want = generator.generate("The", 50, settings, seed=7, num_samples=2).samples
    events: queue.Queue = queue.Queue()
    engine = Engine(generator.model, generator.vocab, flush_interval=interval)
    engine.start()
    try:
        start = generator.start_tokens("The", "error")
        engine.submit(
            Job(start, emit=events.put, length=50, settings=settings, seed=7, num_samples=2, stream=True)
        )
        received = []
        while not received or not isinstance(received[-1], Done):
            received += events.get(timeout=30)
    finally:
        engine.stop(10)
    for row in range(2):
        pieces = [e.text for e in received if isinstance(e, Delta) and e.index == row]
        assert [len(p) for p in pieces] == sizes
        assert "".join(pieces) == want[row] == received[-1].samples[row].text
    assert [s.tokens for s in received[-1].samples] == [50, 50]


def test_streams_are_paced_to_a_total_of_events_per_second(served_run):  # noqa: F811
    from seqpred.serve.app import STREAM_EVENTS_PER_SECOND, STREAM_PACE, Service

    service = Service(Generator(served_run, "torch"))
    assert service.stream_pace() == STREAM_PACE  # nothing running: the shortest pace
    service.engine._logits = np.zeros((4 * STREAM_EVENTS_PER_SECOND // 100, 3), np.float32)  # running rows
    assert service.stream_pace() == pytest.approx(max(STREAM_PACE, 0.04))


def test_engine_cancelled_job_leaves_the_batch_and_a_waiting_one_takes_its_place(served_run):  # noqa: F811
    generator = Generator(served_run, "torch")
    engine = Engine(generator.model, generator.vocab, max_streams=2)
    engine.start()
    try:
        long = Job(generator.start_tokens("The", "error"), emit=lambda e: None, length=10**6, num_samples=2)
        waiting_events: queue.Queue = queue.Queue()
        short = Job(generator.start_tokens("The", "error"), emit=waiting_events.put, length=5, seed=0)
        engine.submit(long)
        engine.submit(short)
        time.sleep(0.2)
        assert engine.stats()["waiting_requests"] == 1 and engine.stats()["running_streams"] == 2
        long.cancel()
        engine.wake()
        done = waiting_events.get(timeout=10)[-1]
        assert isinstance(done, Done) and len(done.samples[0].text) == 5
        deadline = time.monotonic() + 10
        while engine.stats()["running_streams"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        engine.stop(10)


# -- HTTP -------------------------------------------------------------------------------------


def test_health_and_info_describe_the_run_and_limits(server, served_run):  # noqa: F811
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["running_streams"] == 0
    info = httpx.get(server.url + "/info").json()
    assert info["run"] == str(served_run) and info["backend"] == "torch"
    assert info["vocabulary"]["level"] == "char" and info["vocabulary"]["size"] == len(
        Generator(served_run).vocab
    )
    assert info["spec"]["hidden"] == 16 and info["limits"]["max_streams"] == 16
    assert info["limits"]["max_length"] == 5000


def test_generate_gives_the_clis_text_alone(server, expected):
    for request, want in zip(REQUESTS, expected, strict=True):
        data = post(server, "/generate", request).json()
        assert data["samples"] == want, request
        assert data["text"] == want[0]
        assert data["length"] == request["length"] and data["seed"] == request.get("seed")
        if request.get("greedy"):
            assert data["settings"]["greedy"] is True


def test_generate_gives_the_clis_text_among_concurrent_requests(server, expected):
    requests = REQUESTS * 3
    wants = expected * 3
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda r: post(server, "/generate", r).json(), requests))
    for request, want, data in zip(requests, wants, answers, strict=True):
        assert data["samples"] == want, request
    assert server.service.engine.steps > 0


def stream(server, body: dict) -> list:
    with httpx.stream(
        "POST", server.url + "/generate", json={**body, "stream": True}, timeout=30
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return sse_events(response.iter_lines())


def test_streamed_pieces_add_up_to_the_same_text_then_a_finish_reason(server, expected):
    for request, want in zip(REQUESTS, expected, strict=True):
        events = stream(server, request)
        final = events[-1]
        assert set(final) == {"finish_reason", "finish_reasons", "tokens"}
        pieces = events[:-1]
        for row, text in enumerate(want):
            assert "".join(e["text"] for e in pieces if e["index"] == row) == text
        assert len(final["finish_reasons"]) == len(want) and final["finish_reason"] in ("stop", "length")
    stopped = stream(server, {"prime": "The", "length": 500, "seed": 9, "stop": ["e"]})
    assert stopped[-1]["finish_reason"] == "stop" and "e" not in "".join(e["text"] for e in stopped[:-1])


def test_a_long_stream_arrives_in_several_pieces(server):
    events = stream(server, {"prime": "The", "length": 3000, "seed": 1})
    assert len(events) > 2 and sum(len(e["text"]) for e in events[:-1]) == 3000


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"length": 5001}, 400, "length"),
        ({"length": -1}, 400, "length"),
        ({"length": "ten"}, 400, "length"),
        ({"temperature": 0}, 400, "temperature"),
        ({"top_p": 1.5}, 400, "top_p"),
        ({"top_k": 0}, 400, "top_k"),
        ({"num_samples": 17}, 400, "num_samples"),
        ({"seed": -1}, 400, "seed"),
        ({"greedy": "yes"}, 400, "greedy"),
        ({"stop": [""]}, 400, "stop"),
        ({"unknown": "ignore"}, 400, "unknown"),
        ({"prime": "The Zoo"}, 400, "prime"),
        ({"prime": "e" * 100_001}, 400, "prime"),
        ({"lenght": 10}, 400, "lenght"),
    ],
)
def test_bad_fields_get_a_4xx_naming_the_field(server, body, status, param):
    response = post(server, "/generate", body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and param in error["message"]
    assert "Traceback" not in response.text


def test_bad_bodies_routes_and_methods_get_json_errors(server):
    bad_json = httpx.post(server.url + "/generate", content=b"{not json", timeout=10)
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]["message"]
    array = httpx.post(server.url + "/generate", json=[1, 2], timeout=10)
    assert array.status_code == 400 and "JSON object" in array.json()["error"]["message"]
    huge = httpx.post(server.url + "/generate", content=b" " * (1_048_576 + 1), timeout=10)
    assert huge.status_code == 413 and "limit" in huge.json()["error"]["message"]
    missing = httpx.get(server.url + "/nowhere", timeout=10)
    assert missing.status_code == 404 and "error" in missing.json()
    wrong_method = httpx.get(server.url + "/generate", timeout=10)
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_unknown_prime_symbols_are_skipped_or_replaced_on_request(server, served_run):  # noqa: F811
    for policy in ("skip", "replace"):
        data = post(
            server, "/generate", {"prime": "The Zoo", "unknown": policy, "length": 30, "seed": 1}
        ).json()
        result = Cli()(
            "generate",
            served_run,
            "--json",
            "--prime",
            "The Zoo",
            "--unknown",
            policy,
            "--length",
            30,
            "--seed",
            1,
        )
        assert data["samples"] == json.loads(result.stdout)["samples"]


def test_a_failing_backend_gives_a_json_500_without_a_traceback(served_run):  # noqa: F811
    live = LiveServer(served_run)
    try:

        def broken(tokens, state):
            raise RuntimeError("device lost")

        live.service.engine.model.step = broken  # the engine thread's next step fails
        response = httpx.post(live.url + "/generate", json={"length": 10}, timeout=30)
        assert response.status_code == 500
        assert response.json()["error"]["message"] == "generation failed: RuntimeError: device lost"
        assert "Traceback" not in response.text
        events = sse_events(
            httpx.post(
                live.url + "/generate", json={"length": 10, "stream": True}, timeout=30
            ).text.splitlines()
        )
        assert events[-1]["error"]["message"].startswith("generation failed")
        assert httpx.get(live.url + "/health").json()["running_streams"] == 0
    finally:
        live.stop()


def test_a_full_queue_answers_503_with_retry_after(served_run):  # noqa: F811
    live = LiveServer(served_run, Limits(max_streams=1, max_waiting=1, max_length=10**6))
    try:
        body = {"length": 10**6, "stream": True}
        with (
            httpx.Client(base_url=live.url, timeout=30) as first,
            httpx.Client(base_url=live.url, timeout=30) as second,
            first.stream("POST", "/generate", json=body) as running,
        ):
            lines = running.iter_lines()  # kept: a dropped iterator closes the response
            next(lines)
            live.wait_for(lambda s: s["running_streams"] == 1)
            with second.stream("POST", "/generate", json=body):
                live.wait_for(lambda s: s["waiting_requests"] == 1)
                refused = httpx.post(live.url + "/generate", json={"length": 5}, timeout=10)
                assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
                assert refused.json()["error"]["type"] == "overloaded_error"
        # both clients went away: their streams are freed and the server serves again
        live.wait_for(lambda s: s["running_streams"] == 0 and s["waiting_requests"] == 0)
        assert httpx.post(live.url + "/generate", json={"length": 5}, timeout=10).status_code == 200
    finally:
        live.stop()


@pytest.mark.parametrize("streaming", [True, False])
def test_a_client_that_disconnects_frees_its_stream_at_once(served_run, streaming):  # noqa: F811
    live = LiveServer(served_run, Limits(max_length=10**7))
    try:
        host, port = live.url.removeprefix("http://").split(":")
        payload = json.dumps({"length": 10**7, "num_samples": 3, "stream": streaming}).encode()
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            if streaming:
                assert sock.recv(100).startswith(b"HTTP/1.1 200")
            live.wait_for(lambda s: s["running_streams"] == 3)
        live.wait_for(lambda s: s["running_streams"] == 0, timeout=5)
        steps = live.service.engine.steps
        time.sleep(0.2)
        assert live.service.engine.steps == steps  # nothing runs any more
    finally:
        live.stop()


def test_an_api_key_is_required_on_every_request_but_the_page(served_run):  # noqa: F811
    live = LiveServer(served_run, api_key="sesame")
    try:
        assert httpx.get(live.url + "/").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sesame"}):
            for method, path in (("GET", "/info"), ("GET", "/health"), ("POST", "/generate")):
                response = httpx.request(method, live.url + path, headers=headers, json={}, timeout=10)
                assert response.status_code == 401, (path, headers)
                assert response.json()["error"]["code"] == "invalid_api_key"
        ok = httpx.post(
            live.url + "/generate", json={"length": 5}, headers={"Authorization": "Bearer sesame"}, timeout=10
        )
        assert ok.status_code == 200 and len(ok.json()["text"]) == 5
    finally:
        live.stop()


def test_the_page_is_served_at_the_root(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "seqpred playground" in page.text and 'id="generate"' in page.text


# -- the command ------------------------------------------------------------------------------


def _start_cli_server(run, *args: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "seqpred.cli", "serve", str(run), "--port", "0", *args],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
    line = lines.get(timeout=60)
    assert "serving" in line, line
    url = line.split(" at ")[1].split("/ ;")[0]
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/health", timeout=2)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
    process.lines = lines  # type: ignore[attr-defined]
    return process, url


def test_ctrl_c_lets_running_requests_finish_then_stops(served_run):  # noqa: F811
    process, url = _start_cli_server(served_run, "--max-length", "100000")
    try:
        with httpx.stream(
            "POST", url + "/generate", json={"length": 4000, "stream": True}, timeout=60
        ) as response:
            lines = response.iter_lines()
            next(lines)
            process.send_signal(signal.SIGINT)
            events = sse_events(lines)
        assert events[-1]["finish_reason"] == "length"
        assert process.wait(60) == 0
        remaining = []
        while not process.lines.empty():
            remaining.append(process.lines.get())
        assert remaining and remaining[-1].strip() == "stopped", remaining
        assert not any("Traceback" in line for line in remaining)
    finally:
        if process.poll() is None:
            process.kill()


def test_serve_warns_on_an_open_address_without_a_key(cli, served_run):  # noqa: F811
    # 192.0.2.1 is a documentation address: no machine has it, so nothing is ever exposed
    result = cli("serve", served_run, "--host", "192.0.2.1", "--port", "0")
    assert "warning: serving on 192.0.2.1 without an API key" in result.stderr
    assert result.exit_code == 2 and result.stderr.strip().splitlines()[-1].startswith("error: cannot listen")


def test_serve_bad_options_and_missing_extra_are_one_line(cli, served_run, monkeypatch):  # noqa: F811
    one_line_error(cli("serve", served_run, "--max-streams", "0"), 2, "--max-streams")
    one_line_error(cli("serve", served_run, "--port", "70000"), 2, "--port")
    one_line_error(cli("serve", served_run / "missing"), 1, "missing")
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    one_line_error(cli("serve", served_run), 2, "pip install seqpred[serve]")


def test_the_cli_imports_no_server_stack_until_serve_runs():
    code = "import sys, seqpred.cli; print(sorted({'starlette', 'uvicorn'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_engine_rows_never_exceed_max_streams(server):
    seen = []

    def watch():
        for _ in range(300):
            seen.append(server.service.engine.stats()["running_streams"])
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: post(server, "/generate", {"length": 300, "num_samples": 5, "seed": i}), range(8)
            )
        )
    watcher.join()
    assert max(seen) <= 16 and max(seen) >= 10
    assert np.all(np.asarray(seen) >= 0)


def test_a_word_level_run_gives_the_clis_text_and_spaced_pieces(tmp_path, corpus):
    run = tmp_path / "words"
    trained = Cli()(
        "train", corpus, "--out", run, "--level", "word", "--max-steps", "20", "--quiet", "--lr", "0.02",
        "--hidden", "16", "--embedding", "8", "--seq-len", "8", "--batch-size", "8",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    request = {"prime": "The king", "length": 30, "seed": 4, "temperature": 1.0}
    want = cli_samples(run, request)
    live = LiveServer(run)
    try:
        assert post(live, "/generate", request).json()["samples"] == want
        events = stream(live, request)
        assert "".join(e["text"] for e in events[:-1]) == want[0]
        body = {"prompt": "The king", "max_tokens": 30, "seed": 4, "logprobs": 2}
        choice = post(live, "/v1/completions", body).json()["choices"][0]
        assert choice["text"] == want[0] and "".join(choice["logprobs"]["tokens"]) == want[0]
    finally:
        live.stop()
