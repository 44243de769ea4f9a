"""``seqpred export`` and ``serve``: a trained run as an ONNX file, or behind HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..threads import THREADS_OPTION_HELP, apply_option
from .app import app


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run folder written by seqpred train.", metavar="RUN")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="File to write. [default: RUN.onnx beside the folder]", metavar="FILE"
        ),
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="Weights to export.", metavar="best|latest")] = "best",
    export_format: Annotated[
        str, typer.Option("--format", help="onnx (the one format so far).", metavar="FORMAT")
    ] = "onnx",
) -> None:
    """Export a run as one self-contained ONNX file.

    The graph (embedding, one ONNX LSTM operator per layer, dense layer; the LSTM state as inputs
    and outputs) is written from the canonical weights, so a run of any backend exports alike. The
    vocabulary, the model spec and the sampling settings go into its metadata: the file alone
    generates, with seqpred generate FILE --backend onnx. Needs the onnx package (seqpred[onnx]).
    """
    from ..export import OPSET, export_run
    from ..runs import load_run

    if export_format != "onnx":
        raise UsageError(f"--format must be onnx, got {export_format!r}")
    loaded = load_run(run, checkpoint)
    path = export_run(loaded, out if out is not None else run.parent / f"{run.resolve().name}.onnx")
    size = path.stat().st_size
    shown = f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.0f} kB"
    typer.echo(f"wrote {path} ({shown}, ONNX opset {OPSET}); generate with: seqpred generate {path}")


@app.command()
def serve(
    run: Annotated[Path, typer.Argument(help="Run folder written by seqpred train.", metavar="RUN")],
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend", "-b", help="Backend to run on. [default: the one that trained it]", metavar="NAME"
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.", metavar="DEVICE")] = "cpu",
    threads: Annotated[int | None, typer.Option(help=THREADS_OPTION_HELP, metavar="N")] = None,
    checkpoint: Annotated[str, typer.Option(help="Weights to serve.", metavar="best|latest")] = "best",
    host: Annotated[str, typer.Option(help="Address to listen on.", metavar="ADDRESS")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).", metavar="PORT")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="SEQPRED_API_KEY",
            help="Require 'Authorization: Bearer KEY' on every request. [default: none: no key]",
            metavar="KEY",
        ),
    ] = None,
    model_name: Annotated[
        str | None,
        typer.Option(
            help="The model's id in the OpenAI API. [default: the run folder's name]", metavar="NAME"
        ),
    ] = None,
    max_streams: Annotated[
        int, typer.Option(help="Streams generated together in one batch.", metavar="N")
    ] = 64,
    max_waiting: Annotated[
        int, typer.Option(help="Requests that may wait for room; then 503.", metavar="N")
    ] = 256,
    max_length: Annotated[int, typer.Option(help="Tokens one request may generate.", metavar="N")] = 4096,
    max_prime: Annotated[
        int, typer.Option(help="Characters of a prime, prompt or chat.", metavar="N")
    ] = 100_000,
) -> None:
    """Serve a run over HTTP: a playground, /generate and the OpenAI API.

    Concurrent requests share one batched model step per token. Binds 127.0.0.1 by default; Ctrl-C
    lets running requests finish, then stops (exit 0). Needs the serve extra: pip install seqpred[serve].
    """
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError("serving needs the serve extra: pip install seqpred[serve]") from None
    from ..generate import Generator
    from ..serve.app import Service
    from ..serve.limits import Limits
    from ..serve.server import run_server

    for name, value in (("max-streams", max_streams), ("max-length", max_length), ("max-prime", max_prime)):
        if value < 1:
            raise UsageError(f"--{name} must be at least 1, got {value}")
    if max_waiting < 0 or not 0 <= port <= 65535:
        raise UsageError("--max-waiting must be at least 0 and --port between 0 and 65535")
    limits = Limits(
        max_streams=max_streams, max_waiting=max_waiting, max_length=max_length, max_prime=max_prime
    )
    apply_option(threads)
    generator = Generator(run, backend, device=device, checkpoint=checkpoint)
    service = Service(generator, limits, model_name=model_name, api_key=api_key, device=device)
    try:
        run_server(service, host, port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
