"""The generation loop: prime → the backend's steps with carried state → sampling.

Every stream costs one step of the model per token, whatever the length of the text so far. The
core draws the uniforms and asks for tokens a chunk at a time: a backend with a fused loop
(:meth:`seqpred.Model.generate_tokens`) makes the whole chunk in one call, any other is stepped
here, one :meth:`~seqpred.Model.step` and one :func:`seqpred.sampling.pick` per token. Both give
the same tokens for the same seed, whatever the chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backend import Model
from .errors import UsageError
from .memory import check_fits, memory_device
from .models import build_model, implements
from .registry import get_registry
from .runs import Run, load_run
from .sampling import MAX_SEED, SamplingSettings, draw_uniforms, pick
from .vocab import UnknownPolicy, detokenize, tokenize

MAX_LENGTH = 10_000_000
#: The longest prime: it is run through the model in one pass, so its memory grows with its length.
MAX_PRIME_TOKENS = 1_000_000
#: Tokens per stream asked of one call: the most, and the most while text is streamed or stop
#: strings are watched (chunks start at one token and double up to it, so text arrives at once and
#: little is generated past a stop).
CHUNK = 256
WATCHED_CHUNK = 32
#: Uniforms drawn at once, at most (streams x tokens per call).
CHUNK_VALUES = 1 << 16


def stepped_tokens(
    model: Model,
    tokens: np.ndarray,
    state: Any,
    settings: SamplingSettings,
    uniforms: np.ndarray,
    *,
    return_logits: bool = False,
) -> tuple[np.ndarray, Any, np.ndarray | None]:
    """The generic loop of :meth:`seqpred.Model.generate_tokens`: one step and one pick per token.

    The oracle of every fused loop, and what runs on a backend without one.
    """
    chosen = np.empty(uniforms.shape, dtype=np.int32)
    seen = []
    for k in range(uniforms.shape[1]):
        logits, state = model.step(tokens, state)
        if return_logits:
            seen.append(np.asarray(logits, dtype=np.float32))
        tokens = chosen[:, k] = pick(logits, settings, uniforms[:, k])
    return chosen, state, np.stack(seen, axis=1) if return_logits else None


def generate_tokens(
    model: Model,
    tokens: np.ndarray,
    state: Any,
    settings: SamplingSettings,
    uniforms: np.ndarray,
    *,
    fused: bool = True,
    return_logits: bool = False,
) -> tuple[np.ndarray, Any, np.ndarray | None]:
    """K = ``uniforms.shape[1]`` tokens per stream after feeding ``tokens`` [B]: the backend's fused
    loop where it has one (and ``fused``), else :func:`stepped_tokens`."""
    if fused and implements(model, "generate_tokens"):
        return model.generate_tokens(tokens, state, settings, uniforms, return_logits=return_logits)
    return stepped_tokens(model, tokens, state, settings, uniforms, return_logits=return_logits)


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
        fused: bool = True,
    ):
        """``fused=False`` steps the model one token per call even where the backend has a fused loop."""
        self.fused = fused
        self.run = run if isinstance(run, Run) else load_run(run, checkpoint)
        self.backend_name = backend or self.run.backend or "torch"
        self.model: Model = build_model(self.backend_name, self.run.spec, device, seed=0)
        self.model.set_weights(self.run.weights)
        offered = tuple(getattr(get_registry().get(self.backend_name), "devices", ("cpu",)))
        self.memory_device = memory_device(device, offered)  # where the streams' tensors live

    @property
    def vocab(self):
        return self.run.vocab

    def default_settings(self) -> SamplingSettings:
        """The sampling settings recorded with the run (the article preset generates greedily)."""
        config = self.run.config
        return SamplingSettings(
            temperature=float(config.get("temperature", 1.0)), greedy=bool(config.get("greedy", False))
        )

    def check_prime(self, prime: str) -> None:
        """Refuse a prime longer than :data:`MAX_PRIME_TOKENS`, before any work is spent on it."""
        if len(prime) <= MAX_PRIME_TOKENS:  # a token is at least one character
            return
        count = len(prime) if self.vocab.level == "char" else len(tokenize(prime, self.vocab.level))
        if count > MAX_PRIME_TOKENS:
            raise UsageError(
                f"the prime is {count:,} {self.vocab.level} tokens long, over the limit of "
                f"{MAX_PRIME_TOKENS:,}; give a shorter prime, e.g. its last part"
            )

    def check_memory(self, num_samples: int, length: int, prime_chars: int) -> None:
        """Refuse, with the figure, a generation whose streams cannot fit in memory."""
        spec = self.run.spec
        per_stream = (
            16 * spec.layers * 2 * spec.hidden  # the carried state, and its next version
            + 16 * spec.vocab_size  # logits and the sampling distribution
            + 16 * length  # the tokens chosen, and their text
            + 8 * prime_chars * spec.hidden * spec.layers  # the prime's pass through the model
        )
        check_fits(
            float(num_samples) * per_stream,
            f"generating {num_samples:,} sample(s) of {length:,} tokens",
            "lower --num-samples or --length",
            self.memory_device,
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
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise UsageError(f"--seed must be between 0 and 2**63 - 1, got {seed}")
        self.check_prime(prime)
        self.check_memory(num_samples, length, len(prime))
        settings = settings or self.default_settings()
        rng = np.random.default_rng(seed)
        ids = self.start_tokens(prime, unknown)

        state = self.model.initial_state(num_samples)
        batch = np.repeat(ids[None, :], num_samples, axis=0)
        if batch.shape[1] > 1:
            _, state = self.model.forward(batch[:, :-1], state)
        tokens = batch[:, -1]

        streams = _Streams(self.vocab, num_samples, ids[-1] if prime else None, stop, on_text)
        most = max(1, min(CHUNK, CHUNK_VALUES // num_samples))
        watched = bool(stop) or on_text is not None
        chunk = 1 if watched else most
        remaining = length
        while remaining > 0 and not streams.all_done:
            count = min(chunk, remaining)
            if settings.greedy:
                uniforms = np.zeros((num_samples, count))
            else:
                uniforms = draw_uniforms(rng, num_samples, count)
            chosen, state, _ = generate_tokens(
                self.model, tokens, state, settings, uniforms, fused=self.fused
            )
            for k in range(count):
                streams.add(chosen[:, k])
                if streams.all_done:
                    break
            tokens = chosen[:, -1]
            remaining -= count
            chunk = min(2 * chunk, WATCHED_CHUNK if watched else most)
        return Generation(
            samples=streams.texts(),
            prime=prime,
            settings=settings,
            seed=seed,
            tokens=streams.produced,
            run=str(self.run.path),
            backend=self.backend_name,
            stopped=[bool(d) for d in streams.done],
        )


class _Streams:
    """The text of every stream as tokens arrive: the first stream's text is handed out as it grows,
    and streams with stop strings are checked after every token; the others are decoded at the end."""

    def __init__(self, vocab, count: int, last_prime_id, stop: Sequence[str], on_text):
        self.vocab = vocab
        self.stop = list(stop)
        self.on_text = on_text
        self.chosen: list[np.ndarray] = []
        self.done = np.zeros(count, dtype=bool)
        start = "\n" if last_prime_id is None else vocab.tokens[int(last_prime_id)]
        self.start = start
        self.previous = [start] * count
        self.live = [""] * count if (self.stop or on_text) else None
        self.hold = max((len(s) for s in self.stop), default=1) - 1  # may still begin a stop string
        self.sent = 0

    @property
    def produced(self) -> int:
        return len(self.chosen)

    @property
    def all_done(self) -> bool:
        return bool(self.done.all())

    def _piece(self, s: int, token_id: int) -> str:
        token = self.vocab.tokens[token_id]
        if self.vocab.level == "char":
            piece = token
        else:
            piece = detokenize([self.previous[s], token], "word")[len(self.previous[s]) :]
        self.previous[s] = token
        return piece

    def add(self, chosen: np.ndarray) -> None:
        self.chosen.append(chosen)
        if self.live is None:
            return
        watched = np.flatnonzero(~self.done) if self.stop else [0]
        for s in watched:
            if self.done[s]:
                continue
            piece = self._piece(int(s), int(chosen[s]))
            self.live[s] += piece
            if self.stop:
                text = self.live[s]
                hit = _first_stop(text, self.stop, len(text) - len(piece) - self.hold)
                if hit is not None:
                    self.live[s] = text[:hit]
                    self.done[s] = True
        if self.on_text is not None:
            text = self.live[0]
            upto = len(text) - (0 if self.done[0] else self.hold)
            if upto > self.sent:
                self.on_text(text[self.sent : upto])
                self.sent = upto

    def add_block(self, block: np.ndarray) -> None:
        """Add ``block[:, k]`` for each k in turn, as :meth:`add` does, but hand out the first
        stream's new text in one piece. Only for streams without stop strings, where no token can
        end a stream early."""
        assert not self.stop, "streams with stop strings are checked token by token (add)"
        self.chosen.extend(block.T)
        if self.on_text is None or self.live is None:
            return
        text = "".join([self._piece(0, i) for i in block[0].tolist()])
        self.live[0] += text
        self.on_text(self.live[0][self.sent :])
        self.sent = len(self.live[0])

    def texts(self) -> list[str]:
        if self.on_text is not None and self.live is not None and len(self.live[0]) > self.sent:
            self.on_text(self.live[0][self.sent :])
            self.sent = len(self.live[0])
        if self.stop and self.live is not None:
            return list(self.live)
        ids = np.stack(self.chosen, axis=1) if self.chosen else np.zeros((len(self.done), 0), dtype=np.int32)
        if self.vocab.level == "char":
            table = np.asarray(self.vocab.tokens, dtype=object)
            return ["".join(row) for row in table[ids]]
        return [
            detokenize([self.start, *(self.vocab.tokens[i] for i in row)], "word")[len(self.start) :]
            for row in ids
        ]


def _first_stop(text: str, stop: Sequence[str], search_from: int) -> int | None:
    found = [i for i in (text.find(s, max(0, search_from)) for s in stop) if i >= 0]
    return min(found) if found else None
