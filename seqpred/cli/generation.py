"""``seqpred generate``: text from a trained run, on any backend."""

from __future__ import annotations

import json
import re
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError, VocabError
from ..threads import THREADS_OPTION_HELP, apply_option
from .app import app

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str) -> str:
    r"""``\n``, ``\t``, ``\r`` and ``\\`` as a line break, a tab, a carriage return and a backslash
    (a shell passes them as two characters); any other backslash stays as it is."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), text, flags=re.DOTALL)


def draw_seed() -> int:
    """A seed for a generation given none, so that its text can be made again."""
    return secrets.randbelow(2**32)


def seen_prime(vocab, prime: str, unknown: str) -> str:
    """The prime as the model reads it: with ``--unknown skip`` or ``replace``, its unknown symbols
    dropped or replaced."""
    if unknown == "error" or not prime:
        return prime  # every symbol is known, or the command stops with an error
    from ..vocab import detokenize

    tokens = [vocab.tokens[i] for i in vocab.encode(prime, unknown)]
    return "".join(tokens) if vocab.level == "char" else detokenize(tokens, vocab.level)


@app.command()
def generate(
    run: Annotated[
        Path, typer.Argument(help="Run folder, or an .onnx file from seqpred export.", metavar="RUN")
    ],
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            "-b",
            help=(
                "Backend to run on; on a CPU, onnx (seqpred-onnx) generates fastest. "
                "[default: the one that trained it; onnx for an .onnx file]"
            ),
            metavar="NAME",
        ),
    ] = None,
    length: Annotated[int, typer.Option(help="Tokens to generate.", metavar="N")] = 200,
    prime: Annotated[
        str,
        typer.Option(
            help=r"Text to start from; \n, \t and \\ stand for a line break, a tab and a backslash. "
            "[default: none]",
            metavar="TEXT",
            show_default=False,
        ),
    ] = "",
    prime_file: Annotated[
        Path | None,
        typer.Option(help="Read the prime text from a file, as it is. [default: none]", metavar="FILE"),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(help="Sampling temperature (> 0). [default: the run's, 0.8 unless set]", metavar="T"),
    ] = None,
    top_k: Annotated[
        int | None, typer.Option(help="Sample among the k most likely tokens. [default: off]", metavar="K")
    ] = None,
    top_p: Annotated[
        float | None,
        typer.Option(
            help="Sample from the smallest set with this probability mass. [default: off]", metavar="P"
        ),
    ] = None,
    greedy: Annotated[
        bool | None,
        typer.Option(
            "--greedy/--sample",
            help="Always take the most likely token, or sample. "
            "[default: the run's: --sample, --greedy for --preset article]",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed for sampling; same seed, same text. [default: a random one, shown by --json]",
            metavar="N",
        ),
    ] = None,
    num_samples: Annotated[
        int, typer.Option(help="Independent samples, generated in one batch.", metavar="N")
    ] = 1,
    stop: Annotated[
        list[str] | None,
        typer.Option(
            help=r"End a sample at this string (repeatable); \n and \t as in --prime. [default: none]",
            metavar="TEXT",
        ),
    ] = None,
    unknown: Annotated[
        str,
        typer.Option(
            help="Prime symbols outside the vocabulary: stop with an error, skip them, or replace them "
            "with a space.",
            metavar="error|skip|replace",
        ),
    ] = "error",
    checkpoint: Annotated[str, typer.Option(help="Weights to use.", metavar="best|latest")] = "best",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.", metavar="DEVICE")] = "cpu",
    threads: Annotated[int | None, typer.Option(help=THREADS_OPTION_HELP, metavar="N")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print samples and settings (and the seed) as JSON. [default: off]")
    ] = False,
) -> None:
    """Generate text from a trained run, on any backend.

    One sample streams to stdout as it is produced; several, or --json, are printed at the end, with
    a progress bar on stderr meanwhile (on a terminal).
    """
    from ..generate import Generator
    from ..progress import display, task
    from ..sampling import SamplingSettings
    from ..text_sources import read_text_file

    if unknown not in ("error", "skip", "replace"):
        raise UsageError(f"--unknown must be error, skip or replace, got {unknown!r}")
    if prime_file is not None:
        if prime:
            raise UsageError("give --prime or --prime-file, not both")
        if not prime_file.exists():
            raise UsageError(f"{prime_file}: no such file; give --prime-file a text file")
        prime = read_text_file(prime_file, "a prime")  # bounded, regular files only
    else:
        prime = unescape(prime)
    stops = [unescape(s) for s in stop or ()]
    seed = draw_seed() if seed is None else seed
    apply_option(threads)
    generator = Generator(run, backend, device=device, checkpoint=checkpoint)
    defaults = generator.default_settings()
    settings = SamplingSettings(
        temperature=defaults.temperature if temperature is None else temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=defaults.greedy if greedy is None else greedy,
    )
    generator.check_prime(prime)
    try:
        shown_prime = seen_prime(generator.vocab, prime, unknown)
    except VocabError:
        shown_prime = prime  # a replacement the vocabulary lacks: generate() says so
    stream = num_samples == 1 and not as_json
    echo = _PrimeThenText(shown_prime)
    try:
        with display(quiet=stream), task("generating", total=length, unit="tokens") as work:
            char_level = generator.vocab.level == "char"
            result = generator.generate(
                prime,
                length,
                settings,
                seed=seed,
                num_samples=num_samples,
                stop=stops,
                unknown=unknown,  # type: ignore[arg-type]
                on_text=echo if stream else (lambda piece: work.advance(len(piece) if char_level else 1)),
            )
    except VocabError as exc:
        if unknown != "error":
            raise
        raise VocabError(
            f"{exc} in the prime; add --unknown skip to drop them or --unknown replace to read a space "
            f"instead"
        ) from None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "run": result.run,
                    "backend": result.backend,
                    "seed": seed,
                    "prime": prime,
                    "prime_read": shown_prime,  # as the model read it, after --unknown skip or replace
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
        echo.finish()
    else:
        for i, text in enumerate(result.samples, 1):
            typer.echo(f"===== sample {i} of {num_samples} =====")
            typer.echo(shown_prime + text)


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
