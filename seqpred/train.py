"""Training orchestration: the core makes the data, weights, schedule and checkpoints; the backend
does the maths of one batch.

A run is resumable at every checkpoint: the batch order is a function of (seed, step), the dropout
masks of (seed, step), the schedule's state is saved in ``run.json`` and Adam's moments in
``optimizer.safetensors``. Ctrl-C or SIGTERM finishes the current step, saves a checkpoint and
stops with exit code 130.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import runs
from .backend import Model, OptimizerSettings
from .config import RESUMABLE, TrainConfig
from .corpus import read_corpus
from .data import StripeBatches, TrainBatches, split_validation
from .errors import BackendError, CorpusError, RunError, SeqpredError, UsageError
from .metrics import summary
from .models import build_model
from .registry import get_registry
from .schedule import Schedule
from .scoring import carried_loss, validation_stripes
from .scoring import window_loss as evaluate
from .spec import ModelSpec
from .vocab import Vocab, build_char_vocab_and_ids
from .weights import init_weights

LOCK_FILE = ".lock"


class TrainingInterrupted(SeqpredError):
    """Ctrl-C or SIGTERM: a checkpoint was saved; exit code 130."""

    exit_code = 130


class Reporter(Protocol):
    """What a user interface hears from a training run."""

    def start(self, total_steps: int, first_step: int, info: dict[str, Any]) -> None: ...
    def step(self, record: dict[str, Any]) -> None: ...
    def validation(self, record: dict[str, Any]) -> None: ...
    def end(self, result: TrainResult) -> None: ...


class SilentReporter:
    def start(self, total_steps, first_step, info): ...
    def step(self, record): ...
    def validation(self, record): ...
    def end(self, result): ...


@dataclass
class TrainResult:
    run: Path
    steps: int
    val: dict[str, float] | None
    best_val: float | None
    status: str = "finished"
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    tokens_per_second: float = 0.0


def encode_corpus(text: str, level: str, vocab: Vocab | None = None) -> tuple[Vocab, np.ndarray]:
    """Vocabulary (built from ``text`` unless given) and the token ids of ``text``."""
    if vocab is not None:
        return vocab, vocab.encode_corpus(text)
    if level == "char":
        return build_char_vocab_and_ids(text)
    vocab = Vocab.build(text, "word")
    return vocab, vocab.encode(text)


class _StopSignals:
    """Turn SIGINT and SIGTERM into a flag checked between steps, so no step is cut in half.

    A second Ctrl-C while the checkpoint is written interrupts at once.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _locked(folder: Path):
    """Hold an exclusive lock on ``folder`` so two trainings never write one run."""
    handle = (folder / LOCK_FILE).open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UsageError(
            f"{folder}: another seqpred training is writing this run folder; "
            f"wait for it to finish or stop it first"
        ) from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


class Trainer:
    """One training run writing to one run folder."""

    def __init__(
        self,
        config: TrainConfig | None,
        out: str | Path,
        *,
        reporter: Reporter | None = None,
        force: bool = False,
        resume: bool = False,
        overrides: dict[str, Any] | None = None,
    ):
        self.out = Path(out)
        self.reporter = reporter or SilentReporter()
        self.force = force
        self.resume = resume
        self.config = config if not resume else self._resumed_config(overrides or {})
        self._carried: np.ndarray | None = None  # --state carry: the state the next batch starts from
        if self.config is None:
            raise UsageError("a training configuration is needed")

    def _resumed_config(self, overrides: dict[str, Any]) -> TrainConfig:
        if not self.out.is_dir():
            raise RunError(f"{self.out}: no such run folder to resume")
        runs.check_format(runs.read_json(self.out / runs.RUN_FILE, "run metadata"), self.out)
        stored = runs.read_json(self.out / runs.TRAIN_FILE, "training configuration")
        # Runs written before the option existed had dropout after the last layer too.
        stored.setdefault("output_dropout", True)
        fixed = sorted(
            k for k, v in overrides.items() if v is not None and k not in RESUMABLE and stored.get(k) != v
        )
        if fixed:
            names = ", ".join("--" + k.replace("_", "-") for k in fixed)
            raise UsageError(f"cannot change {names} when resuming; start a new run instead")
        try:
            config = TrainConfig(**stored)
        except TypeError as exc:
            raise RunError(f"{self.out / runs.TRAIN_FILE}: {exc}") from None
        changes = {k: v for k, v in overrides.items() if v is not None and k in RESUMABLE}
        config = replace(config, **changes)
        config.check()
        return config

    # -- folder ----------------------------------------------------------------------------
    def _prepare_folder(self) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise UsageError(f"{out}: exists and is not a folder")
        if runs.is_run(out) and not self.force:
            raise UsageError(
                f"{out}: already holds a run; use --resume {out} to continue it or --force to replace it"
            )
        if out.exists() and not runs.is_run(out) and any(p.name != LOCK_FILE for p in out.iterdir()):
            raise UsageError(f"{out}: folder is not empty and holds no run; choose a new --out")
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UsageError(
                f"{out}: cannot write there ({exc.strerror or exc}); choose another --out"
            ) from None

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of a write that a kill cut short; the lock says no one else is writing."""
        for path in self.out.glob(".*.tmp"):
            path.unlink(missing_ok=True)

    def _clear_previous_run(self) -> None:
        for name in (
            runs.RUN_FILE,
            runs.LATEST_FILE,
            runs.BEST_FILE,
            runs.OPTIMIZER_FILE,
            runs.CARRIED_STATE_FILE,
            runs.HISTORY_FILE,
        ):
            (self.out / name).unlink(missing_ok=True)

    # -- run -------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        config = self.config
        stored_vocab = None
        if self.resume:
            stored = runs.load_run(self.out, "latest")
            stored_vocab = stored.vocab
        text = read_corpus(config.corpus, lower=config.lower)
        vocab, ids = encode_corpus(text, config.level, stored_vocab)
        del text  # the ids are all training needs; a large corpus should not be held twice
        if len(vocab) < 2:
            raise CorpusError(
                f"{config.corpus}: the corpus has only one distinct symbol; nothing to predict: "
                f"give a text with at least two different {config.level}s"
            )
        spec = config.model_spec(len(vocab))
        train_ids, val_ids = split_validation(ids, config.val_fraction, spec.seq_len)
        if config.state == "carry":
            batches = StripeBatches(train_ids, spec.seq_len, config.batch_size, config.seed)
        else:
            batches = TrainBatches(train_ids, spec.seq_len, config.batch_size, spec.objective, config.seed)
        total_steps = batches.batches_per_epoch * config.epochs
        if config.max_steps is not None:
            total_steps = min(total_steps, config.max_steps)
        schedule = Schedule(
            config.schedule,
            config.lr,
            total_steps,
            config.warmup,
            config.min_lr,
            config.plateau_factor,
            config.plateau_patience,
        )

        get_registry().trainer(config.backend)  # an unknown or inference-only one: before any folder is made
        if not self.resume:
            self._prepare_folder()
        with _locked(self.out):
            self._remove_stale_temporaries()
            model = build_model(config.backend, spec, config.device, config.seed)
            if config.state == "carry" and type(model).train_batch_carried is Model.train_batch_carried:
                raise BackendError(
                    f"backend {config.backend!r} cannot train with --state carry (its model has no "
                    f"train_batch_carried); use --state reset"
                )
            model.configure_training(OptimizerSettings(clip=config.clip))
            if self.resume:
                meta = self._restore(model, stored, schedule)
            else:
                if self.force:
                    self._clear_previous_run()
                model.set_weights(init_weights(spec, config.seed))
                meta = self._start(spec, vocab)
                # A checkpoint at step 0 makes the folder a loadable run from the first moment.
                self._checkpoint(model, meta, 0, 0, 0.0, schedule, False)
            return self._loop(model, spec, batches, val_ids, total_steps, schedule, meta)

    def _start(self, spec: ModelSpec, vocab: Vocab) -> dict[str, Any]:
        runs.atomic_write_json(self.out / runs.MODEL_FILE, spec.to_dict())
        runs.atomic_write_json(self.out / runs.TRAIN_FILE, self.config.to_dict())
        runs.atomic_write_bytes(self.out / runs.VOCAB_FILE, vocab.to_json().encode("utf-8"))
        runs.atomic_write_bytes(self.out / runs.HISTORY_FILE, b"")
        meta = runs.new_meta(self.config.backend)
        meta.update(
            device=self.config.device,
            status="training",
            step=0,
            tokens=0,
            seconds=0.0,
            best_val_loss=None,
            best_step=None,
            waited=0,
            schedule={},
        )
        return meta

    def _restore(self, model: Model, stored: runs.Run, schedule: Schedule) -> dict[str, Any]:
        meta = stored.meta
        model.set_weights(stored.weights)
        if (self.out / runs.OPTIMIZER_FILE).exists():
            model.set_optimizer_state(runs.load_tensors(self.out / runs.OPTIMIZER_FILE))
        if self.config.state == "carry" and (self.out / runs.CARRIED_STATE_FILE).exists():
            self._carried = runs.load_tensors(self.out / runs.CARRIED_STATE_FILE)["state"]
        schedule.load_state(meta.get("schedule") or {})
        # Records written after the checkpoint belong to steps that will be trained again.
        step = int(meta.get("step", 0))
        history = self.out / runs.HISTORY_FILE
        runs.atomic_write_bytes(history, runs.history_until(history, step))
        runs.atomic_write_json(self.out / runs.TRAIN_FILE, self.config.to_dict())
        meta["status"] = "training"
        return meta

    def _loop(self, model, spec, batches, val_ids, total_steps, schedule, meta) -> TrainResult:
        config = self.config
        first = int(meta["step"])
        best = meta["best_val_loss"] if meta.get("best_val_loss") is not None else math.inf
        tokens = int(meta.get("tokens", 0))
        seconds_before = float(meta.get("seconds", 0.0))
        self.reporter.start(
            total_steps,
            first,
            {
                "backend": config.backend,
                "parameters": spec.parameter_count(),
                "vocab": spec.vocab_size,
                "train_tokens": len(batches.ids),
                "val_tokens": len(val_ids),
                "steps_per_epoch": batches.batches_per_epoch,
                "resumed": self.resume,
            },
        )
        result = TrainResult(run=self.out, steps=first, val=None, best_val=None)
        carry = config.state == "carry"
        stripes = validation_stripes(len(val_ids), spec.seq_len)
        started = time.perf_counter()
        run_tokens = 0
        step = first
        status = "finished"
        with _StopSignals() as signals, (self.out / runs.HISTORY_FILE).open("a", encoding="utf-8") as history:
            stream: Iterator = batches.iter_from(first)
            while step < total_steps:
                batch = next(stream)
                lr = schedule.rate(step)
                if carry:
                    if batches.position(step)[1] == 0 or self._carried is None:
                        self._carried = self._zero_state(spec, batch.inputs.shape[0])
                    loss, self._carried = model.train_batch_carried(
                        batch.inputs, batch.targets, lr, self._carried, step=step
                    )
                else:
                    loss = model.train_batch(batch.inputs, batch.targets, lr, step=step)
                if not math.isfinite(loss):
                    raise RunError(
                        f"training diverged at step {step + 1} (loss {loss}); try a lower --lr or --clip"
                    )
                step += 1
                tokens += batch.predicted_tokens
                run_tokens += batch.predicted_tokens
                elapsed = time.perf_counter() - started
                epoch, index = divmod(step, batches.batches_per_epoch)
                record = {
                    "event": "train",
                    "step": step,
                    "epoch": epoch + (index > 0),
                    "loss": loss,
                    "lr": lr,
                    "tokens": tokens,
                    "tokens_per_s": run_tokens / elapsed if elapsed > 0 else 0.0,
                    "time": seconds_before + elapsed,
                }
                history.write(json.dumps(record) + "\n")
                result.losses.append(loss)
                self.reporter.step(record)

                out_of_time = config.time_limit is not None and seconds_before + elapsed >= config.time_limit
                ending = step == total_steps or out_of_time or signals.received is not None
                if len(val_ids) and (step % config.val_every == 0 or index == 0 or ending):
                    val_loss = evaluate(model, val_ids, spec)
                    carried = carried_loss(model, val_ids, stripes=stripes)
                    schedule.observe(val_loss)
                    improved = val_loss < best
                    if improved:
                        best, meta["best_val_loss"], meta["best_step"], meta["waited"] = (
                            val_loss,
                            val_loss,
                            step,
                            0,
                        )
                    else:
                        meta["waited"] = int(meta.get("waited", 0)) + 1
                    carried_summary = {f"carried_{k}": v for k, v in summary(carried).items()}
                    val_record = {
                        "event": "validation",
                        "step": step,
                        **summary(val_loss),
                        **carried_summary,
                        "best": best,
                    }
                    history.write(json.dumps(val_record) + "\n")
                    result.val = {**summary(val_loss), **carried_summary}
                    self.reporter.validation(val_record)
                    early = config.patience is not None and meta["waited"] >= config.patience
                    if early and not ending:
                        status, ending = "early-stopped", True
                    history.flush()
                    self._checkpoint(model, meta, step, tokens, seconds_before + elapsed, schedule, improved)
                elif ending:
                    history.flush()
                    self._checkpoint(model, meta, step, tokens, seconds_before + elapsed, schedule, False)
                if signals.received is not None:
                    status = "interrupted"
                elif out_of_time and step < total_steps:
                    status = "time-limit"
                if ending or status != "finished":
                    break
        meta["status"] = status
        runs.atomic_write_json(self.out / runs.RUN_FILE, meta)
        result.steps = step
        result.status = status
        result.best_val = best if math.isfinite(best) else None
        result.seconds = time.perf_counter() - started
        result.tokens_per_second = run_tokens / result.seconds if result.seconds > 0 else 0.0
        self.reporter.end(result)
        if status == "interrupted":
            raise TrainingInterrupted(
                f"interrupted by {signals.received} at step {step}; checkpoint saved, continue with: "
                f"seqpred train --resume {self.out}"
            )
        return result

    @staticmethod
    def _zero_state(spec: ModelSpec, batch: int) -> np.ndarray:
        return np.zeros((spec.layers, 2, batch, spec.hidden), dtype=np.float32)

    def _checkpoint(self, model, meta, step, tokens, seconds, schedule, improved) -> None:
        """Save weights, optimizer state and progress; ``run.json`` last, as the commit point."""
        try:
            weights = runs.tensor_bytes(model.get_weights(), {"step": str(step)})
            with runs.Commit() as commit:  # every file written before any replaces its old version
                commit.write_bytes(self.out / runs.LATEST_FILE, weights)
                if improved:
                    commit.write_bytes(self.out / runs.BEST_FILE, weights)
                with contextlib.suppress(NotImplementedError):  # optional: a backend may not resume
                    commit.write_tensors(self.out / runs.OPTIMIZER_FILE, model.get_optimizer_state())
                if self._carried is not None:
                    commit.write_tensors(self.out / runs.CARRIED_STATE_FILE, {"state": self._carried})
                state = dict(step=step, tokens=tokens, seconds=seconds, schedule=schedule.state())
                commit.write_json(self.out / runs.RUN_FILE, {**meta, **state})
            meta.update(state)
        except OSError as exc:
            raise RunError(
                f"{self.out}: could not save the checkpoint of step {step} ({exc.strerror or exc}); "
                f"the previous checkpoint (step {meta.get('step', 0)}) is intact; free some space and "
                f"continue with: seqpred train --resume {self.out}"
            ) from None


def train(config: TrainConfig, out: str | Path, **kwargs: Any) -> TrainResult:
    """Train a model as ``config`` says and write the run folder ``out``."""
    return Trainer(config, out, **kwargs).run()


def resume(out: str | Path, overrides: dict[str, Any] | None = None, **kwargs: Any) -> TrainResult:
    """Continue the run in ``out`` from its latest checkpoint."""
    return Trainer(None, out, resume=True, overrides=overrides, **kwargs).run()
