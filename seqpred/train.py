"""Training orchestration: the core makes the data, weights and schedule; the backend does the maths."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import runs
from .backend import MODEL_METHODS, Model, OptimizerSettings, missing_methods
from .config import TrainConfig
from .corpus import read_corpus
from .data import TrainBatches, eval_batches, split_validation
from .errors import BackendError, RunError, UsageError
from .metrics import summary
from .registry import get_registry
from .spec import ModelSpec
from .vocab import Vocab, build_char_vocab_and_ids
from .weights import init_weights


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
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    tokens_per_second: float = 0.0


def encode_corpus(text: str, level: str) -> tuple[Vocab, np.ndarray]:
    if level == "char":
        return build_char_vocab_and_ids(text)
    vocab = Vocab.build(text, "word")  # type: ignore[arg-type]
    return vocab, vocab.encode(text)


def build_model(backend_name: str, spec: ModelSpec, device: str, seed: int) -> Model:
    """Create a backend's model and check it honours the contract."""
    backend = get_registry().get(backend_name)
    if spec.objective not in getattr(backend, "objectives", ("sequence", "last")):
        raise BackendError(f"backend {backend_name!r} does not support the {spec.objective!r} objective")
    try:
        model = backend.create_model(spec, device=device, seed=seed)
    except (ImportError, RuntimeError, ValueError) as exc:
        raise BackendError(f"backend {backend_name!r} could not build the model: {exc}") from None
    missing = missing_methods(model, MODEL_METHODS)
    if missing:
        dist = get_registry().distribution_of(backend_name).distribution
        raise BackendError(f"backend {backend_name!r} ({dist}) returned a model without {', '.join(missing)}")
    return model


def evaluate(model: Model, ids: np.ndarray, spec: ModelSpec, batch_size: int = 256) -> float:
    """Mean loss in nats over every evaluation window of ``ids``."""
    total = 0.0
    count = 0
    for batch in eval_batches(ids, spec.seq_len, spec.objective, batch_size):
        total += model.evaluate_batch(batch.inputs, batch.targets) * batch.predicted_tokens
        count += batch.predicted_tokens
    if count == 0:
        raise RunError("nothing to evaluate: the text is shorter than one window")
    return total / count


class Trainer:
    """One training run writing to one run folder."""

    def __init__(
        self,
        config: TrainConfig,
        out: str | Path,
        *,
        reporter: Reporter | None = None,
        force: bool = False,
        resume: bool = False,
    ):
        self.config = config
        self.out = Path(out)
        self.reporter = reporter or SilentReporter()
        self.force = force
        self.resume = resume

    def _prepare_folder(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise UsageError(f"{self.out}: exists and is not a folder")
        if runs.is_run(self.out) and not (self.force or self.resume):
            raise UsageError(
                f"{self.out}: already holds a run; use --resume to continue it or --force to replace it"
            )
        if self.out.exists() and not runs.is_run(self.out) and any(self.out.iterdir()) and not self.force:
            raise UsageError(f"{self.out}: folder is not empty; choose a new --out or use --force")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"{self.out}: cannot write there ({exc.strerror or exc})") from None

    def run(self) -> TrainResult:
        config = self.config
        text = read_corpus(config.corpus, lower=config.lower)
        vocab, ids = encode_corpus(text, config.level)
        if len(vocab) < 2:
            raise UsageError(f"{config.corpus}: the corpus has only one distinct symbol; nothing to predict")
        spec = config.model_spec(len(vocab))
        train_ids, val_ids = split_validation(ids, config.val_fraction, spec.seq_len)
        batches = TrainBatches(train_ids, spec.seq_len, config.batch_size, spec.objective, config.seed)
        total_steps = batches.batches_per_epoch * config.epochs
        if config.max_steps is not None:
            total_steps = min(total_steps, config.max_steps)

        self._prepare_folder()
        model = build_model(config.backend, spec, config.device, config.seed)
        model.set_weights(init_weights(spec, config.seed))
        model.configure_training(OptimizerSettings(clip=config.clip))
        meta = runs.new_meta(config.backend)
        meta.update(device=config.device, step=0, epoch=0, best_val_loss=None, best_step=None)
        runs.atomic_write_json(self.out / runs.MODEL_FILE, spec.to_dict())
        runs.atomic_write_json(self.out / runs.TRAIN_FILE, config.to_dict())
        runs.atomic_write_bytes(self.out / runs.VOCAB_FILE, vocab.to_json().encode("utf-8"))
        history_path = self.out / runs.HISTORY_FILE
        history_path.write_text("")

        self.reporter.start(
            total_steps,
            0,
            {
                "backend": config.backend,
                "parameters": spec.parameter_count(),
                "vocab": len(vocab),
                "train_tokens": len(train_ids),
                "val_tokens": len(val_ids),
                "steps_per_epoch": batches.batches_per_epoch,
            },
        )
        result = TrainResult(run=self.out, steps=0, val=None, best_val=None)
        best = math.inf
        started = time.perf_counter()
        tokens = 0
        with history_path.open("a", encoding="utf-8") as history:
            iterator: Iterator = batches.iter_from(0)
            for step in range(total_steps):
                batch = next(iterator)
                loss = model.train_batch(batch.inputs, batch.targets, config.lr)
                if not math.isfinite(loss):
                    raise RunError(
                        f"training diverged at step {step + 1} (loss {loss}); try a lower --lr or --clip"
                    )
                tokens += batch.predicted_tokens
                elapsed = time.perf_counter() - started
                record = {
                    "event": "train",
                    "step": step + 1,
                    "epoch": step // batches.batches_per_epoch + 1,
                    "loss": loss,
                    "lr": config.lr,
                    "tokens": tokens,
                    "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0,
                    "time": elapsed,
                }
                history.write(json.dumps(record) + "\n")
                result.losses.append(loss)
                self.reporter.step(record)
                last = step + 1 == total_steps
                if len(val_ids) and ((step + 1) % config.val_every == 0 or last):
                    val_loss = evaluate(model, val_ids, spec)
                    improved = val_loss < best
                    best = min(best, val_loss)
                    val_record = {"event": "validation", "step": step + 1, **summary(val_loss)}
                    history.write(json.dumps(val_record) + "\n")
                    history.flush()
                    result.val = summary(val_loss)
                    self.reporter.validation(val_record)
                    self._checkpoint(model, meta, step + 1, improved, val_loss)
                elif last:
                    self._checkpoint(model, meta, step + 1, False, None)
        result.steps = total_steps
        result.best_val = best if math.isfinite(best) else None
        result.seconds = time.perf_counter() - started
        result.tokens_per_second = tokens / result.seconds if result.seconds > 0 else 0.0
        self.reporter.end(result)
        return result

    def _checkpoint(
        self, model: Model, meta: dict[str, Any], step: int, improved: bool, val_loss: float | None
    ) -> None:
        weights = model.get_weights()
        runs.save_tensors(self.out / runs.LATEST_FILE, weights, {"step": str(step)})
        if improved:
            runs.save_tensors(self.out / runs.BEST_FILE, weights, {"step": str(step)})
            meta.update(best_val_loss=val_loss, best_step=step)
        with contextlib.suppress(NotImplementedError):  # optional: a backend may not resume
            runs.save_tensors(self.out / runs.OPTIMIZER_FILE, model.get_optimizer_state())
        meta.update(step=step)
        runs.atomic_write_json(self.out / runs.RUN_FILE, meta)


def train(config: TrainConfig, out: str | Path, **kwargs: Any) -> TrainResult:
    """Train a model as ``config`` says and write the run folder ``out``."""
    return Trainer(config, out, **kwargs).run()
