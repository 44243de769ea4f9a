"""The ``seqpred`` command line: a thin layer over the Python API (:mod:`seqpred.train`,
:mod:`seqpred.generate`, :mod:`seqpred.evaluation`, ...), one module per family of commands.

Importing it imports no deep-learning framework; backends load theirs when a command uses them.
"""

from __future__ import annotations

from . import backends, corpora, deployment, generation, runs, training  # noqa: F401  (they register commands)
from .app import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, app, fail

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "app", "fail", "main"]


def main() -> None:
    app(prog_name="seqpred")
