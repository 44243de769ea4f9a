"""Console progress for training: a rich progress bar on stderr, or nothing with ``--quiet``."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ConsoleReporter:
    def __init__(self, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        if not self.console.is_terminal and console is None:
            # A log file or a pipe has no width; rich's default of 80 columns would cut the counters.
            self.console = Console(stderr=True, width=160)
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.val = "-"

    def start(self, total_steps: int, first_step: int, info: dict[str, Any]) -> None:
        if self.quiet:
            return
        self.console.print(
            f"training on {info['backend']}: {info['parameters']:,} parameters, vocabulary {info['vocab']}, "
            f"{info['train_tokens']:,} training and {info['val_tokens']:,} validation tokens, "
            f"{info['steps_per_epoch']:,} steps per epoch"
        )
        self.progress = Progress(
            TextColumn("step"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn(
                "epoch {task.fields[epoch]}  loss {task.fields[loss]}  val {task.fields[val]}  "
                "{task.fields[speed]} tok/s"
            ),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=total_steps, completed=first_step, epoch=1, loss="-", val=self.val, speed="-"
        )

    def step(self, record: dict[str, Any]) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(
                self.task,
                completed=record["step"],
                epoch=record["epoch"],
                loss=f"{record['loss']:.4f}",
                speed=f"{record['tokens_per_s']:,.0f}",
            )

    def validation(self, record: dict[str, Any]) -> None:
        self.val = f"{record['loss']:.4f}"
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, val=self.val)

    def end(self, result: Any) -> None:
        if self.progress is not None:
            self.progress.stop()


class JsonReporter:
    """One JSON object per line on stdout for every step and validation, for machines."""

    def __init__(self, stream=None):
        import sys

        self.stream = stream or sys.stdout

    def _emit(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()

    def start(self, total_steps: int, first_step: int, info: dict[str, Any]) -> None:
        self._emit({"event": "start", "total_steps": total_steps, "first_step": first_step, **info})

    def step(self, record: dict[str, Any]) -> None:
        self._emit(record)

    def validation(self, record: dict[str, Any]) -> None:
        self._emit(record)

    def end(self, result: Any) -> None:
        self._emit(
            {
                "event": "end",
                "status": result.status,
                "steps": result.steps,
                "run": str(result.run),
                "val": result.val,
                "best_val_loss": result.best_val,
                "seconds": result.seconds,
            }
        )


def make_reporter(log_format: str, quiet: bool):
    if log_format == "json":
        return JsonReporter()
    return ConsoleReporter(quiet=quiet)
