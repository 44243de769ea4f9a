"""The ``seqpred`` command line: a thin layer over :mod:`seqpred.train` and :mod:`seqpred.generate`.

Importing this module imports no deep-learning framework; backends load theirs when used.
"""

from __future__ import annotations

import errno
import functools
import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from ._version import __version__
from .corpus_cli import corpus_app
from .errors import SeqpredError, UsageError

# Typer vendors its own Click; its exceptions module is where typer.BadParameter lives.
_click_errors = sys.modules[typer.BadParameter.__module__]


class _OneLineErrors(typer.core.TyperGroup):
    """The root command group: adds the commands of plugins, and reports the command line's own
    usage errors (an unknown option, a value that is not a number) as one line with exit 2, like
    seqpred's own; Ctrl-C while parsing is exit 130."""

    _plugin_commands_added = False

    def _add_plugin_commands(self) -> None:
        """Subcommands from plugins (the ``seqpred_register_commands`` hook), added on first use."""
        if self._plugin_commands_added:
            return
        self._plugin_commands_added = True
        from .registry import get_registry

        try:
            registry = get_registry()
        except SeqpredError:
            return  # the command that runs next reports it, as one line
        for info, plugin_app in registry.plugin_commands():
            for name, command in typer.main.get_group(plugin_app).commands.items():
                if name in self.commands:
                    registry.warnings.append(
                        f"plugin {info.distribution}: command {name!r} exists; not replaced"
                    )
                    continue
                self.add_command(command, name)

    def list_commands(self, ctx: Any) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        self._add_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
            code = code if isinstance(code, int) else EXIT_OK
        except _click_errors.NoArgsIsHelpError as exc:
            typer.echo(exc.format_message())
            code = EXIT_USAGE
        except _click_errors.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "seqpred"
            typer.echo(f"error: {exc.format_message()} (see {where} --help)", err=True)
            code = EXIT_USAGE
        except _click_errors.ClickException as exc:
            typer.echo(f"error: {exc.format_message()}", err=True)
            code = exc.exit_code
        except typer.Abort:
            typer.echo("error: interrupted", err=True)
            code = EXIT_INTERRUPTED
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=_OneLineErrors,
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
        except OSError as exc:  # a full disk or a vanished file where no clearer message was given
            if exc.errno == errno.EPIPE:
                raise  # click ends quietly when the reader of the output went away
            if _debug:
                traceback.print_exc()
            where = f"{exc.filename}: " if exc.filename else ""
            raise fail(f"{where}{exc.strerror or exc}", EXIT_ERROR) from None

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
    """List the backends and their status.

    One row per backend plugin: name, distribution and version, devices and objectives it supports,
    whether it trains (no: inference only), and whether it loaded (ok, failed with the reason, or
    disabled by SEQPRED_LOAD_PLUGINS).
    """
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
                    "trains": bool(getattr(backend, "trains", True)) if backend else None,
                    "description": getattr(backend, "description", ""),
                }
            )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no backends installed; install one, e.g. pip install -e plugins/seqpred-torch")
        return
    header = ("backend", "distribution", "version", "devices", "objectives", "trains", "status")
    table = [header] + [
        (
            r["name"],
            r["distribution"],
            r["version"],
            ",".join(r["devices"]),
            ",".join(r["objectives"]),
            {True: "yes", False: "no", None: "-"}[r["trains"]],
            r["status"] + (f": {r['error']}" if r["error"] else ""),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        typer.echo("  ".join([*cells, row[-1]]))


# -- train -----------------------------------------------------------------------------------


def _parse_duration(value: str | None) -> float | None:
    """Seconds from ``90``, ``90s``, ``15m`` or ``2h``."""
    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600}
    text = value.strip().lower()
    scale = units.get(text[-1:])
    try:
        return float(text[:-1] if scale else text) * (scale or 1)
    except ValueError:
        raise UsageError(
            f"--time-limit must be a duration such as 90, 90s, 15m or 2h, got {value!r}"
        ) from None


@app.command()
@guarded
def train(
    corpus: Annotated[
        str | None,
        typer.Argument(help="Text file, folder of .txt files, - for standard input, or a corpus name."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")] = Path("runs/latest"),
    backend: Annotated[
        str | None, typer.Option("--backend", "-b", help="Backend (see seqpred backends).")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="default, or article (the tutorial's exact model).")
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="TOML file of training options; flags override it.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this run folder from its latest checkpoint.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training text.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many batches.")] = None,
    time_limit: Annotated[str | None, typer.Option(help="Stop after this long: 90s, 15m, 2h.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Windows per batch.")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Tokens per window.")] = None,
    hidden: Annotated[int | None, typer.Option(help="LSTM units per layer.")] = None,
    layers: Annotated[int | None, typer.Option(help="Stacked LSTM layers.")] = None,
    embedding: Annotated[int | None, typer.Option(help="Embedding width; 0 feeds scaled token ids.")] = None,
    dropout: Annotated[float | None, typer.Option(help="Dropout between the LSTM layers.")] = None,
    output_dropout: Annotated[
        bool | None,
        typer.Option(
            "--output-dropout/--no-output-dropout",
            help="Dropout after the last LSTM layer too (the article preset has it).",
        ),
    ] = None,
    objective: Annotated[
        str | None, typer.Option(help="sequence (every position) or last (after the window).")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate (the peak, with a schedule).")] = None,
    schedule: Annotated[str | None, typer.Option(help="Learning rate: constant, cosine or plateau.")] = None,
    warmup: Annotated[int | None, typer.Option(help="Steps of linear warm-up.")] = None,
    min_lr: Annotated[float | None, typer.Option(help="Floor of the cosine and plateau schedules.")] = None,
    plateau_factor: Annotated[float | None, typer.Option(help="Plateau: multiply the rate by this.")] = None,
    plateau_patience: Annotated[
        int | None, typer.Option(help="Plateau: validations without improvement before lowering.")
    ] = None,
    patience: Annotated[
        int | None, typer.Option(help="Stop after this many validations without improvement.")
    ] = None,
    clip: Annotated[float | None, typer.Option(help="Gradient global-norm limit; 0 for none.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for weights, batch order and dropout.")] = None,
    val_fraction: Annotated[
        float | None, typer.Option(help="Share of the text kept as validation tail.")
    ] = None,
    val_every: Annotated[
        int | None, typer.Option(help="Validate every N steps (and each epoch end).")
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(
            help="reset: each window starts from a zero state; carry: stateful training, each batch row "
            "reads its own stripe of the text and the state flows from batch to batch."
        ),
    ] = None,
    lower: Annotated[bool | None, typer.Option("--lower/--no-lower", help="Lower-case the text.")] = None,
    level: Annotated[str | None, typer.Option(help="Tokens: char or word.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a run already in --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    log_format: Annotated[
        str, typer.Option(help="Progress as a rich bar, or json lines on stdout.")
    ] = "rich",
    tensorboard: Annotated[
        Path | None,
        typer.Option(help="Also write the training and validation scalars as TensorBoard event files here."),
    ] = None,
) -> None:
    """Train a model on CORPUS, or continue a run with --resume.

    Writes a run folder (--out) with the model spec, vocabulary, training configuration, latest and
    best checkpoints and the history. Flags override --config, which overrides --preset.
    """
    from .config import load_toml, resolve
    from .progress import make_reporter
    from .train import Trainer

    if log_format not in ("rich", "json"):
        raise UsageError(f"--log-format must be rich or json, got {log_format!r}")
    if corpus is not None and corpus != "-":
        corpus = _corpus_path(corpus)
    options = dict(
        corpus=corpus,
        backend=backend,
        preset=preset,
        epochs=epochs,
        max_steps=max_steps,
        time_limit=_parse_duration(time_limit),
        batch_size=batch_size,
        seq_len=seq_len,
        hidden=hidden,
        layers=layers,
        embedding=embedding,
        dropout=dropout,
        output_dropout=output_dropout,
        objective=objective,
        lr=lr,
        schedule=schedule,
        warmup=warmup,
        min_lr=min_lr,
        plateau_factor=plateau_factor,
        plateau_patience=plateau_patience,
        patience=patience,
        clip=clip,
        seed=seed,
        val_fraction=val_fraction,
        val_every=val_every,
        state=state,
        lower=lower,
        level=level,
        device=device,
    )
    reporter = make_reporter(log_format, quiet)
    board = None
    if tensorboard is not None:
        from .tensorboard import TensorBoardReporter

        reporter = board = TensorBoardReporter(tensorboard, then=reporter)
    if resume is not None:
        if config_file is not None:
            raise UsageError("--config cannot be combined with --resume; the run keeps its configuration")
        trainer = Trainer(None, resume, reporter=reporter, resume=True, overrides=options)
        out = resume
    else:
        file_values = load_toml(str(config_file)) if config_file is not None else {}
        if corpus is None and "corpus" not in file_values:
            raise UsageError("missing CORPUS: give a text file, a folder, - or a corpus name")
        if "corpus" in file_values and corpus is None:
            file_values["corpus"] = _corpus_path(str(file_values["corpus"]))
        trainer = Trainer(resolve(options, file_values), out, reporter=reporter, force=force)
    try:
        result = trainer.run()
    finally:
        if board is not None:
            board.close()
    if log_format == "json":
        return
    if result.val is not None:
        v = result.val
        carried = (
            f"; state carried through the text: {v['carried_loss']:.4f} nats, "
            f"{v['carried_bits_per_token']:.4f} bits/token"
            if "carried_loss" in v
            else ""
        )
        typer.echo(
            f"validation: loss {v['loss']:.4f} nats, {v['bits_per_token']:.4f} bits/token, "
            f"perplexity {v['perplexity']:.2f}{carried}"
        )
    notes = {"early-stopped": " (stopped early: no improvement)", "time-limit": " (time limit reached)"}
    typer.echo(f"saved run to {out} at step {result.steps}{notes.get(result.status, '')}")


def _corpus_path(value: str) -> str:
    """A path as given, or the cached file of a named corpus."""
    try:
        from .corpora import resolve_corpus
    except ImportError:  # pragma: no cover - the catalogue is part of the package
        return value
    return str(resolve_corpus(value))


# -- evaluate --------------------------------------------------------------------------------


@app.command()
@guarded
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder, or an .onnx file from seqpred export.")],
    corpus: Annotated[str, typer.Argument(help="Text to score: a file, a folder, - or a corpus name.")],
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend", "-b", help="Backend to score on; default: the one that trained it, onnx for a file."
        ),
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best or latest.")] = "best",
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    unknown: Annotated[str, typer.Option(help="Symbols outside the vocabulary: error or skip.")] = "error",
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
) -> None:
    """Score a text with a trained run.

    Prints the loss in nats, bits per token and perplexity, on any backend: scored window by window
    from a zero state, as validation does, and in one pass with the state carried through the text,
    as generation runs the model.
    """
    from .evaluation import evaluate_text

    if unknown not in ("error", "skip"):
        raise UsageError(f"--unknown must be error or skip, got {unknown!r}")
    source = corpus if corpus == "-" else _corpus_path(corpus)
    scores = evaluate_text(
        run, source, backend=backend, checkpoint=checkpoint, device=device, unknown=unknown
    )
    if as_json:
        typer.echo(json.dumps(scores, indent=2))
    else:
        typer.echo(
            f"{scores['tokens']:,} tokens: loss {scores['loss']:.4f} nats, "
            f"{scores['bits_per_token']:.4f} bits/token, perplexity {scores['perplexity']:.2f} "
            f"({scores['backend']}, windows of {scores['window']})"
        )
        typer.echo(
            f"state carried through the text: loss {scores['carried_loss']:.4f} nats, "
            f"{scores['carried_bits_per_token']:.4f} bits/token, "
            f"perplexity {scores['carried_perplexity']:.2f}"
        )


# -- plot ------------------------------------------------------------------------------------


@app.command()
@guarded
def plot(
    run: Annotated[Path, typer.Argument(help="Run folder written by seqpred train.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="PNG to write; default RUN/curves.png.")
    ] = None,
) -> None:
    """Plot a run's loss curves as a PNG.

    Training loss per step (raw and smoothed) and validation loss; needs matplotlib (seqpred[plot]).
    """
    from .plotting import plot_history

    path = plot_history(run, output)
    typer.echo(f"wrote {path}")


# -- generate --------------------------------------------------------------------------------


@app.command()
@guarded
def generate(
    run: Annotated[Path, typer.Argument(help="Run folder, or an .onnx file from seqpred export.")],
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend", "-b", help="Backend to run on; default: the one that trained it, onnx for a file."
        ),
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
    generator.check_prime(prime)
    stream = num_samples == 1 and not as_json
    echo = _PrimeThenText(prime) if stream else None
    result = generator.generate(
        prime,
        length,
        settings,
        seed=seed,
        num_samples=num_samples,
        stop=stop or (),
        unknown=unknown,  # type: ignore[arg-type]
        on_text=echo,
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
    elif echo is not None:
        echo.finish()
    else:
        for i, text in enumerate(result.samples, 1):
            typer.echo(f"===== sample {i} of {num_samples} =====")
            typer.echo(prime + text)


# -- export ----------------------------------------------------------------------------------


@app.command()
@guarded
def export(
    run: Annotated[Path, typer.Argument(help="Run folder written by seqpred train.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="File to write; default: RUN.onnx beside the folder.")
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best or latest.")] = "best",
    export_format: Annotated[str, typer.Option("--format", help="onnx (the one format so far).")] = "onnx",
) -> None:
    """Export a run as one self-contained ONNX file.

    The graph (embedding, one ONNX LSTM operator per layer, dense layer; the LSTM state as inputs
    and outputs) is written from the canonical weights, so a run of any backend exports alike. The
    vocabulary, the model spec and the sampling settings go into its metadata: the file alone
    generates, with seqpred generate FILE --backend onnx. Needs the onnx package (seqpred[onnx]).
    """
    from .export import OPSET, export_run
    from .runs import load_run

    if export_format != "onnx":
        raise UsageError(f"--format must be onnx, got {export_format!r}")
    loaded = load_run(run, checkpoint)
    path = export_run(loaded, out if out is not None else run.parent / f"{run.resolve().name}.onnx")
    size = path.stat().st_size
    shown = f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.0f} kB"
    typer.echo(f"wrote {path} ({shown}, ONNX opset {OPSET}); generate with: seqpred generate {path}")


# -- serve -----------------------------------------------------------------------------------


@app.command()
@guarded
def serve(
    run: Annotated[Path, typer.Argument(help="Run folder written by seqpred train.")],
    backend: Annotated[
        str | None,
        typer.Option("--backend", "-b", help="Backend to run on; default: the one that trained it."),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    checkpoint: Annotated[str, typer.Option(help="best or latest.")] = "best",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="SEQPRED_API_KEY", help="Require 'Authorization: Bearer KEY' on every request."),
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="The model's id in the OpenAI API; default: the run folder's name.")
    ] = None,
    max_streams: Annotated[int, typer.Option(help="Streams generated together in one batch.")] = 64,
    max_waiting: Annotated[int, typer.Option(help="Requests that may wait for room; then 503.")] = 256,
    max_length: Annotated[int, typer.Option(help="Tokens one request may generate.")] = 4096,
    max_prime: Annotated[int, typer.Option(help="Characters of a prime, prompt or chat.")] = 100_000,
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
    from .generate import Generator
    from .serve.app import Service
    from .serve.limits import Limits
    from .serve.server import run_server

    for name, value in (("max-streams", max_streams), ("max-length", max_length), ("max-prime", max_prime)):
        if value < 1:
            raise UsageError(f"--{name} must be at least 1, got {value}")
    if max_waiting < 0 or not 0 <= port <= 65535:
        raise UsageError("--max-waiting must be at least 0 and --port between 0 and 65535")
    limits = Limits(
        max_streams=max_streams, max_waiting=max_waiting, max_length=max_length, max_prime=max_prime
    )
    generator = Generator(run, backend, device=device, checkpoint=checkpoint)
    service = Service(generator, limits, model_name=model_name, api_key=api_key, device=device)
    try:
        run_server(service, host, port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


app.add_typer(corpus_app, name="corpus")


class _PrimeThenText:
    """Stream a sample to stdout: the prime goes out with the first generated text, so that a prime
    the model cannot read is reported alone, not after an echo of itself."""

    def __init__(self, prime: str):
        self.pending = prime

    def __call__(self, text: str) -> None:
        sys.stdout.write(self.pending + text)
        sys.stdout.flush()
        self.pending = ""

    def finish(self) -> None:
        sys.stdout.write(self.pending + "\n")
        sys.stdout.flush()


def main() -> None:
    app(prog_name="seqpred")


if __name__ == "__main__":
    main()
