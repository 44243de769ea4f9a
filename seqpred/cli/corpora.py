"""``seqpred corpus``: list the catalogue of named corpora and download them into the cache folder.

Errors become one line in the root group, as for every command (:mod:`seqpred.cli.app`).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from .app import app

corpus_app = typer.Typer(
    name="corpus",
    help="List and download named corpora.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@corpus_app.command("list")
def list_corpora(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print machine-readable JSON. [default: off]")
    ] = False,
) -> None:
    """List the named corpora: size, whether a verified copy is cached (and where), and what each is."""
    from ..catalogue import CATALOGUE, cache_dir, cache_path, status

    rows: list[dict[str, Any]] = []
    for name in sorted(CATALOGUE):
        entry = CATALOGUE[name]
        rows.append(
            {
                "name": name,
                "size": entry.size,
                "sha256": entry.sha256,
                "status": status(entry),
                "path": str(cache_path(entry)),
                "url": entry.source_url(),
                "homepage": entry.homepage,
                "licence": entry.licence,
                "description": entry.description,
            }
        )
    if as_json:
        typer.echo(json.dumps({"cache_dir": str(cache_dir()), "corpora": rows}, indent=2))
        return
    cached_label = {"ok": "yes", "missing": "no", "mismatch": "corrupt"}
    header = ("corpus", "size", "cached", "description")
    table = [header] + [
        (r["name"], f"{r['size']:,} bytes", cached_label[r["status"]], r["description"]) for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    indent = " " * (sum(widths) + 2 * len(widths))
    for row, info in zip(table, [None, *rows], strict=True):
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        typer.echo("  ".join([*cells, row[-1]]))
        if info is not None and info["status"] == "ok":
            typer.echo(f"{indent}cached at {info['path']}")
        elif info is not None and info["status"] == "mismatch":
            typer.echo(f"{indent}{info['path']} fails verification; download it again with --force")
    typer.echo(f"cache folder: {cache_dir()}")


@corpus_app.command("download")
def download_corpus(
    name: Annotated[str, typer.Argument(help="Catalogue name (see seqpred corpus list).", metavar="NAME")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Download again even if a verified copy is cached. [default: off]"),
    ] = False,
) -> None:
    """Download corpus NAME into the cache folder, verify its size and SHA-256, and print its path.

    Only the path goes to standard output, so $(seqpred corpus download NAME) can feed another
    command; a progress bar (on a terminal) and one note on what happened go to standard error, and
    on failure only the error line.
    """
    from ..catalogue import cache_path, download, get_entry
    from ..progress import display, task

    entry = get_entry(name)
    folder = cache_path(entry).parent

    def received() -> float:  # the download's temporary file, as it grows
        return max((p.stat().st_size for p in folder.glob(f".{entry.filename}.*.part")), default=0)

    with display(), task(f"downloading {name}", total=entry.size, unit="bytes", poll=received):
        result = download(name, force=force)
    if result.downloaded:
        typer.echo(f"{name}: downloaded from {result.url}; size and sha256 verified", err=True)
    else:
        typer.echo(f"{name}: already cached and verified (use --force to download again)", err=True)
    typer.echo(str(result.path))


app.add_typer(corpus_app, name="corpus")
