"""The runs under a folder, one row each, as ``seqpred runs`` lists them.

A run is a folder holding ``run.json``; the search does not descend into a run. A folder whose
``run.json`` cannot be read is listed too, with what is wrong, so a damaged run is seen, not hidden.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import runs
from .errors import RunError


@dataclass
class RunRow:
    """One run: where it is, what trained it, how far, how well, and how big."""

    name: str  # the folder, relative to the folder searched
    path: str
    backend: str | None
    status: str  # training, finished, early-stopped, time-limit, interrupted; damaged
    steps: int | None
    best_val_loss: float | None
    best_bits_per_token: float | None
    best_step: int | None
    size: int  # bytes of the run's files
    modified: float  # seconds since the epoch, of its newest file
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_runs(folder: Path) -> list[Path]:
    """Every run folder at or under ``folder``, by name."""
    if runs.is_run(folder):
        return [folder]
    found: list[Path] = []
    for root, dirs, _files in os.walk(folder):
        here = Path(root)
        if runs.is_run(here):
            found.append(here)
            dirs.clear()  # a run's own files are not searched
        else:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
    return sorted(found)


def _files(path: Path) -> list[os.stat_result]:
    return [entry.stat() for entry in path.iterdir() if entry.is_file() and not entry.is_symlink()]


def run_row(path: Path, folder: Path) -> RunRow:
    """The row of the run in ``path``; a run.json that cannot be read gives status ``damaged``."""
    stats = _files(path)
    name = str(path.relative_to(folder)) if path != folder else path.name
    row = RunRow(
        name=name if name != "." else str(path),
        path=str(path),
        backend=None,
        status="damaged",
        steps=None,
        best_val_loss=None,
        best_bits_per_token=None,
        best_step=None,
        size=sum(s.st_size for s in stats),
        modified=max((s.st_mtime for s in stats), default=0.0),
    )
    try:
        meta = runs.check_format(runs.read_json(path / runs.RUN_FILE, "run metadata"), path)
        record = runs.RunRecord.from_dict(meta, path)
    except RunError as exc:
        row.problem = str(exc)
        return row
    row.backend, row.status, row.steps = record.backend, record.status, record.step
    loss = record.best_val_loss
    if isinstance(loss, int | float) and not isinstance(loss, bool) and math.isfinite(loss):
        row.best_val_loss, row.best_bits_per_token = float(loss), float(loss) / math.log(2)
        row.best_step = record.best_step
    return row


def list_runs(folder: str | Path) -> list[RunRow]:
    """The rows of every run under ``folder``; a RunError when the folder does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(
            f"{folder}: no such folder; runs are written by seqpred train CORPUS --out {folder}/NAME"
        )
    return [run_row(path, folder) for path in find_runs(folder)]
