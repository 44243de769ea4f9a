"""``seqpred train``, ``evaluate`` and ``plot``: training a run, scoring text with it, its curves."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import OPTIONS, PRESETS
from ..errors import UsageError, VocabError
from ..progress import INTERVAL, INTERVAL_ENV
from ..threads import THREADS_OPTION_HELP, apply_option
from .app import app


def _shown(value: Any) -> str:
    return "off" if value is None or value is False else "on" if value is True else str(value)


def _option_parameter(name: str) -> inspect.Parameter:
    """The ``seqpred train`` flag of training option ``name``, from its one definition in the config."""
    field = OPTIONS[name]
    meta = field.metadata
    kinds = {"int": int, "float": float, "bool": bool, "str": str}
    kind = str if meta["parse"] is not None else kinds[str(field.type).replace(" | None", "")]
    flags = meta["flags"] or ("--" + name.replace("_", "-"),)
    choices = getattr(meta["check"], "choices", None)
    metavar = meta["metavar"] or ("|".join(choices) if choices else kind.__name__.upper())
    note = ""
    if name in PRESETS["article"] and PRESETS["article"][name] != field.default:
        note = f"; article preset: {_shown(PRESETS['article'][name])}"
    info = typer.Option(
        *flags,
        help=f"{meta['help']} [default: {_shown(field.default)}{note}]",
        metavar=None if kind is bool else metavar,
        show_default=False,
    )
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, info]
    )


#: The flags of ``seqpred train`` that are not training options.
_COMMAND_PARAMETERS = [
    inspect.Parameter(
        "corpus",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=None,
        annotation=Annotated[
            str | None, typer.Argument(help=OPTIONS["corpus"].metadata["help"], metavar="CORPUS")
        ],
    ),
    inspect.Parameter(
        "out",
        inspect.Parameter.KEYWORD_ONLY,
        default=Path("runs/latest"),
        annotation=Annotated[
            Path,
            typer.Option("--out", "-o", help="Run folder to write.", metavar="FOLDER", show_default=True),
        ],
    ),
    inspect.Parameter(
        "config_file",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--config",
                help="TOML file of training options; flags override it. [default: none]",
                metavar="FILE",
            ),
        ],
    ),
    inspect.Parameter(
        "resume",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                help="Continue this run folder from its latest checkpoint. [default: none: a new run]",
                metavar="RUN",
            ),
        ],
    ),
    inspect.Parameter(
        "force",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[
            bool, typer.Option("--force", help="Replace a run already in --out. [default: off]")
        ],
    ),
    inspect.Parameter(
        "quiet",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[
            bool,
            typer.Option(
                "--quiet",
                "-q",
                help="No progress output (bars on a terminal; elsewhere a line every "
                f"{INTERVAL:.0f} s, or {INTERVAL_ENV}). [default: off]",
            ),
        ],
    ),
    inspect.Parameter(
        "log_format",
        inspect.Parameter.KEYWORD_ONLY,
        default="rich",
        annotation=Annotated[
            str,
            typer.Option(
                help="Progress as a rich bar (log lines when not a terminal), or json lines on stdout.",
                metavar="rich|json",
            ),
        ],
    ),
    inspect.Parameter(
        "tensorboard",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                help="Also write the training and validation scalars as TensorBoard event files here. "
                "[default: none]",
                metavar="FOLDER",
            ),
        ],
    ),
]


def train(
    corpus: str | None = None,
    *,
    out: Path = Path("runs/latest"),
    config_file: Path | None = None,
    resume: Path | None = None,
    force: bool = False,
    quiet: bool = False,
    log_format: str = "rich",
    tensorboard: Path | None = None,
    **options: Any,
) -> None:
    """Train a model on CORPUS, or continue a run with --resume.

    Writes a run folder (--out) with the model spec, vocabulary, training configuration, latest and
    best checkpoints and the history. Flags override --config, which overrides --preset.
    """
    from ..config import load_toml, resolve
    from ..distributed import is_first_process
    from ..progress import display, make_reporter, summary_lines
    from ..train import Trainer

    if log_format not in ("rich", "json"):
        raise UsageError(f"--log-format must be rich or json, got {log_format!r}")
    if corpus is not None and corpus != "-":
        corpus = _corpus_path(corpus)
    for name, value in options.items():
        parse = OPTIONS[name].metadata["parse"]
        if parse is not None and value is not None:
            options[name] = parse(value)
    options["corpus"] = corpus
    secondary = not is_first_process()
    if secondary:  # under torchrun every process runs this command: rank 0 alone reports
        quiet, log_format, tensorboard = True, "rich", None
    reporter = make_reporter(log_format, quiet)
    board = None
    if tensorboard is not None:
        from ..tensorboard import TensorBoardReporter

        reporter = board = TensorBoardReporter(tensorboard, then=reporter)
    if resume is not None:
        if config_file is not None:
            raise UsageError("--config cannot be combined with --resume; the run keeps its configuration")
        trainer = Trainer.resume(resume, options, reporter=reporter)
    else:
        file_values = load_toml(str(config_file)) if config_file is not None else {}
        if corpus is None and "corpus" not in file_values:
            raise UsageError("missing CORPUS: give a text file, a folder, - or a corpus name")
        if "corpus" in file_values and corpus is None:
            file_values["corpus"] = _corpus_path(str(file_values["corpus"]))
        trainer = Trainer(resolve(options, file_values), out, reporter=reporter, force=force)
    try:
        with display(quiet=quiet or log_format == "json"):
            result = trainer.run()
    finally:
        if board is not None:
            board.close()
    if log_format == "json" or secondary:
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
    for line in summary_lines(result):
        typer.echo(line)


# The command's flags: its own, then one per training option, in the order the config defines them.
train.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    _COMMAND_PARAMETERS + [_option_parameter(n) for n, f in OPTIONS.items() if f.metadata["cli"]]
)
app.command()(train)


def _corpus_path(value: str) -> str:
    """A path as given, or the cached file of a named corpus; an empty one stays empty, for the
    reader to refuse (``Path("")`` would be the current folder)."""
    if not value.strip():
        return value
    try:
        from ..catalogue import resolve_corpus
    except ImportError:  # pragma: no cover - the catalogue is part of the package
        return value
    return str(resolve_corpus(value))


@app.command()
def evaluate(
    run: Annotated[
        Path, typer.Argument(help="Run folder, or an .onnx file from seqpred export.", metavar="RUN")
    ],
    corpus: Annotated[
        str,
        typer.Argument(help="Text to score: a file, a folder, - or a corpus name.", metavar="CORPUS"),
    ],
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            "-b",
            help="Backend to score on. [default: the one that trained it; onnx for an .onnx file]",
            metavar="NAME",
        ),
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="Weights to score.", metavar="best|latest")] = "best",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.", metavar="DEVICE")] = "cpu",
    threads: Annotated[int | None, typer.Option(help=THREADS_OPTION_HELP, metavar="N")] = None,
    unknown: Annotated[
        str,
        typer.Option(
            help="Symbols outside the vocabulary: stop with an error, or skip them.", metavar="error|skip"
        ),
    ] = "error",
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON. [default: off]")] = False,
) -> None:
    """Score a text with a trained run.

    Prints the loss in nats, bits per token and perplexity, on any backend: scored window by window
    from a zero state, as validation does, and in one pass with the state carried through the text,
    as generation runs the model.
    """
    from ..evaluation import evaluate_text
    from ..progress import display
    from ..vocab import UnknownPolicy

    if unknown not in ("error", "skip"):
        raise UsageError(f"--unknown must be error or skip, got {unknown!r}")
    source = corpus if corpus == "-" else _corpus_path(corpus)
    policy: UnknownPolicy = "skip" if unknown == "skip" else "error"
    apply_option(threads)
    try:
        with display():  # the scoring shows its progress in tokens
            scores = evaluate_text(
                run, source, backend=backend, checkpoint=checkpoint, device=device, unknown=policy
            )
    except VocabError as exc:
        if unknown != "error":
            raise
        raise VocabError(f"{exc}; add --unknown skip to score the text without them") from None
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


@app.command()
def plot(
    run: Annotated[Path, typer.Argument(help="Run folder written by seqpred train.", metavar="RUN")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="PNG to write. [default: RUN/curves.png]", metavar="FILE"),
    ] = None,
) -> None:
    """Plot a run's loss curves as a PNG.

    Training loss per step (raw and smoothed) and validation loss; needs matplotlib (seqpred[plot]).
    """
    from ..plotting import plot_history

    path = plot_history(run, output)
    typer.echo(f"wrote {path}")
