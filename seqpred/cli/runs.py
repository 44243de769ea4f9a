"""``seqpred runs``: the runs under a folder, as a table or JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from .app import app


def _size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@app.command("runs")
def list_runs(
    folder: Annotated[
        Path, typer.Argument(help="Folder to search for run folders, at any depth.", metavar="FOLDER")
    ] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON. [default: off]")] = False,
) -> None:
    """List the runs under FOLDER: name, backend, status, steps, best validation loss (nats and
    bits per token) and its step, size on disk, and when it last changed.

    A folder whose run.json cannot be read is listed as damaged, with the reason.
    """
    from ..run_table import list_runs as rows_of

    rows = rows_of(folder)
    if as_json:
        typer.echo(json.dumps([row.to_dict() for row in rows], indent=2))
        return
    if not rows:
        typer.echo(f"no runs under {folder}; train one with: seqpred train CORPUS --out {folder}/NAME")
        return
    header = (
        "run",
        "backend",
        "status",
        "steps",
        "best val loss",
        "bits/token",
        "at step",
        "size",
        "modified",
    )
    table = [header] + [
        (
            row.name,
            row.backend or "-",
            row.status,
            "-" if row.steps is None else f"{row.steps:,}",
            _number(row.best_val_loss),
            _number(row.best_bits_per_token),
            "-" if row.best_step is None else f"{row.best_step:,}",
            _size(row.size),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(row.modified)),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    for row in rows:
        if row.problem:
            typer.echo(f"{row.name}: {row.problem}")
