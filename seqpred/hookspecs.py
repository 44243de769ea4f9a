"""The hooks a seqpred plugin may implement. Each takes a callback or object to add to."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import typer

    from .backend import Backend

hookspec = pluggy.HookspecMarker("seqpred")
hookimpl = pluggy.HookimplMarker("seqpred")


@hookspec
def seqpred_register_backends(register: Callable[[Backend], None]) -> None:
    """Call ``register(backend)`` once for each backend this plugin provides."""


@hookspec
def seqpred_register_commands(app: typer.Typer) -> None:
    """Add subcommands to the ``seqpred`` command line (``@app.command()``)."""
