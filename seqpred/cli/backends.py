"""``seqpred backends``: the installed backends and what each can do."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from .app import app


@app.command()
def backends(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print machine-readable JSON. [default: off]")
    ] = False,
) -> None:
    """List the backends and their status.

    One row per backend plugin: name, distribution and version, devices and objectives it supports,
    whether it trains (no: inference only), and whether it can be used: ok, unusable (its framework
    is not installed: the command to install it), failed (the plugin did not load, with the reason)
    or disabled (by SEQPRED_LOAD_PLUGINS).
    """
    from ..models import missing_requirements
    from ..registry import get_registry

    registry = get_registry()
    registry.report_warnings()
    rows: list[dict[str, Any]] = []
    for info in registry.plugins:
        names = info.backends or [info.entry_point]
        for name in names:
            entry = registry.backends.get(name)
            backend = entry.backend if entry else None
            status, error = info.status, info.error
            missing = missing_requirements(backend) if backend is not None else []
            if status == "ok" and missing:
                how = getattr(backend, "install", "") or f"pip install {' '.join(missing)}"
                status, error = "unusable", f"needs {', '.join(missing)}: {how}"
            rows.append(
                {
                    "name": name,
                    "distribution": info.distribution,
                    "version": info.version,
                    "status": status,
                    "error": error,
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
