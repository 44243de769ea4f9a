"""``seqpred generate``: text from a trained run, on any backend."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from .app import app


@app.command()
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
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print samples and settings as JSON.")] = False,
) -> None:
    """Generate text from a trained run, on any backend."""
    from ..generate import Generator
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
