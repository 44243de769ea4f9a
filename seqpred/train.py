"""Training orchestration: the core makes the data, weights, schedule and checkpoints; the backend
does the maths of one batch.

A run is resumable at every checkpoint: the batch order is a function of (seed, step), the dropout
masks of (seed, step), the schedule's state is saved in ``run.json`` and Adam's moments in
``optimizer.safetensors``. Ctrl-C or SIGTERM finishes the current step, saves a checkpoint and
stops with exit code 130.
"""

from __future__ import annotations

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

from . import distributed, progress, runs
from .backend import Model, OptimizerSettings
from .batches import StripeBatches, TrainBatches, split_validation
from .config import FIELDS, RESUMABLE, TrainConfig
from .devices import check_device, kind
from .errors import BackendError, CorpusError, RunError, SeqpredError, UsageError
from .memory import check_fits, corpus_bytes, memory_device, training_bytes
from .metrics import summary
from .models import build_model, check_precision, implements
from .registry import get_registry
from .run_folder import RunWriter
from .runs import RunRecord
from .schedule import Schedule
from .scoring import validation_stripes
from .spec import ModelSpec
from .threads import apply_option
from .token_cache import corpus_tokens
from .vocab import Vocab, build_char_vocab_and_ids
from .weights import check_weights, init_weights


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
    best_step: int | None = None


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


def resumed_config(out: Path, overrides: dict[str, Any]) -> TrainConfig:
    """The stored configuration of the run in ``out`` with the ``overrides`` that resume may change."""
    if not out.is_dir():
        raise RunError(f"{out}: no such run folder to resume")
    if not runs.is_run(out) and (out / runs.TRAIN_FILE).exists():
        raise RunError(
            f"{out}: holds the files of a training that stopped before its first checkpoint, nothing "
            f"to resume; start again with: seqpred train CORPUS --out {out} --force"
        )
    runs.check_format(runs.read_json(out / runs.RUN_FILE, "run metadata"), out)
    stored = runs.read_json(out / runs.TRAIN_FILE, "training configuration")
    if not isinstance(stored, dict):
        raise RunError(f"{out / runs.TRAIN_FILE}: not a table of options; restore it or train again")
    # Runs written before the option existed had dropout after the last layer too.
    stored.setdefault("output_dropout", True)
    unknown = sorted(set(stored) - FIELDS)
    if unknown or not stored.get("corpus"):
        what = f"unknown option(s) {', '.join(unknown)}" if unknown else "no corpus"
        raise RunError(f"{out / runs.TRAIN_FILE}: {what}; restore the file from a copy or train again")
    fixed = sorted(
        k for k, v in overrides.items() if v is not None and k not in RESUMABLE and stored.get(k) != v
    )
    if fixed:
        names = ", ".join("--" + k.replace("_", "-") for k in fixed)
        raise UsageError(f"cannot change {names} when resuming; start a new run instead")
    config = TrainConfig(**stored)
    try:
        config.check()
    except UsageError as exc:
        raise RunError(
            f"{out / runs.TRAIN_FILE}: {exc}; restore the file from a copy or train again"
        ) from None
    changes = {k: v for k, v in overrides.items() if v is not None and k in RESUMABLE}
    config = replace(config, **changes)
    config.check()
    return config


class Trainer:
    """One training run writing to one run folder: a new run, or with :meth:`resume` an old one."""

    def __init__(
        self,
        config: TrainConfig,
        out: str | Path,
        *,
        reporter: Reporter | None = None,
        force: bool = False,
    ):
        config.check()  # every option before any file is touched
        self.config = config
        self.out = Path(out)
        self.folder = RunWriter(self.out)
        self.reporter = reporter or SilentReporter()
        self.force = force
        self.resuming = False
        self._carried: np.ndarray | None = None  # --state carry: the state the next batch starts from
        self.team = distributed.Team(distributed.Replicas(), distributed.LocalCollective())

    @classmethod
    def resume(
        cls, out: str | Path, overrides: dict[str, Any] | None = None, *, reporter: Reporter | None = None
    ) -> Trainer:
        """The trainer that continues the run in ``out`` from its latest checkpoint."""
        config = resumed_config(Path(out), overrides or {})
        if distributed.launched() is not None and (overrides or {}).get("replicas") is None:
            config = replace(config, replicas=1)  # under torchrun, as many replicas as it started
        trainer = cls(config, out, reporter=reporter)
        trainer.resuming = True
        return trainer

    def _check_memory(self, spec: ModelSpec, corpus_tokens: int) -> None:
        """Refuse, with the figure, a training that cannot fit: in the machine's memory, and on a GPU
        also in that GPU's (the model there, the token ids here)."""
        config = self.config
        what = (
            f"training this model ({config.layers} x {config.hidden} units, batches of "
            f"{config.batch_size} x {spec.seq_len})"
        )
        advice = "choose a smaller --hidden, --layers, --batch-size or --seq-len"
        offered = tuple(getattr(get_registry().trainer(config.backend), "devices", ("cpu",)))
        device = memory_device(config.device, offered)
        if kind(device) == "cuda":
            check_fits(training_bytes(spec, config.batch_size, 0), what, advice, device)
            check_fits(corpus_bytes(corpus_tokens), what, advice)
        else:
            check_fits(training_bytes(spec, config.batch_size, corpus_tokens), what, advice)

    # -- run -------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        if self.config.precision != "fp32":  # before any folder is made or process started
            name = self.config.backend
            check_precision(name, get_registry().trainer(name), self.config.precision)
        replicas = distributed.plan(self.config, lambda: get_registry().trainer(self.config.backend))
        if replicas is not None and replicas.processes > 1 and distributed.launched() is None:
            # --replicas N on a backend of one process per replica: start them; each runs this again.
            return distributed.launch(get_registry().trainer(self.config.backend), self, replicas)
        if replicas is None:
            return self._run()
        self.config = replace(self.config, replicas=replicas.count)
        collective: distributed.Collective = distributed.LocalCollective()
        if replicas.processes > 1:
            collective = get_registry().trainer(self.config.backend).join(replicas)
        self.team = distributed.Team(replicas, collective)
        if not replicas.writer:  # rank 0 alone writes the folder, the history and the progress
            self.folder = distributed.SecondaryWriter(self.out)
            self.reporter = SilentReporter()
        try:
            return self._run()
        finally:
            self.team.close()

    def _run(self) -> TrainResult:
        config = self.config
        self._clock = time.perf_counter()  # --time-limit counts the whole training, from here
        stored = runs.load_run(self.out, "latest") if self.resuming else None
        # Encoded once, streaming, into the token cache and mapped from it: the text is never held whole.
        tokens = corpus_tokens(
            config.corpus,
            config.level,
            lower=config.lower,
            vocab=stored.vocab if stored else None,
            progress=lambda description, size: progress.task(description, total=size, unit="bytes"),
        )
        vocab, ids = tokens.vocab, tokens.ids
        if len(vocab) < 2:
            raise CorpusError(
                f"{config.corpus}: the corpus has only one distinct symbol; nothing to predict: "
                f"give a text with at least two different {config.level}s"
            )
        spec = config.model_spec(len(vocab))
        meta = {"backend": config.backend, "device": config.device}
        self._sample = (
            progress.ValidationSample(runs.Run(self.out, spec, vocab, {}, meta, config.to_dict()))
            if config.sample_every and self.team.replicas.writer
            else None
        )
        train_ids, val_ids = split_validation(ids, config.val_fraction, spec.seq_len)
        if config.state == "carry":
            batches: TrainBatches | StripeBatches = StripeBatches(
                train_ids, spec.seq_len, config.batch_size, config.seed
            )
        else:
            batches = TrainBatches(train_ids, spec.seq_len, config.batch_size, spec.objective, config.seed)
        distributed.check_layout(self.team.replicas, config, batches.batch_size)
        # The ids are mapped, not held: memory holds an epoch's plan of window starts (8 bytes each).
        self._check_memory(spec, batches.plan_bytes // 8)
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

        # An unknown or inference-only backend, or a device it does not offer: before any folder is made.
        backend = get_registry().trainer(config.backend)
        check_device(config.backend, tuple(getattr(backend, "devices", ("cpu",))), config.device)
        if not self.resuming:
            self.folder.prepare(force=self.force)
        # Overflow in a diverging run is caught by the finiteness checks, one line, not warnings.
        self.threads = apply_option(config.threads)  # before the backend builds its model
        with self.folder.locked(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            replicas = self.team.replicas
            options: dict[str, Any] = {}  # only what differs from one process in float32
            if replicas.count > 1:
                options["replicas"] = replicas
            if config.precision != "fp32":
                options["precision"] = config.precision
            seed = distributed.dropout_seed(config.seed, replicas.rank)
            model = build_model(config.backend, spec, config.device, seed, **options)
            if config.state == "carry" and not implements(model, "train_batch_carried"):
                raise BackendError(
                    f"backend {config.backend!r} cannot train with --state carry (its model has no "
                    f"train_batch_carried); use --state reset"
                )
            model.configure_training(OptimizerSettings(clip=config.clip))
            if stored is not None:
                record = self._restore(model, stored, schedule)
            else:
                if self.force:
                    self.folder.clear()
                model.set_weights(init_weights(spec, config.seed))
                record = self.folder.start(spec, config, vocab, config.backend, config.device)
                # A checkpoint at step 0 makes the folder a loadable run from the first moment.
                self._checkpoint(model, record, schedule, improved=False)
            return self._loop(model, spec, batches, val_ids, total_steps, schedule, record)

    def _restore(self, model: Model, stored: runs.Run, schedule: Schedule) -> RunRecord:
        record = RunRecord.from_dict(stored.meta, self.out)
        model.set_weights(stored.weights)
        if (self.out / runs.OPTIMIZER_FILE).exists():
            optimizer = self.out / runs.OPTIMIZER_FILE
            state = runs.load_tensors(optimizer)  # its errors name the file
            try:
                model.set_optimizer_state(state)
            except SeqpredError as exc:
                raise RunError(
                    f"{optimizer}: {exc}; restore the file from a copy, or delete it to resume with "
                    f"a fresh optimizer state"
                ) from None
        if self.config.state == "carry" and (self.out / runs.CARRIED_STATE_FILE).exists():
            self._carried = self._checked_state(runs.load_tensors(self.out / runs.CARRIED_STATE_FILE))
        schedule.load_state(record.schedule)
        # Records written after the checkpoint belong to steps that will be trained again.
        history = self.out / runs.HISTORY_FILE
        if self.team.replicas.writer:
            runs.atomic_write_bytes(history, runs.history_until(history, record.step))
            runs.atomic_write_json(self.out / runs.TRAIN_FILE, self.config.to_dict())
        record.status = "training"
        record.device = self.config.device
        return record

    def _checked_state(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        state = tensors.get("state")
        layers, hidden = self.config.layers, self.config.hidden
        ok = state is not None and state.ndim == 4 and state.shape[:2] == (layers, 2)
        if state is None or not ok or state.shape[3] != hidden or not np.all(np.isfinite(state)):
            raise RunError(
                f"{self.out / runs.CARRIED_STATE_FILE}: not the carried state of this run; "
                f"restore the file from a copy or train again"
            )
        return np.asarray(state, dtype=np.float32)

    def _loop(self, model, spec, batches, val_ids, total_steps, schedule, record: RunRecord) -> TrainResult:
        config = self.config
        first = record.step
        best = record.best_val_loss if record.best_val_loss is not None else math.inf
        tokens = record.tokens
        seconds_before = float(record.seconds)
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
                "resumed": self.resuming,
                "run": str(self.out),
                # What --device auto resolved to; a model that names no device runs on the processor.
                "device": str(getattr(model, "device", "cpu" if config.device == "auto" else config.device)),
                "threads": self.threads,
                "replicas": config.replicas,
                "precision": config.precision,
            },
        )
        result = TrainResult(run=self.out, steps=first, val=None, best_val=None)
        carry = config.state == "carry"
        stripes = validation_stripes(len(val_ids), spec.seq_len)
        started = time.perf_counter()
        run_tokens = 0
        step = first
        status = "finished"
        last_sample, reserve = first, 0.0  # reserve: the longest validation and checkpoint so far
        writer = self.team.replicas.writer
        history_path = self.out / runs.HISTORY_FILE
        history_file = runs.open_for_append(history_path) if writer else distributed.NullSink()
        with _StopSignals() as signals, history_file as history:
            stream: Iterator = batches.iter_from(first)
            while step < total_steps:
                batch = next(stream)
                rows = self.team.take(batch)  # this process's rows; all of them in one process
                lr = schedule.rate(step)
                if carry:
                    if batches.position(step)[1] == 0 or self._carried is None:
                        self._carried = self._zero_state(spec, batch.inputs.shape[0])
                    loss, self._carried = model.train_batch_carried(
                        rows.inputs, rows.targets, lr, self._carried, step=step
                    )
                else:
                    loss = model.train_batch(rows.inputs, rows.targets, lr, step=step)
                # The mean over every process's rows; a signal to any process stops them all.
                # A signal counts from here on, as every process saw it here: they all stop at this step.
                loss, (stopping,) = self.team.step(loss, rows.predicted_tokens, signals.received is not None)
                if stopping and signals.received is None:
                    signals.received = "a signal to another replica"
                if not math.isfinite(loss):
                    raise self._diverged(step + 1, f"the loss is {loss}")
                step += 1
                tokens += batch.predicted_tokens
                run_tokens += batch.predicted_tokens
                elapsed = time.perf_counter() - started
                epoch, index = divmod(step, batches.batches_per_epoch)
                entry = {
                    "event": "train",
                    "step": step,
                    "epoch": epoch + (index > 0),
                    "loss": loss,
                    "lr": lr,
                    "tokens": tokens,
                    "tokens_per_s": run_tokens / elapsed if elapsed > 0 else 0.0,
                    "time": seconds_before + elapsed,
                }
                history.write(json.dumps(entry) + "\n")
                result.losses.append(loss)
                self.reporter.step(entry)

                spent = seconds_before + time.perf_counter() - self._clock
                # Stop before a step and the final validation would end past the limit (and before a
                # validation due now if another step and validation could not follow it in time).
                due = step % config.val_every == 0 or index == 0
                next_step = elapsed / (step - first) + reserve * (2 if due else 1)
                out_of_time = config.time_limit is not None and spent + next_step >= config.time_limit
                if config.time_limit is not None:  # the clock of any process stops them all
                    out_of_time = self.team.any(out_of_time)
                ending = step == total_steps or out_of_time or stopping
                record.step, record.tokens, record.seconds = step, tokens, spent
                if len(val_ids) and (step % config.val_every == 0 or index == 0 or ending):
                    validating = time.perf_counter()
                    with progress.scoring("validation", model, len(val_ids), spec, stripes) as scored:
                        val_loss = self.team.window_loss(scored, val_ids, spec)
                        carried = self.team.carried_loss(scored, val_ids, stripes)
                    if not math.isfinite(val_loss):
                        raise self._diverged(step, f"the validation loss is {val_loss}")
                    schedule.observe(val_loss)
                    improved = val_loss < best
                    if improved:
                        best, record.best_val_loss, record.best_step, record.waited = (
                            val_loss,
                            val_loss,
                            step,
                            0,
                        )
                    else:
                        record.waited += 1
                    carried_summary = {f"carried_{k}": v for k, v in summary(carried).items()}
                    val_record = {
                        "event": "validation",
                        "step": step,
                        **summary(val_loss),
                        **carried_summary,
                        "best": best,
                    }
                    every = config.sample_every or 0
                    if self._sample is not None and every and step // every > last_sample // every:
                        val_record["sample"], last_sample = self._sample(model, step), step
                    history.write(json.dumps(val_record) + "\n")
                    result.val = {**summary(val_loss), **carried_summary}
                    self.reporter.validation(val_record)
                    early = config.patience is not None and record.waited >= config.patience
                    if early and not ending:
                        status, ending = "early-stopped", True
                    history.flush()
                    self._checkpoint(model, record, schedule, improved=improved)
                    reserve = max(reserve, time.perf_counter() - validating)
                elif ending:
                    history.flush()
                    self._checkpoint(model, record, schedule, improved=False)
                if stopping:
                    status = "interrupted"
                elif out_of_time and step < total_steps:
                    status = "time-limit"
                if ending or status != "finished":
                    break
        record.status = status
        self.folder.finish(record)
        self.team.barrier()  # no process leaves (a launcher would stop the others) before rank 0 has saved
        result.steps = step
        result.status = status
        result.best_val = best if math.isfinite(best) else None
        result.best_step = record.best_step
        result.seconds = time.perf_counter() - self._clock
        loop_seconds = time.perf_counter() - started
        result.tokens_per_second = run_tokens / loop_seconds if loop_seconds > 0 else 0.0
        self.reporter.end(result)
        if status == "interrupted":
            raise TrainingInterrupted(
                f"interrupted by {signals.received} at step {step}; checkpoint saved, continue with: "
                f"seqpred train --resume {self.out}"
            )
        return result

    def _diverged(self, step: int, what: str) -> RunError:
        saved = self.folder.committed_step()
        kept = f"the checkpoint of step {saved} is kept" if saved is not None else "nothing was saved"
        return RunError(f"training diverged at step {step} ({what}); {kept}; try a lower --lr or --clip")

    @staticmethod
    def _zero_state(spec: ModelSpec, batch: int) -> np.ndarray:
        return np.zeros((spec.layers, 2, batch, spec.hidden), dtype=np.float32)

    def _checkpoint(self, model: Model, record: RunRecord, schedule: Schedule, *, improved: bool) -> None:
        """Save weights, optimizer and carried state and ``run.json``, all or nothing; never a NaN."""
        if not self.team.replicas.writer:
            return
        try:
            weights = check_weights(model.spec, model.get_weights(), "the weights after training")
        except RunError:
            raise self._diverged(record.step, "the weights hold NaN or infinite values") from None
        optimizer = model.get_optimizer_state()  # required of every backend that trains
        record.schedule = schedule.state()
        self.folder.checkpoint(record, weights, optimizer=optimizer, carried=self._carried, improved=improved)


def train(config: TrainConfig, out: str | Path, **kwargs: Any) -> TrainResult:
    """Train a model as ``config`` says and write the run folder ``out``."""
    return Trainer(config, out, **kwargs).run()


def resume(out: str | Path, overrides: dict[str, Any] | None = None, **kwargs: Any) -> TrainResult:
    """Continue the run in ``out`` from its latest checkpoint."""
    return Trainer.resume(out, overrides, **kwargs).run()
