"""Running the app with uvicorn: binding, the start-up line, a warning for an open address without a
key, and Ctrl-C (or SIGTERM) draining the running requests before the process ends."""

from __future__ import annotations

import ipaddress
import signal
import socket
import sys

from .app import Service, create_app

#: Seconds that Ctrl-C waits for running requests before they are cut.
DRAIN_SECONDS = 30


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (an OSError when the address is taken or unknown)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run_server(service: Service, host: str, port: int, *, log_level: str = "warning") -> None:
    """Serve until Ctrl-C or SIGTERM; running requests finish first (up to :data:`DRAIN_SECONDS`)."""
    import uvicorn

    if not is_loopback(host) and not service.api_key:
        print(
            f"warning: serving on {host} without an API key: anyone who can reach it can use the model; "
            f"give --api-key or set SEQPRED_API_KEY",
            file=sys.stderr,
        )
    config = uvicorn.Config(
        create_app(service),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=DRAIN_SECONDS,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    sock = bind(host, port)
    address = sock.getsockname()
    shown = f"[{address[0]}]" if ":" in address[0] else address[0]
    generator = service.generator
    print(
        f"serving {generator.run.path} ({generator.backend_name}) as {service.model_name!r} at "
        f"http://{shown}:{address[1]}/ ; Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    # uvicorn re-raises the signal that stopped it once it has drained; by then it has done its job.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    print("stopped", file=sys.stderr, flush=True)
