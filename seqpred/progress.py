"""Progress while seqpred works: bars on a terminal, a plain line at a steady interval elsewhere (a log
file, a pipe, CI), nothing with ``--quiet``.

Anything that takes time opens a task::

    with progress.task("validation", total=tokens, unit="tokens") as work:
        ...
        work.advance(n)

and the display that is active (:func:`display`, or a training's :class:`ConsoleReporter`) shows it;
without one a task costs nothing. Training's own row (step, loss, tokens per second) is one more task
of the same display, so a log gets one line per open task every :data:`INTERVAL` seconds, and a
terminal one bar per task.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console

#: Seconds between two log lines of a task when the output is not a terminal.
INTERVAL_ENV = "SEQPRED_PROGRESS_INTERVAL"
INTERVAL = 30.0


def interval() -> float:
    """The log interval: :data:`INTERVAL` seconds, or ``SEQPRED_PROGRESS_INTERVAL``."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, INTERVAL))
    except ValueError:
        return INTERVAL
    return value if value > 0 and math.isfinite(value) else INTERVAL


def clock(seconds: float) -> str:
    """``0:01:05`` for 65 seconds."""
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def stderr_console() -> Console:
    console = Console(stderr=True)
    if not console.is_terminal:
        # A log file or a pipe has no width; rich's default of 80 columns would cut the lines.
        console = Console(stderr=True, width=160)
    return console


# -- tasks ----------------------------------------------------------------------------------------


class Task:
    """A piece of work in progress: ``completed`` of ``total`` (None: unknown) ``unit``; ``fields``
    are texts shown after it (``loss 1.2345``), an empty one not at all."""

    def __init__(self, description: str, total: float | None = None, unit: str = "", **fields: Any):
        self.description = description
        self.total = total
        self.unit = unit
        self.completed = 0.0
        self.initial = 0.0  # what was done before this process: a resumed training's first step
        self.fields: dict[str, Any] = dict(fields)
        self.started = time.monotonic()

    def advance(self, amount: float = 1) -> None:
        self.update(completed=self.completed + amount)

    def update(self, completed: float | None = None, **fields: Any) -> None:
        if completed is not None:
            self.completed = completed
        self.fields.update(fields)

    def eta(self) -> float | None:
        """Seconds left at the rate of this process so far, or None when unknown."""
        done = self.completed - self.initial
        elapsed = time.monotonic() - self.started
        if self.total is None or done <= 0 or elapsed <= 0:
            return None
        return (self.total - self.completed) * elapsed / done

    def line(self) -> str:
        """The task as one line of a log."""
        elapsed = clock(time.monotonic() - self.started)
        if self.total is None:
            amount = f"{self.completed:,.0f} {self.unit}".strip() if self.completed else ""
            return f"{self.description}: {amount + ', ' if amount else ''}{elapsed} elapsed"
        share = self.completed / self.total if self.total else 1.0
        eta = self.eta()
        amount = f"{self.completed:,.0f}/{self.total:,.0f} {self.unit}".rstrip()
        details = "".join(f"  {value}" for value in self.fields.values() if value)
        left = f", ETA {clock(eta)}" if eta is not None else ""
        return f"{self.description} {amount} ({share:.0%}){details}  {elapsed} elapsed{left}"


class Display:
    """Where tasks are shown: a subclass shows them (bars, log lines, a GUI); this one shows nothing."""

    def __init__(self, console: Console | None = None):
        self.console = console or stderr_console()

    def open(self, task: Task) -> None: ...
    def refresh(self, task: Task) -> None: ...
    def close(self, task: Task, keep: bool = False) -> None: ...
    def print(self, text: str) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


class BarDisplay(Display):
    """A rich bar per task on a terminal; a finished task's bar goes, unless kept (training's)."""

    def __init__(self, console: Console | None = None):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        super().__init__(console)
        self.progress = Progress(
            SpinnerColumn(finished_text=" "),
            TextColumn("{task.description}"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.fields[details]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._ids: dict[int, Any] = {}

    @staticmethod
    def _details(task: Task) -> str:
        shown = "  ".join(str(value) for value in task.fields.values() if value)
        return f"{task.unit}  {shown}".strip() if task.unit else shown

    def open(self, task: Task) -> None:
        self._ids[id(task)] = self.progress.add_task(
            task.description, total=task.total, completed=int(task.completed), details=self._details(task)
        )

    def refresh(self, task: Task) -> None:
        if id(task) in self._ids:
            self.progress.update(self._ids[id(task)], completed=task.completed, details=self._details(task))

    def close(self, task: Task, keep: bool = False) -> None:
        task_id = self._ids.pop(id(task), None)
        if task_id is not None and not keep:
            self.progress.remove_task(task_id)
        elif task_id is not None:
            self.progress.stop_task(task_id)

    def print(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False)

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        self.progress.stop()


class LineDisplay(Display):
    """One plain line per open task every ``every`` seconds, from a thread, so a log shows life even
    while one long call (a validation, a download) runs."""

    def __init__(self, console: Console | None = None, every: float | None = None):
        super().__init__(console)
        self.every = every if every is not None else interval()
        self.tasks: list[Task] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self, task: Task) -> None:
        with self._lock:
            self.tasks.append(task)

    def close(self, task: Task, keep: bool = False) -> None:
        """Stop showing ``task``; one kept (training's) leaves its final line in the log."""
        with self._lock:
            if task in self.tasks:
                self.tasks.remove(task)
                if keep:
                    self.console.print(task.line(), markup=False, highlight=False, soft_wrap=True)

    def print(self, text: str) -> None:
        with self._lock:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _tick(self) -> None:
        while not self._wake.wait(self.every):
            with self._lock:
                for task in self.tasks:
                    self.console.print(task.line(), markup=False, highlight=False, soft_wrap=True)

    def start(self) -> None:
        self._wake.clear()
        self._thread = threading.Thread(target=self._tick, name="seqpred-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


_active: list[Display] = []


def current() -> Display | None:
    """The display that tasks go to now, if any."""
    return _active[-1] if _active else None


def make_display(console: Console | None = None) -> Display:
    """Bars on a terminal, log lines elsewhere."""
    console = console or stderr_console()
    return BarDisplay(console) if console.is_terminal else LineDisplay(console)


@contextlib.contextmanager
def display(quiet: bool = False, console: Console | None = None) -> Iterator[Display | None]:
    """Show the tasks opened inside the block on stderr (nothing when ``quiet``)."""
    if quiet:
        yield None
        return
    with showing(make_display(console)) as shown:
        yield shown


@contextlib.contextmanager
def showing(shown: Display) -> Iterator[Display]:
    """Send the tasks opened inside the block to ``shown``."""
    shown.start()
    _active.append(shown)
    try:
        yield shown
    finally:
        _active.remove(shown)
        shown.stop()


@contextlib.contextmanager
def task(
    description: str,
    total: float | None = None,
    unit: str = "",
    *,
    poll: Callable[[], float] | None = None,
) -> Iterator[Task]:
    """A task shown by the active display while the block runs. ``poll``: called a few times a
    second for the amount done, for work that cannot report it itself (a file being written)."""
    work = Task(description, total, unit)
    shown = current()
    if shown is None:
        yield work
        return
    tracked = _Tracked(work, shown) if poll is None else _Polled(work, poll, shown)
    shown.open(tracked)
    try:
        yield tracked
    finally:
        if isinstance(tracked, _Polled):
            tracked.stop()
        shown.close(tracked)


class _Tracked(Task):
    """A task whose every update reaches its display."""

    def __init__(self, task: Task, shown: Display):
        self.__dict__.update(task.__dict__)
        self._shown = shown

    def update(self, completed: float | None = None, **fields: Any) -> None:
        super().update(completed, **fields)
        self._shown.refresh(self)


class _Polled(_Tracked):
    """A task whose amount done a thread asks ``poll`` for, four times a second."""

    def __init__(self, task: Task, poll: Callable[[], float], shown: Display):
        super().__init__(task, shown)
        self._poll = poll
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="seqpred-poll", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.25):
            with contextlib.suppress(OSError):
                self.update(completed=self._poll())

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


# -- scoring: validation and evaluation -----------------------------------------------------------


class _CountedModel:
    """A model that advances a task by the tokens each scoring call reads; everything else passes."""

    def __init__(self, model: Any, work: Task):
        self._model = model
        self._work = work

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def evaluate_batch(self, inputs: Any, targets: Any) -> float:
        loss = self._model.evaluate_batch(inputs, targets)
        self._work.advance(inputs.size)
        return loss

    def forward(self, tokens: Any, state: Any) -> Any:
        result = self._model.forward(tokens, state)
        self._work.advance(tokens.size)
        return result


def scoring_tokens(tokens: int, seq_len: int, objective: str, stripes: int) -> int:
    """Tokens the model reads to score ``tokens`` window by window and with the state carried."""
    windows = max(0, tokens - seq_len)
    if objective == "sequence":
        windows = -(-windows // seq_len)
    stripes = max(1, min(stripes, tokens - 1))
    return windows * seq_len + stripes * ((tokens - 1) // stripes)


@contextlib.contextmanager
def scoring(description: str, model: Any, tokens: int, spec: Any, stripes: int = 1) -> Iterator[Any]:
    """``model``, counting the tokens it scores as a task: window by window and then carried."""
    total = scoring_tokens(tokens, spec.seq_len, spec.objective, stripes)
    with task(description, total=total, unit="tokens") as work:
        yield _CountedModel(model, work) if current() is not None else model


# -- training reporters ---------------------------------------------------------------------------


def _device_words(info: dict[str, Any]) -> str:
    device = info.get("device") or "cpu"
    threads = info.get("threads")
    cores = os.cpu_count() or 1
    if threads:
        shown = f"{threads} thread{'s' * (threads != 1)}"
    else:
        shown = f"the framework's default threads, {cores} core{'s' * (cores != 1)}"
    return f"{device} ({shown})"


def start_lines(total_steps: int, first_step: int, info: dict[str, Any]) -> list[str]:
    """What training says when it starts: where, what, how much; and where it resumes."""
    lines = [
        f"training on {info['backend']}, device {_device_words(info)}, into {info.get('run', '?')}: "
        f"{info['parameters']:,} parameters, vocabulary {info['vocab']}, "
        f"{info['train_tokens']:,} training and {info['val_tokens']:,} validation tokens, "
        f"{info['steps_per_epoch']:,} steps per epoch"
    ]
    if info.get("resumed"):
        lines.append(f"resuming from step {first_step:,} of {total_steps:,}")
    return lines


def validation_line(record: dict[str, Any]) -> str:
    return (
        f"validation at step {record['step']:,}: loss {record['loss']:.4f} nats, "
        f"{record['bits_per_token']:.4f} bits/token (best {record['best']:.4f})"
    )


def sample_lines(record: dict[str, Any]) -> list[str]:
    return [f"sample at step {record['step']:,}:", *str(record["sample"]).splitlines(), ""]


class ConsoleReporter:
    """Training on stderr: a bar on a terminal, a line every :data:`INTERVAL` seconds elsewhere,
    and a line for each validation (with its sample, under ``--sample-every``); nothing when quiet."""

    def __init__(self, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.console = console
        self.shown: Display | None = None
        self._own = False
        self.row: Task | None = None

    def start(self, total_steps: int, first_step: int, info: dict[str, Any]) -> None:
        if self.quiet:
            return
        self.shown = current()
        if self.shown is None:
            self.shown, self._own = make_display(self.console), True
            self.shown.start()
            _active.append(self.shown)
        for line in start_lines(total_steps, first_step, info):
            self.shown.print(line)
        row = Task("step", total=total_steps, epoch="", loss="", val="", speed="")
        row.completed = row.initial = first_step
        self.row = _Tracked(row, self.shown)
        self.shown.open(self.row)

    def step(self, record: dict[str, Any]) -> None:
        if self.row is not None:
            self.row.update(
                completed=record["step"],
                epoch=f"epoch {record['epoch']}",
                loss=f"loss {record['loss']:.4f}",
                speed=f"{record['tokens_per_s']:,.0f} tok/s",
            )

    def validation(self, record: dict[str, Any]) -> None:
        if self.row is None or self.shown is None:
            return
        self.row.update(val=f"val {record['loss']:.4f}")
        if isinstance(self.shown, LineDisplay):
            self.shown.print(validation_line(record))
        if "sample" in record:
            for line in sample_lines(record):
                self.shown.print(line)

    def end(self, result: Any) -> None:
        if self.shown is not None and self.row is not None:
            self.shown.close(self.row, keep=True)
        if self._own and self.shown is not None:
            _active.remove(self.shown)
            self.shown.stop()
        self.shown, self.row, self._own = None, None, False


class JsonReporter:
    """One JSON object per line on stdout for every step and validation, for machines."""

    def __init__(self, stream=None):
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
                "best_step": getattr(result, "best_step", None),
                "seconds": result.seconds,
                "tokens_per_s": getattr(result, "tokens_per_second", None),
            }
        )


def make_reporter(log_format: str, quiet: bool):
    if log_format == "json":
        return JsonReporter()
    return ConsoleReporter(quiet=quiet)


# -- the sample shown at validation ---------------------------------------------------------------

#: Tokens of the sample that ``--sample-every`` shows.
SAMPLE_LENGTH = 200


class ValidationSample:
    """Text generated from the weights being trained, as ``seqpred generate`` would from a checkpoint
    of this moment: a second model of the same backend, its weights copied in at each sample."""

    def __init__(self, run: Any):
        self.run = run
        self.generator: Any = None

    def __call__(self, model: Any, step: int, length: int = SAMPLE_LENGTH) -> str:
        from .generate import Generator

        weights = model.get_weights()
        if self.generator is None:
            self.run.weights = weights
            self.generator = Generator(self.run, self.run.backend, device=self.run.meta.get("device", "cpu"))
        else:
            self.generator.model.set_weights(weights)
        return self.generator.generate("", length, seed=step).samples[0]


def summary_lines(result: Any) -> list[str]:
    """Training's last words: what it did, how fast, its best validation, where the run is and how to
    generate from it."""
    steps = len(result.losses)
    lines = [
        f"trained {steps:,} step{'s' * (steps != 1)} in {clock(result.seconds)} "
        f"({result.tokens_per_second:,.0f} tokens/s)"
        + (
            f"; best validation loss {result.best_val:.4f} nats "
            f"({result.best_val / math.log(2):.4f} bits/token) at step {result.best_step:,}"
            if result.best_val is not None and result.best_step is not None
            else ""
        )
    ]
    notes = {"early-stopped": " (stopped early: no improvement)", "time-limit": " (time limit reached)"}
    lines.append(f"saved run to {result.run} at step {result.steps:,}{notes.get(result.status, '')}")
    lines.append(f"generate from it with: seqpred generate {result.run}")
    return lines
