"""The ``seqpred`` command line: a thin layer over :mod:`seqpred.train` and :mod:`seqpred.generate`.

Importing this module imports no deep-learning framework; backends load theirs when used.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from ._version import __version__
from .errors import SeqpredError, UsageError

app = typer.Typer(
    name="seqpred",
    help="Train sequence-prediction models on text and generate from them, on any installed backend.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_debug = False

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def guarded(func):
    """Turn seqpred's errors into one line on stderr and an exit code; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SeqpredError as exc:
            if _debug:
                traceback.print_exc()
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            if _debug:
                traceback.print_exc()
            raise fail("interrupted", EXIT_INTERRUPTED) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"seqpred {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show a traceback on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    global _debug
    _debug = debug


# -- backends --------------------------------------------------------------------------------


@app.command()
@guarded
def backends(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """List every backend plugin: name, distribution, version, support and status."""
    from .registry import get_registry

    registry = get_registry()
    rows: list[dict[str, Any]] = []
    for info in registry.plugins:
        names = info.backends or [info.entry_point]
        for name in names:
            entry = registry.backends.get(name)
            backend = entry.backend if entry else None
            rows.append(
                {
                    "name": name,
                    "distribution": info.distribution,
                    "version": info.version,
                    "status": info.status,
                    "error": info.error,
                    "devices": list(getattr(backend, "devices", ())),
                    "objectives": list(getattr(backend, "objectives", ())),
                    "description": getattr(backend, "description", ""),
                }
            )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no backends installed; install one, e.g. pip install -e plugins/seqpred-torch")
        return
    header = ("backend", "distribution", "version", "devices", "objectives", "status")
    table = [header] + [
        (
            r["name"],
            r["distribution"],
            r["version"],
            ",".join(r["devices"]),
            ",".join(r["objectives"]),
            r["status"] + (f": {r['error']}" if r["error"] else ""),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        typer.echo("  ".join([*cells, row[-1]]))


# -- train -----------------------------------------------------------------------------------


@app.command()
@guarded
def train(
    corpus: Annotated[str, typer.Argument(help="Text file, folder of .txt files, or - for standard input.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")] = Path("runs/latest"),
    backend: Annotated[
        str, typer.Option("--backend", "-b", help="Backend to train with (see seqpred backends).")
    ] = "torch",
    preset: Annotated[
        str | None, typer.Option(help="default, or article (the tutorial's exact model).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training text.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many batches.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Windows per batch.")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Tokens per window.")] = None,
    hidden: Annotated[int | None, typer.Option(help="LSTM units per layer.")] = None,
    layers: Annotated[int | None, typer.Option(help="Stacked LSTM layers.")] = None,
    embedding: Annotated[int | None, typer.Option(help="Embedding width; 0 feeds scaled token ids.")] = None,
    dropout: Annotated[float | None, typer.Option(help="Dropout after each LSTM layer.")] = None,
    objective: Annotated[
        str | None, typer.Option(help="sequence (every position) or last (after the window).")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
    clip: Annotated[float | None, typer.Option(help="Gradient global-norm limit; 0 for none.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for weights, batch order and dropout.")] = None,
    val_fraction: Annotated[
        float | None, typer.Option(help="Share of the text kept as validation tail.")
    ] = None,
    val_every: Annotated[int | None, typer.Option(help="Validate every N steps (and at the end).")] = None,
    lower: Annotated[bool | None, typer.Option("--lower/--no-lower", help="Lower-case the text.")] = None,
    level: Annotated[str | None, typer.Option(help="Tokens: char or word.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a run already in --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a model on CORPUS and write a run folder."""
    from .config import resolve
    from .progress import ConsoleReporter
    from .train import train as run_training

    options = dict(
        corpus=corpus,
        backend=backend,
        preset=preset,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        seq_len=seq_len,
        hidden=hidden,
        layers=layers,
        embedding=embedding,
        dropout=dropout,
        objective=objective,
        lr=lr,
        clip=clip,
        seed=seed,
        val_fraction=val_fraction,
        val_every=val_every,
        lower=lower,
        level=level,
        device=device,
    )
    config = resolve(options)
    result = run_training(config, out, reporter=ConsoleReporter(quiet=quiet), force=force)
    if result.val is not None:
        v = result.val
        typer.echo(
            f"validation: loss {v['loss']:.4f} nats, {v['bits_per_token']:.4f} bits/token, "
            f"perplexity {v['perplexity']:.2f}"
        )
    typer.echo(f"saved run to {out}")


# -- generate --------------------------------------------------------------------------------


@app.command()
@guarded
def generate(
    run: Annotated[Path, typer.Argument(help="Run folder written by seqpred train.")],
    backend: Annotated[
        str | None,
        typer.Option("--backend", "-b", help="Backend to run on; default: the one that trained it."),
    ] = None,
    length: Annotated[int, typer.Option(help="Tokens to generate.")] = 200,
    prime: Annotated[str, typer.Option(help="Text to start from.")] = "",
    prime_file: Annotated[Path | None, typer.Option(help="Read the prime text from a file.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (> 0).")] = None,
    top_k: Annotated[int | None, typer.Option(help="Sample among the k most likely tokens.")] = None,
    top_p: Annotated[
        float | None, typer.Option(help="Sample from the smallest set with this probability mass.")
    ] = None,
    greedy: Annotated[
        bool | None, typer.Option("--greedy/--sample", help="Always take the most likely token.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling; same seed, same text.")] = None,
    num_samples: Annotated[int, typer.Option(help="Independent samples, generated in one batch.")] = 1,
    stop: Annotated[list[str] | None, typer.Option(help="End a sample at this string (repeatable).")] = None,
    unknown: Annotated[
        str, typer.Option(help="Prime symbols outside the vocabulary: error, skip or replace.")
    ] = "error",
    checkpoint: Annotated[str, typer.Option(help="best or latest.")] = "best",
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print samples and settings as JSON.")] = False,
) -> None:
    """Generate text from a trained run, on any backend."""
    from .corpus import decode, normalise_newlines
    from .generate import Generator
    from .sampling import SamplingSettings

    if unknown not in ("error", "skip", "replace"):
        raise UsageError(f"--unknown must be error, skip or replace, got {unknown!r}")
    if prime_file is not None:
        if prime:
            raise UsageError("give --prime or --prime-file, not both")
        try:
            prime = normalise_newlines(decode(prime_file.read_bytes(), str(prime_file)))
        except OSError as exc:
            raise UsageError(f"{prime_file}: cannot read ({exc.strerror or exc})") from None
    generator = Generator(run, backend, device=device, checkpoint=checkpoint)
    defaults = generator.default_settings()
    settings = SamplingSettings(
        temperature=defaults.temperature if temperature is None else temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=defaults.greedy if greedy is None else greedy,
    )
    stream = num_samples == 1 and not as_json
    if stream:
        sys.stdout.write(prime)
    result = generator.generate(
        prime,
        length,
        settings,
        seed=seed,
        num_samples=num_samples,
        stop=stop or (),
        unknown=unknown,  # type: ignore[arg-type]
        on_text=(lambda text: (sys.stdout.write(text), sys.stdout.flush())) if stream else None,
    )
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "run": result.run,
                    "backend": result.backend,
                    "seed": result.seed,
                    "prime": result.prime,
                    "length": length,
                    "settings": {
                        "temperature": settings.temperature,
                        "top_k": settings.top_k,
                        "top_p": settings.top_p,
                        "greedy": settings.greedy,
                    },
                    "samples": result.samples,
                    "stopped": result.stopped,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    elif stream:
        sys.stdout.write("\n")
    else:
        for i, text in enumerate(result.samples, 1):
            typer.echo(f"===== sample {i} of {num_samples} =====")
            typer.echo(prime + text)


def main() -> None:
    app(prog_name="seqpred")


if __name__ == "__main__":
    main()
