"""Writing a run folder: preparing it, locking it against a second training, and committing
checkpoints atomically. Reading one is :mod:`seqpred.runs`' job.

A folder is at every moment either a loadable run or something ``--force`` replaces: a training
that dies before its first checkpoint leaves only files of a run (``model.json``, ``vocab.json``,
...) without ``run.json``, and :meth:`RunWriter.prepare` replaces such a folder under ``--force``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import runs
from .errors import RunError, UsageError
from .runs import RunRecord

LOCK_FILE = ".lock"
_PROBE = ".write-test"

#: Every file a training writes into its folder: a folder holding nothing else is seqpred's.
RUN_FILES = frozenset(
    {
        runs.RUN_FILE,
        runs.MODEL_FILE,
        runs.TRAIN_FILE,
        runs.VOCAB_FILE,
        runs.LATEST_FILE,
        runs.BEST_FILE,
        runs.OPTIMIZER_FILE,
        runs.CARRIED_STATE_FILE,
        runs.HISTORY_FILE,
        LOCK_FILE,
        _PROBE,
    }
)


def _left_by_training(path: Path) -> bool:
    """Whether every entry of the folder is a run file or a temporary file of one."""
    return all(
        entry.is_file()
        and (entry.name in RUN_FILES or (entry.name.startswith(".") and entry.name.endswith(".tmp")))
        for entry in path.iterdir()
    )


class RunWriter:
    """The run folder ``path`` as one training writes it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def prepare(self, *, force: bool) -> None:
        """Make the folder for a new run, refusing to take one that holds anything else."""
        out = self.path
        if out.is_symlink() or (out.exists() and not out.is_dir()):
            raise UsageError(f"{out}: exists and is not a folder")
        if out.exists():
            if runs.is_run(out) and not force:
                raise UsageError(
                    f"{out}: already holds a run; use --resume {out} to continue it or --force to replace it"
                )
            if not runs.is_run(out) and not _left_by_training(out):
                raise UsageError(f"{out}: folder is not empty and holds no run; choose a new --out")
            if not runs.is_run(out) and not force and any(p.name != LOCK_FILE for p in out.iterdir()):
                raise UsageError(
                    f"{out}: holds the files of a training that stopped before its first checkpoint; "
                    f"use --force to replace them"
                )
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"{out}: cannot write there ({exc.strerror or exc}); choose another --out"
            ) from None
        self._check_writable("choose another --out")

    def _check_writable(self, advice: str) -> None:
        """Refuse (exit 2) a folder in which no new file can be made: read-only, or not ours."""
        try:
            # a new file, never through a link planted at a fixed name
            fd, probe = tempfile.mkstemp(prefix=_PROBE + ".", suffix=".tmp", dir=self.path)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot write there ({exc.strerror or exc}); {advice}") from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the folder, so two trainings never write one run."""
        handle = self._open_lock()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise UsageError(
                f"{self.path}: another seqpred training is writing this run folder; "
                f"wait for it to finish or stop it first"
            ) from None
        try:
            self._check_writable("make it writable (chmod u+w) or copy the run elsewhere")
            self.remove_stale_temporaries()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def _open_lock(self) -> Any:
        """The lock file, opened without following a link: one planted there is refused."""
        path = self.path / LOCK_FILE
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o666)
        except OSError as exc:
            if path.is_symlink():
                raise UsageError(
                    f"{path}: is a symbolic link; seqpred never writes through one: remove it"
                ) from None
            raise UsageError(
                f"{self.path}: cannot write there ({exc.strerror or exc}); check its permissions"
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UsageError(f"{path}: is not a regular file; remove it")
        return os.fdopen(fd, "a")

    def remove_stale_temporaries(self) -> None:
        """Temporary files of a write that a kill cut short; the lock says no one else is writing."""
        for path in self.path.glob(".*.tmp"):
            path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove the files of the run being replaced (``--force``), ``run.json`` first."""
        for name in sorted(RUN_FILES - {LOCK_FILE}, key=lambda n: n != runs.RUN_FILE):
            (self.path / name).unlink(missing_ok=True)

    def start(self, spec: Any, config: Any, vocab: Any, backend: str, device: str) -> RunRecord:
        """Write what the run is (spec, configuration, vocabulary) and an empty history."""
        runs.atomic_write_json(self.path / runs.MODEL_FILE, spec.to_dict())
        runs.atomic_write_json(self.path / runs.TRAIN_FILE, config.to_dict())
        runs.atomic_write_bytes(self.path / runs.VOCAB_FILE, vocab.to_json().encode("utf-8"))
        runs.atomic_write_bytes(self.path / runs.HISTORY_FILE, b"")
        return RunRecord(backend=backend, device=device)

    def checkpoint(
        self,
        record: RunRecord,
        weights: Mapping[str, np.ndarray],
        *,
        optimizer: Mapping[str, np.ndarray] | None,
        carried: np.ndarray | None,
        improved: bool,
    ) -> None:
        """Commit one checkpoint: weights (and best), optimizer state, carried state, ``run.json`` last.

        Either every file is replaced or none is (a full disk leaves the previous checkpoint).
        """
        try:
            data = runs.tensor_bytes(weights, {"step": str(record.step)})
            with runs.Commit() as commit:  # every file written before any replaces its old version
                commit.write_bytes(self.path / runs.LATEST_FILE, data)
                if improved:
                    commit.write_bytes(self.path / runs.BEST_FILE, data)
                if optimizer is not None:
                    commit.write_tensors(self.path / runs.OPTIMIZER_FILE, optimizer)
                if carried is not None:
                    commit.write_tensors(self.path / runs.CARRIED_STATE_FILE, {"state": carried})
                commit.write_json(self.path / runs.RUN_FILE, record.to_dict())
        except OSError as exc:
            previous = self.committed_step()
            where = (
                f"the previous checkpoint (step {previous}) is intact; free some space and continue with: "
                f"seqpred train --resume {self.path}"
                if previous is not None
                else "no checkpoint was saved; free some space and start again with --force"
            )
            raise RunError(
                f"{self.path}: could not save the checkpoint of step {record.step} "
                f"({exc.strerror or exc}); {where}"
            ) from None

    def committed_step(self) -> int | None:
        """The step of the checkpoint on disk, or None when there is none."""
        try:
            return int(runs.read_json(self.path / runs.RUN_FILE, "run metadata").get("step", 0))
        except (RunError, ValueError, TypeError, AttributeError):
            return None

    def finish(self, record: RunRecord) -> None:
        """Record the run's final status (finished, early-stopped, interrupted, ...)."""
        runs.atomic_write_json(self.path / runs.RUN_FILE, record.to_dict())
