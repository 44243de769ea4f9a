"""Training curves as TensorBoard event files: a reporter that writes what the trainer reports.

Needs ``tensorboardX`` (``pip install 'seqpred[tensorboard]'``), imported only when a
:class:`TensorBoardReporter` is made. Scalars, by the global step of ``history.jsonl``:

* ``train/loss`` (nats), ``train/bits_per_token``, ``train/lr``, ``train/tokens_per_s``;
* ``validation/loss`` (nats), ``validation/bits_per_token``, ``validation/perplexity``.

A resumed run continues the same series: the writer starts with a purge point at the first step it
will train, so TensorBoard drops what an earlier process wrote after the checkpoint resumed from,
as ``history.jsonl`` does.

From Python, next to any other reporter::

    from seqpred.progress import ConsoleReporter
    from seqpred.tensorboard import TensorBoardReporter
    from seqpred.train import train

    with TensorBoardReporter("tb/sonnets", then=ConsoleReporter()) as reporter:
        train(config, "runs/sonnets", reporter=reporter)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .errors import SeqpredError, UsageError
from .metrics import bits

INSTALL = "pip install 'seqpred[tensorboard]'"

#: Seconds between writes to disk; validations and the end of a run also write at once.
FLUSH_SECONDS = 10


class TensorBoardReporter:
    """Write the training and validation scalars to TensorBoard event files in ``logdir``.

    Every event is then passed on to ``then`` (the console's reporter, say), if one is given.
    """

    def __init__(self, logdir: str | Path, then: Any = None):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise SeqpredError(f"--tensorboard needs tensorboardX: {INSTALL}") from None
        self.logdir = Path(logdir)
        if self.logdir.exists() and not self.logdir.is_dir():
            raise UsageError(f"--tensorboard {self.logdir}: exists and is not a folder")
        self.then = then
        self._writer_class = SummaryWriter
        self.writer: Any = None

    def __enter__(self) -> TensorBoardReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, total_steps: int, first_step: int, info: dict[str, Any]) -> None:
        try:
            self.logdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or exc
            raise UsageError(f"--tensorboard {self.logdir}: cannot write there ({reason})") from None
        self.close()
        _wait_for_a_new_second(self.logdir)
        _register_new_files_only()
        # Steps from first_step + 1 on are trained now; anything an earlier process wrote for them goes.
        try:
            self.writer = self._writer_class(
                f"{NEW_FILES_ONLY}:{self.logdir.resolve()}",
                purge_step=first_step + 1,
                flush_secs=FLUSH_SECONDS,
            )
        except FileExistsError as exc:
            raise UsageError(
                f"--tensorboard {self.logdir}: {Path(exc.filename).name} is already there (a link, or "
                f"another run's file); seqpred writes new event files only"
            ) from None
        if self.then is not None:
            self.then.start(total_steps, first_step, info)

    def step(self, record: dict[str, Any]) -> None:
        if self.writer is not None:
            step = record["step"]
            self.writer.add_scalar("train/loss", record["loss"], step)
            self.writer.add_scalar("train/bits_per_token", bits(record["loss"]), step)
            self.writer.add_scalar("train/lr", record["lr"], step)
            self.writer.add_scalar("train/tokens_per_s", record["tokens_per_s"], step)
        if self.then is not None:
            self.then.step(record)

    def validation(self, record: dict[str, Any]) -> None:
        if self.writer is not None:
            step = record["step"]
            for name in ("loss", "bits_per_token", "perplexity"):
                self.writer.add_scalar(f"validation/{name}", record[name], step)
            self.writer.flush()  # a validation is also a checkpoint: what it saved, TensorBoard shows
        if self.then is not None:
            self.then.validation(record)

    def end(self, result: Any) -> None:
        self.close()
        if self.then is not None:
            self.then.end(result)

    def close(self) -> None:
        """Write what is pending and close the event file; safe to call more than once."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _wait_for_a_new_second(logdir: Path) -> None:
    """tensorboardX names an event file by the second it opens it in and truncates a file of the same
    name: a run resumed within a second of the last one would erase its events. Waiting keeps every
    file, and their names in the order TensorBoard must read them."""
    while any(logdir.glob(f"events.out.tfevents.{int(time.time())}.*")):
        time.sleep(0.05)


#: The scheme under which tensorboardX hands seqpred the event files to open (its writer-factory
#: extension point, the one its S3 support uses): each is created new, never through a link.
NEW_FILES_ONLY = "seqpred-new-file"


class _NewFilesOnly:
    """tensorboardX writer factory: the logdir is made by the reporter; each event file is created
    with O_EXCL and O_NOFOLLOW, so a link or file planted at its name is refused, never written through."""

    @staticmethod
    def _path(path: str) -> str:
        return path[len(NEW_FILES_ONLY) + 1 :]

    def directory_check(self, path: str) -> None:
        if not os.path.isdir(self._path(path)):
            raise FileNotFoundError(self._path(path))

    def open(self, path: str):
        path = self._path(path)
        flags = (
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        )
        return os.fdopen(os.open(path, flags, 0o644), "wb")


def _register_new_files_only() -> None:
    from tensorboardX.record_writer import register_writer_factory

    register_writer_factory(NEW_FILES_ONLY, _NewFilesOnly())
