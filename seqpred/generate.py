"""The generation loop: prime → the backend's one-step function with carried state → sampling.

Every stream costs one step of the model per token, whatever the length of the text so far.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backend import Model
from .errors import UsageError
from .runs import Run, load_run
from .sampling import SamplingSettings, sample
from .train import build_model
from .vocab import UnknownPolicy, detokenize

MAX_LENGTH = 10_000_000


@dataclass
class Generation:
    """What one call produced, and with which settings."""

    samples: list[str]
    prime: str
    settings: SamplingSettings
    seed: int | None
    tokens: int
    run: str = ""
    backend: str = ""
    stopped: list[bool] = field(default_factory=list)


class Generator:
    """A loaded run on a backend, ready to generate; reusable across calls."""

    def __init__(
        self,
        run: Run | str | Path,
        backend: str | None = None,
        *,
        device: str = "cpu",
        checkpoint: str = "best",
    ):
        self.run = run if isinstance(run, Run) else load_run(run, checkpoint)
        self.backend_name = backend or self.run.backend or "torch"
        self.model: Model = build_model(self.backend_name, self.run.spec, device, seed=0)
        self.model.set_weights(self.run.weights)

    @property
    def vocab(self):
        return self.run.vocab

    def default_settings(self) -> SamplingSettings:
        """The sampling settings recorded with the run (the article preset generates greedily)."""
        config = self.run.config
        return SamplingSettings(
            temperature=float(config.get("temperature", 1.0)), greedy=bool(config.get("greedy", False))
        )

    def start_tokens(self, prime: str, unknown: UnknownPolicy) -> np.ndarray:
        ids = self.vocab.encode(prime, unknown) if prime else np.zeros(0, dtype=np.int32)
        if len(ids) == 0:
            start = "\n" if "\n" in self.vocab else self.vocab.tokens[0]
            ids = np.asarray([self.vocab.index[start]], dtype=np.int32)
        return ids

    def generate(
        self,
        prime: str = "",
        length: int = 200,
        settings: SamplingSettings | None = None,
        *,
        seed: int | None = None,
        num_samples: int = 1,
        stop: Sequence[str] = (),
        unknown: UnknownPolicy = "error",
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        """Generate ``length`` tokens after ``prime`` in each of ``num_samples`` streams.

        ``on_text`` receives the text of the first stream as it is produced. A stream ends early at
        the first of the ``stop`` strings, which is not included in its sample.
        """
        if not 0 <= length <= MAX_LENGTH:
            raise UsageError(f"length must be between 0 and {MAX_LENGTH:,}, got {length}")
        if num_samples < 1:
            raise UsageError(f"num-samples must be at least 1, got {num_samples}")
        if any(s == "" for s in stop):
            raise UsageError("a stop string must not be empty")
        settings = settings or self.default_settings()
        rng = np.random.default_rng(seed)
        level = self.vocab.level
        tokens = self.vocab.tokens
        ids = self.start_tokens(prime, unknown)

        state = self.model.initial_state(num_samples)
        batch = np.repeat(ids[None, :], num_samples, axis=0)
        if batch.shape[1] > 1:
            _, state = self.model.forward(batch[:, :-1], state)
        logits, state = self.model.step(batch[:, -1], state)

        texts = [""] * num_samples
        done = np.zeros(num_samples, dtype=bool)
        previous = [tokens[i] for i in batch[:, -1]] if prime else ["\n"] * num_samples
        hold = max((len(s) for s in stop), default=1) - 1  # characters that may yet start a stop string
        sent = 0  # characters of the first stream handed to on_text
        produced = 0
        for position in range(length):
            chosen = sample(logits, settings, rng)
            produced += 1
            for s in np.flatnonzero(~done):
                token = tokens[chosen[s]]
                piece = (
                    token if level == "char" else detokenize([previous[s], token], level)[len(previous[s]) :]
                )
                previous[s] = token
                texts[s] += piece
                if stop:
                    hit = _first_stop(texts[s], stop, len(texts[s]) - len(piece) - hold)
                    if hit is not None:
                        texts[s] = texts[s][:hit]
                        done[s] = True
            if on_text is not None:
                upto = len(texts[0]) - (0 if done[0] else hold)
                if upto > sent:
                    on_text(texts[0][sent:upto])
                    sent = upto
            if done.all() or position + 1 == length:
                break
            logits, state = self.model.step(chosen, state)
        if on_text is not None and len(texts[0]) > sent:
            on_text(texts[0][sent:])
        return Generation(
            samples=texts,
            prime=prime,
            settings=settings,
            seed=seed,
            tokens=produced,
            run=str(self.run.path),
            backend=self.backend_name,
            stopped=[bool(d) for d in done],
        )


def _first_stop(text: str, stop: Sequence[str], search_from: int) -> int | None:
    found = [i for i in (text.find(s, max(0, search_from)) for s in stop) if i >= 0]
    return min(found) if found else None
