"""The ASGI app: the playground, ``/health``, ``/info`` and ``/generate``, plus the OpenAI routes of
:mod:`seqpred.serve.openai_api`, all on one :class:`~seqpred.serve.engine.Engine`.

The HTTP side never touches the model: it checks a request, turns it into jobs, hands them to the
engine's thread and reads their events back on the event loop. Every error is a JSON body in
OpenAI's format, ``{"error": {"message", "type", "param", "code"}}``; no traceback is ever sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import SeqpredError
from ..generate import Generator
from ..sampling import MAX_SEED, SamplingSettings
from .engine import Delta, Done, Engine, Event, Failed, Job, Overloaded
from .fields import BadRequest, Fields
from .limits import Limits, read_json

log = logging.getLogger("seqpred.serve")

#: Seeds as NumPy's default_rng takes them.
#: Seconds a client is asked to wait after a 503.
RETRY_AFTER = 1
#: Seconds between the events of a stream: the text produced meanwhile goes out as one event, so
#: that a busy server spends its time generating rather than on many tiny writes.
STREAM_PACE = 0.02
#: Events per second that all streams together are paced to, beyond STREAM_PACE each: with many
#: streams each gets fewer, larger events, and the writes (each a system call and a wake-up of the
#: client) stay a small part of the server's work.
STREAM_EVENTS_PER_SECOND = 1000

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ServerError(Exception):
    """A job failed in the engine; the message names what failed, without a traceback."""


class Service:
    """A loaded run, its engine and the server's settings: what every route works with."""

    def __init__(
        self,
        generator: Generator,
        limits: Limits | None = None,
        *,
        model_name: str | None = None,
        api_key: str | None = None,
        device: str = "cpu",
    ):
        self.generator = generator
        self.limits = limits or Limits()
        self.model_name = model_name or Path(str(generator.run.path)).name
        self.api_key = api_key or None
        self.device = device
        self.engine = Engine(
            generator.model,
            generator.vocab,
            max_streams=self.limits.max_streams,
            max_waiting=self.limits.max_waiting,
            deliver=self._deliver,
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self._outbox: list[tuple[Job, list[Event]]] = []
        self._outbox_lock = threading.Lock()
        self._handing_over = False
        self.started = time.time()

    @property
    def vocab(self):
        return self.generator.vocab

    def _deliver(self, pairs: list[tuple[Job, list[Event]]]) -> None:
        """From the engine's thread: hand a step's events to the event loop. At most one hand-over
        is in flight; the steps that finish meanwhile join it, so a busy loop reads many steps at once."""
        loop = self.loop
        if loop is None:
            return
        with self._outbox_lock:
            self._outbox += pairs
            if self._handing_over:
                return
            self._handing_over = True
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening any more
            loop.call_soon_threadsafe(self._hand_over)

    def _hand_over(self) -> None:
        with self._outbox_lock:
            pairs, self._outbox = self._outbox, []
            self._handing_over = False
        for job, events in pairs:
            job.emit(events)

    def stream_pace(self) -> float:
        """Seconds between two events of one stream: :data:`STREAM_PACE`, longer with many streams."""
        return max(STREAM_PACE, self.engine.running_streams / STREAM_EVENTS_PER_SECOND)

    def start_tokens(self, prime: str, unknown: str, param: str):
        """The prime's start tokens as ``seqpred generate`` makes them; symbols outside the
        vocabulary are a 400 naming ``param`` (under ``unknown="error"``)."""
        if len(prime) > self.limits.max_prime:
            raise BadRequest(
                f"{param} is {len(prime):,} characters long, over the limit of {self.limits.max_prime:,}",
                param,
            )
        try:
            return self.generator.start_tokens(prime, unknown)  # type: ignore[arg-type]
        except SeqpredError as exc:
            raise BadRequest(f"{param}: {exc}", param) from None

    def submit(self, specs: list[dict[str, Any]]) -> Pending:
        """Queue one job per spec (the keyword arguments of :class:`Job` but ``emit``)."""
        return Pending(self, specs)


class Pending:
    """The jobs of one HTTP request, and their events as they reach the event loop."""

    def __init__(self, service: Service, specs: list[dict[str, Any]]):
        self.service = service
        self.items: list[tuple[int, list[Event]]] = []
        self.ready = asyncio.Event()
        self.jobs = [Job(**spec, emit=self._sink(i)) for i, spec in enumerate(specs)]
        self.results: list[Done | None] = [None] * len(self.jobs)
        try:
            for job in self.jobs:
                service.engine.submit(job)
        except Overloaded as exc:
            self.cancel()
            raise BadRequest(
                f"the server is busy ({exc}); retry shortly", status=503, code="overloaded"
            ) from None

    def _sink(self, index: int) -> Callable[[list[Event]], None]:
        def put(events: list[Event]) -> None:
            self.items.append((index, events))
            self.ready.set()

        return put

    @property
    def finished(self) -> bool:
        return all(r is not None for r in self.results)

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel()
        self.service.engine.wake()

    async def events(self, paced: bool = False) -> AsyncIterator[list[tuple[int, Delta | Done]]]:
        """Everything that arrived since the last call, until every job is done; a failure raises.

        ``paced``: each batch after the first waits :meth:`Service.stream_pace` seconds, so that what
        the engine produces meanwhile comes as one batch (a stream then sends fewer, larger events)."""
        first = True
        while not self.finished:
            if paced and not first:
                await asyncio.sleep(self.service.stream_pace())
            first = False
            await self.ready.wait()
            self.ready.clear()
            items, self.items = self.items, []
            flat: list[tuple[int, Delta | Done]] = []
            for index, events in items:
                for event in events:
                    if isinstance(event, Failed):
                        self.cancel()
                        raise ServerError(event.message)
                    if isinstance(event, Done):
                        self.results[index] = event
                    flat.append((index, event))
            yield flat

    async def finish(self, request: Request) -> list[Done] | None:
        """Every job's :class:`Done`; None when the client went away first (its jobs are cancelled)."""

        async def collect() -> None:
            async for _ in self.events():
                pass

        collecting = asyncio.ensure_future(collect())
        leaving = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({collecting, leaving}, return_when=asyncio.FIRST_COMPLETED)
            if not collecting.done():
                return None
            collecting.result()  # raises ServerError
            return [r for r in self.results if r is not None]
        finally:
            leaving.cancel()
            collecting.cancel()
            if not self.finished:
                self.cancel()


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def error_body(
    message: str, param: str | None = None, kind: str = "invalid_request_error", code=None
) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    kind = {401: "authentication_error", 404: "not_found_error", 503: "overloaded_error"}.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )
    headers = {"Retry-After": str(RETRY_AFTER)} if status == 503 else None
    return JSONResponse(error_body(message, param, kind, code), status_code=status, headers=headers)


def sse(data: Any) -> str:
    """One Server-Sent Event carrying ``data`` (JSON unless it is already a string)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n"


def event_stream(body: AsyncIterator[str], pending: Pending) -> StreamingResponse:
    """``body`` as ``text/event-stream``; a client that disconnects cancels the request's jobs."""

    async def guarded() -> AsyncIterator[str]:
        try:
            async for chunk in body:
                yield chunk
        except ServerError as exc:
            yield sse(error_body(str(exc), kind="server_error"))
        finally:
            if not pending.finished:
                pending.cancel()

    return StreamingResponse(guarded(), media_type="text/event-stream", headers=SSE_HEADERS)


# -- seqpred's own routes ---------------------------------------------------------------------

GENERATE_FIELDS = (
    "prime",
    "length",
    "temperature",
    "top_k",
    "top_p",
    "greedy",
    "seed",
    "stop",
    "num_samples",
    "unknown",
    "stream",
)


def settings_dict(settings: SamplingSettings) -> dict[str, Any]:
    return {
        "temperature": settings.temperature,
        "top_k": settings.top_k,
        "top_p": settings.top_p,
        "greedy": settings.greedy,
    }


async def playground(request: Request) -> Response:
    page = resources.files("seqpred.serve").joinpath("static/playground.html").read_text(encoding="utf-8")
    return HTMLResponse(page)


async def health(request: Request) -> Response:
    service: Service = request.app.state.service
    return JSONResponse({"status": "ok", **service.engine.stats()})


async def info(request: Request) -> Response:
    service: Service = request.app.state.service
    generator = service.generator
    return JSONResponse(
        {
            "run": str(generator.run.path),
            "model": service.model_name,
            "backend": generator.backend_name,
            "device": service.device,
            "vocabulary": {"level": generator.vocab.level, "size": len(generator.vocab)},
            "spec": generator.run.spec.to_dict(),
            "defaults": settings_dict(generator.default_settings()),
            "limits": service.limits.describe(),
            "auth": service.api_key is not None,
        }
    )


async def generate(request: Request) -> Response:
    """``POST /generate``: the options of ``seqpred generate`` as JSON fields."""
    service: Service = request.app.state.service
    limits = service.limits
    fields = Fields(await read_json(request, limits), GENERATE_FIELDS)
    defaults = service.generator.default_settings()
    prime = fields.string("prime", "")
    length = fields.integer("length", 200, 0, limits.max_length)
    settings = SamplingSettings(
        temperature=fields.number("temperature", defaults.temperature, low=0, high=1e6, low_open=True),
        top_k=fields.integer("top_k", None, 1),
        top_p=fields.number("top_p", None, low=0, high=1, low_open=True),
        greedy=fields.boolean("greedy", defaults.greedy),
    )
    seed = fields.integer("seed", None, 0, MAX_SEED)
    stop = fields.stop("stop", max_items=16)
    num_samples = fields.integer("num_samples", 1, 1, limits.max_streams)
    unknown = fields.choice("unknown", "error", ("error", "skip", "replace"))
    stream = fields.boolean("stream", False)
    ids = service.start_tokens(prime, unknown, "prime")
    spec = dict(
        ids=ids,
        primed=bool(prime),
        length=length,
        settings=settings,
        seed=seed,
        num_samples=num_samples,
        stop=stop,
        stream=stream,
    )
    pending = service.submit([spec])
    described = {
        "run": str(service.generator.run.path),
        "backend": service.generator.backend_name,
        "seed": seed,
        "prime": prime,
        "length": length,
        "num_samples": num_samples,
        "stop": stop,
        "settings": settings_dict(settings),
    }
    if stream:
        return event_stream(_generate_events(pending), pending)
    done = await pending.finish(request)
    if done is None:
        return Response(status_code=499)
    samples = done[0].samples
    return JSONResponse(
        {
            "text": samples[0].text,
            "samples": [s.text for s in samples],
            "finish_reasons": [s.finish_reason for s in samples],
            "stopped": [s.finish_reason == "stop" for s in samples],
            "tokens": [s.tokens for s in samples],
            **described,
        }
    )


async def _generate_events(pending: Pending) -> AsyncIterator[str]:
    async for events in pending.events(paced=True):
        texts: dict[int, str] = {}
        for _, event in events:
            if isinstance(event, Done):
                for index, text in texts.items():  # what the last step released comes first
                    yield sse({"index": index, "text": text})
                texts = {}
                samples = event.samples
                yield sse(
                    {
                        "finish_reason": samples[0].finish_reason,
                        "finish_reasons": [s.finish_reason for s in samples],
                        "tokens": [s.tokens for s in samples],
                    }
                )
            elif event.text:
                texts[event.index] = texts.get(event.index, "") + event.text
        for index, text in texts.items():
            yield sse({"index": index, "text": text})


# -- the app ----------------------------------------------------------------------------------


class BearerAuth:
    """Every request needs ``Authorization: Bearer KEY``, except ``GET /``: the playground page is
    static, holds nothing, and sends the key typed into it with each of its requests."""

    def __init__(self, app, key: str):
        self.app = app
        self.expected = f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or (scope["path"] == "/" and scope["method"] in ("GET", "HEAD")):
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        message = "a valid API key is required: send it as 'Authorization: Bearer KEY'"
        response = error_response(401, message, code="invalid_api_key")
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


async def _bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadRequest)
    return error_response(exc.status, exc.message, exc.param, exc.code)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")


async def _server_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ServerError):
        return error_response(500, str(exc))
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return error_response(500, "internal server error")


def create_app(service: Service) -> Starlette:
    """The ASGI app of ``service``: its engine runs from the app's startup to its shutdown."""
    from .openai_api import openai_routes

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.loop = asyncio.get_running_loop()
        service.engine.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.engine.stop, 30)

    routes = [
        Route("/", playground, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/info", info, methods=["GET"]),
        Route("/generate", generate, methods=["POST"]),
        *openai_routes(),
    ]
    middleware = [Middleware(BearerAuth, key=service.api_key)] if service.api_key else []
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            BadRequest: _bad_request,
            ServerError: _server_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    app.state.service = service
    return app
