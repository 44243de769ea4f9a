"""What one server accepts: streams, queue, lengths and body size, and reading a bounded JSON body."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from starlette.requests import Request

from .fields import BadRequest


@dataclass(frozen=True)
class Limits:
    """The caps of a server; :meth:`describe` is what ``GET /info`` shows."""

    #: Rows of the running batch (a request of ``num_samples`` or ``n`` rows takes that many).
    max_streams: int = 64
    #: Requests waiting for room in the batch; past it, 503 with ``Retry-After``.
    max_waiting: int = 256
    #: Tokens one request may generate.
    max_length: int = 4096
    #: Characters of a prime (or prompt, or all messages of a chat together).
    max_prime: int = 100_000
    #: Bytes of a request body.
    max_body: int = 1_048_576

    def describe(self) -> dict[str, int]:
        return asdict(self)


async def read_json(request: Request, limits: Limits) -> dict[str, Any]:
    """The request's JSON object, read up to ``limits.max_body`` bytes; anything else is a 4xx."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body:
        raise BadRequest(
            f"the body is {int(declared):,} bytes, over the limit of {limits.max_body:,}", status=413
        )
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limits.max_body:
            raise BadRequest(f"the body is over the limit of {limits.max_body:,} bytes", status=413)
    try:
        body = json.loads(bytes(data))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = str(exc).splitlines()[0] if str(exc) else "nested too deeply"
        raise BadRequest(f"the body is not valid JSON ({reason})") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, not {type(body).__name__}")
    return body
