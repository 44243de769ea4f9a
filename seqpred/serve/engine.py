"""Continuous batching: one model step per token serves every running request.

A request (a :class:`Job`) joins the running batch at the next step and leaves it when it is done,
is cancelled, or fails. The engine knows nothing of HTTP: it takes jobs from any thread and reports
their progress through a callback; the model is used only by the engine's own worker thread.

Each job is generated exactly as :meth:`seqpred.generate.Generator.generate` generates it: the prime
fed with ``model.forward`` and its last token with ``model.step``, then at every position the job's
rows of the batch's logits sampled by :func:`seqpred.sampling.sample` with the job's settings and
its own ``np.random.default_rng(seed)``. So a seeded request gets the text of ``seqpred generate``
with the same settings, alone or among others. Jobs without a seed share the engine's generator and
are sampled together, one call per distinct setting (their text is random either way).

A job without stop strings and scores (the common request) costs the engine one array per step:
its chosen tokens are kept as ids and turned into text only when they are handed out, at most every
``flush_interval`` seconds (and at once for a job's first token, so that the first text is not held
back), and at the end. A job with stop strings is checked after every token, as ``seqpred generate``
checks it, so that it stops at the same token.

The engine steps one token at a time and does not use the backends' fused loops
(:meth:`seqpred.Model.generate_tokens`): requests join and leave between any two tokens, each with
its own settings, where a fused call serves one setting for a chunk of tokens; and the Keras loop
compiles anew for every number of streams, which changes with every request here. Its seeded
draws are the generator's all the same: :func:`seqpred.sampling.sample` draws a job's uniforms one
position at a time, as :func:`seqpred.sampling.draw_uniforms` does for a chunk.

Model states are the backend's own objects; they are converted to the canonical NumPy layout only
when the batch's membership changes.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..backend import Model
from ..generate import _Streams
from ..reference import log_softmax
from ..sampling import SamplingSettings, sample
from ..scoring import CARRIED_CHUNK
from ..vocab import Vocab, detokenize


class Overloaded(Exception):
    """The queue of waiting requests is full, or the engine is stopping; try again later."""


@dataclass
class TokenScore:
    """One token as OpenAI's ``logprobs`` reports it: its text, log probability and the most likely
    alternatives (``logprob`` is None for the first token of a scored text, which has no context)."""

    text: str
    logprob: float | None
    top: dict[str, float] | None


@dataclass
class Delta:
    """New text of one row of a streaming job (may be empty while a possible stop string is held
    back), and the scores of the tokens chosen in this step when the job asked for them."""

    index: int
    text: str
    scores: list[TokenScore] = field(default_factory=list)


@dataclass
class Sample:
    """A finished row: its text, why it ended, how many tokens it took, and their scores."""

    text: str
    finish_reason: str  # "stop" or "length"
    tokens: int
    scores: list[TokenScore] | None = None


@dataclass
class Done:
    """A job has finished: every row's :class:`Sample` (or, for a scoring job, the prompt's scores)."""

    samples: list[Sample]


@dataclass
class Failed:
    """A job could not be finished; the message is safe to show to the client."""

    message: str


Event = Delta | Done | Failed


class Job:
    """One request: generate ``length`` tokens after the start tokens ``ids`` in ``num_samples`` rows,
    or (``score=True``) score ``ids`` with the state carried from the first token to the last.

    ``ids`` are :meth:`Generator.start_tokens` of the prime; ``primed`` says whether the prime was not
    empty (the text of a word-level sample is spaced after the prime's last token, else after a line
    break). ``emit`` receives lists of events from the engine's thread; with ``stream`` false it
    receives only the final :class:`Done` or :class:`Failed`. ``logprobs`` (K) asks for each token's
    log probability under the model (temperature 1) and the K most likely alternatives.
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        ids: np.ndarray,
        *,
        emit: Callable[[list[Event]], None],
        primed: bool = True,
        length: int = 0,
        settings: SamplingSettings | None = None,
        seed: int | None = None,
        num_samples: int = 1,
        stop: Sequence[str] = (),
        stream: bool = False,
        logprobs: int | None = None,
        score: bool = False,
    ):
        self.id = next(Job._ids)
        self.ids = np.asarray(ids, dtype=np.int32)
        self.emit = emit
        self.primed = primed
        self.length = length
        self.settings = settings or SamplingSettings()
        self.seed = seed
        self.rng = np.random.default_rng(seed) if seed is not None else None
        self.rows = 0 if score else num_samples
        self.stop = tuple(stop)
        self.stream = stream
        self.logprobs = logprobs
        self.score = score
        self.cancelled = False

    def cancel(self) -> None:
        """Drop the job at the engine's next step (the client went away); nothing more is emitted."""
        self.cancelled = True


class _Running:
    """A job in the batch: its rows' text trackers and, when asked, their token scores."""

    def __init__(self, job: Job, vocab: Vocab):
        self.job = job
        self.position = 0
        last = job.ids[-1] if job.primed else None
        self.pending: list[list[str]] = [[] for _ in range(job.rows)]
        self.texts = [
            _Streams(vocab, 1, last, job.stop, self.pending[i].append if job.stream else None)
            for i in range(job.rows)
        ]
        self.tokens = np.zeros(job.rows, dtype=np.int64)
        self.done = np.zeros(job.rows, dtype=bool)
        # Without stop strings or scores no row ends early and nothing is needed per token: the
        # chosen tokens wait here, one array per step, until they are handed out.
        self.plain = not job.stop and job.logprobs is None
        self.held: list[np.ndarray] = []
        self.pieces: list[list[str]] | None = None
        self.piece_streams: list[_Streams] = []
        self.scores: list[list[TokenScore]] = [[] for _ in range(job.rows)]
        if job.logprobs is not None:
            self.pieces = [[] for _ in range(job.rows)]
            self.piece_streams = [
                _Streams(vocab, 1, last, (), self.pieces[i].append) for i in range(job.rows)
            ]


class Engine:
    """Runs jobs on one model in one batch that requests join and leave between steps.

    ``max_streams`` caps the rows of the batch (a job takes ``num_samples`` rows); jobs beyond it wait,
    and at most ``max_waiting`` of them: :meth:`submit` raises :class:`Overloaded` past that.
    ``deliver``, when given, receives once per step the list of ``(job, events)`` of that step and
    is responsible for handing them on (the HTTP layer passes them to its event loop in one call);
    without it each job's ``emit`` is called directly from the worker thread. A streaming job's new
    text is handed out at most every ``flush_interval`` seconds (see the module's docstring).
    """

    def __init__(
        self,
        model: Model,
        vocab: Vocab,
        *,
        max_streams: int = 64,
        max_waiting: int = 256,
        deliver: Callable[[list[tuple[Job, list[Event]]]], None] | None = None,
        flush_interval: float = 0.02,
    ):
        self.model = model
        self.vocab = vocab
        self.max_streams = max_streams
        self.max_waiting = max_waiting
        self.deliver = deliver
        self.flush_interval = flush_interval
        self._next_flush = 0.0
        self._cond = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: list[_Running] = []
        self._logits = np.zeros((0, len(vocab)), dtype=np.float32)
        self._state = None
        self._draws: list[tuple[slice | np.ndarray, SamplingSettings, np.random.Generator]] | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._shared_rng = np.random.default_rng()
        self.steps = 0

    # -- the client side (any thread) ---------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="seqpred-engine", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue ``job``; it joins the batch at the next step where its rows fit."""
        if job.rows > self.max_streams:
            raise ValueError(f"a job of {job.rows} rows never fits a batch of {self.max_streams}")
        with self._cond:
            if self._stopping:
                raise Overloaded("the server is shutting down")
            if len(self._waiting) >= self.max_waiting:
                raise Overloaded(f"{len(self._waiting)} requests are already waiting")
            self._waiting.append(job)
            self._cond.notify()

    def wake(self) -> None:
        """Make the worker look again (after a cancellation, so that waiting jobs may move up)."""
        with self._cond:
            self._cond.notify()

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new jobs, finish the running and waiting ones, and end the worker thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running_streams(self) -> int:
        """Rows of the running batch (read from any thread)."""
        return len(self._logits)

    def stats(self) -> dict[str, int]:
        running = list(self._running)
        return {
            "running_requests": len(running),
            "running_streams": self.running_streams,
            "waiting_requests": len(self._waiting),
            "steps": self.steps,
        }

    # -- the worker thread --------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._running and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._waiting and not self._running:
                    return
                admitted = self._admit()
            try:
                self._iterate(admitted)
            except Exception as exc:  # a backend failure: end every job in the batch, keep serving
                reason = str(exc).splitlines()[0] if str(exc) else ""
                message = f"generation failed: {type(exc).__name__}" + (f": {reason}" if reason else "")
                failed: list[tuple[Job, list[Event]]] = [
                    (job, [Failed(message)]) for job in [r.job for r in self._running] + admitted
                ]
                self._running = []
                self._draws = None
                self._logits = self._logits[:0]
                self._state = None
                self._send(failed)

    def _admit(self) -> list[Job]:
        """Waiting jobs that fit, in order of arrival (called with the lock held)."""
        free = self.max_streams - sum(r.job.rows for r in self._running if not r.job.cancelled)
        admitted = []
        while self._waiting:
            job = self._waiting[0]
            if job.cancelled:
                self._waiting.popleft()
                continue
            if job.rows > free:
                break
            free -= job.rows
            admitted.append(self._waiting.popleft())
        return admitted

    def _iterate(self, admitted: list[Job]) -> None:
        out: list[tuple[Job, list[Event]]] = []
        joining: list[tuple[_Running, np.ndarray, np.ndarray]] = []
        for job in admitted:
            if job.score:
                out.append((job, [Done([self._score(job)])]))
            elif job.length == 0:
                empty: list[TokenScore] | None = [] if job.logprobs is not None else None
                out.append((job, [Done([Sample("", "length", 0, empty) for _ in range(job.rows)])]))
            else:
                logits, state = self._prefill(job)
                joining.append((_Running(job, self.vocab), logits, state))
        self._regroup([not r.job.cancelled for r in self._running], joining)

        # Sample every job's rows from the batch's logits, then feed the chosen tokens in one step.
        chosen = self._sample()
        now = time.monotonic()
        flush = now >= self._next_flush
        if flush:
            self._next_flush = now + self.flush_interval
        offset = 0
        keep = []
        for running in self._running:
            rows = running.job.rows
            if running.plain:
                events = self._hold(running, chosen[offset : offset + rows], flush)
                finished = running.position == running.job.length
            else:
                events = self._advance(
                    running, chosen[offset : offset + rows], self._logits[offset : offset + rows]
                )
                finished = bool(running.done.all()) or running.position == running.job.length
            offset += rows
            keep.append(not finished)
            if finished:
                if running.plain:
                    events += self._release(running)
                    running.tokens[:] = running.position
                samples = self._samples(running)  # releases the text held back for stop strings
                if running.job.stream:
                    events += [Delta(i, "".join(held)) for i, held in enumerate(running.pending) if held]
                events.append(Done(samples))
            if events:
                out.append((running.job, events))
        staying = np.repeat(np.asarray(keep, dtype=bool), [r.job.rows for r in self._running])
        tokens = chosen[staying]
        self._regroup(keep, [])
        if self._running:
            self._logits, self._state = self.model.step(tokens, self._state)
            self.steps += 1
        self._send(out)

    def _send(self, out: list[tuple[Job, list[Event]]]) -> None:
        out = [(job, events) for job, events in out if not job.cancelled]
        if not out:
            return
        if self.deliver is not None:
            self.deliver(out)
        else:
            for job, events in out:
                job.emit(events)

    def _prefill(self, job: Job) -> tuple[np.ndarray, np.ndarray]:
        """The job's first logits and its state (canonical array), as Generator.generate starts."""
        state = self.model.initial_state(job.rows)
        batch = np.repeat(job.ids[None, :], job.rows, axis=0)
        if batch.shape[1] > 1:
            _, state = self.model.forward(batch[:, :-1], state)
        logits, state = self.model.step(batch[:, -1], state)
        return np.asarray(logits), self.model.state_to_numpy(state)

    def _regroup(self, keep: list[bool], joining: list[tuple[_Running, np.ndarray, np.ndarray]]) -> None:
        """Drop the rows of jobs not kept and append the joining ones; the state is converted to
        the canonical layout and back only when the membership changes."""
        if all(keep) and not joining:
            return
        rows = np.repeat(np.asarray(keep, dtype=bool), [r.job.rows for r in self._running])
        parts = [self._logits[rows]] + [logits for _, logits, _ in joining]
        states = []
        if self._state is not None and rows.any():
            states.append(self.model.state_to_numpy(self._state)[:, :, rows])
        states += [state for _, _, state in joining]
        self._running = [r for r, k in zip(self._running, keep, strict=True) if k] + [
            r for r, _, _ in joining
        ]
        self._logits = np.concatenate(parts) if parts else self._logits[:0]
        self._draws = None
        self._state = self.model.state_from_numpy(np.concatenate(states, axis=2)) if states else None

    def _sample(self) -> np.ndarray:
        """One token per row: each seeded job from its own generator, the others grouped by settings."""
        if self._draws is None:
            self._draws = self._plan_draws()
        chosen = np.empty(len(self._logits), dtype=np.int32)
        for rows, settings, rng in self._draws:
            chosen[rows] = sample(self._logits[rows], settings, rng)
        return chosen

    def _plan_draws(self) -> list[tuple[slice | np.ndarray, SamplingSettings, np.random.Generator]]:
        """The sampling calls of one step, which change only with the batch's membership: rows,
        settings and generator of each seeded (or greedy) job, then of each group of the others."""
        draws: list[tuple[slice | np.ndarray, SamplingSettings, np.random.Generator]] = []
        shared: dict[SamplingSettings, list[np.ndarray]] = {}
        offset = 0
        for running in self._running:
            job = running.job
            if job.rng is not None or job.settings.greedy:
                draws.append((slice(offset, offset + job.rows), job.settings, job.rng or self._shared_rng))
            else:
                shared.setdefault(job.settings, []).append(np.arange(offset, offset + job.rows))
            offset += job.rows
        for settings, groups in shared.items():
            rows = np.concatenate(groups)
            draws.append((slice(0, offset) if len(rows) == offset else rows, settings, self._shared_rng))
        return draws

    def _hold(self, running: _Running, chosen: np.ndarray, flush: bool) -> list[Event]:
        """Add one token to each row of a job without stop strings or scores; its text is handed
        out when ``flush`` says so, or at once for the job's first token."""
        running.position += 1
        running.held.append(chosen)
        if running.job.stream and (flush or running.position == 1):
            return self._release(running)
        return []

    def _release(self, running: _Running) -> list[Event]:
        """Turn the held tokens of a job into its rows' text: the events of a streaming job."""
        if not running.held:
            return []
        block = np.stack(running.held, axis=1)
        running.held.clear()
        events: list[Event] = []
        for i, texts in enumerate(running.texts):
            texts.add_block(block[i : i + 1])
            if running.job.stream and running.pending[i]:
                events.append(Delta(i, "".join(running.pending[i])))
                running.pending[i].clear()
        return events

    def _advance(self, running: _Running, chosen: np.ndarray, logits: np.ndarray) -> list[Event]:
        """Add one token to each of the job's rows; the events of a streaming job."""
        job = running.job
        running.position += 1
        scores = self._token_scores(running, chosen, logits) if job.logprobs is not None else None
        events: list[Event] = []
        for i in range(job.rows):
            if running.done[i]:
                continue
            running.texts[i].add(chosen[i : i + 1])
            running.tokens[i] += 1
            if running.texts[i].all_done:
                running.done[i] = True
            if scores is not None:
                running.scores[i].append(scores[i])
            if job.stream:
                text = "".join(running.pending[i])
                running.pending[i].clear()
                if text or scores is not None:
                    events.append(Delta(i, text, [scores[i]] if scores is not None else []))
        return events

    def _token_scores(self, running: _Running, chosen: np.ndarray, logits: np.ndarray) -> list[TokenScore]:
        logp = log_softmax(np.asarray(logits, dtype=np.float64))
        top = np.argsort(-logp, axis=-1, kind="stable")[:, : running.job.logprobs or 0]
        pieces = running.pieces
        assert pieces is not None, "a job that asks for scores collects its pieces"
        scores = []
        for i, token in enumerate(chosen):
            tracker = running.piece_streams[i]
            alternatives = {self._piece(tracker, int(t)): float(logp[i, t]) for t in top[i]}
            tracker.add(chosen[i : i + 1])
            scores.append(TokenScore("".join(pieces[i]), float(logp[i, token]), alternatives))
            pieces[i].clear()
        return scores

    def _piece(self, tracker: _Streams, token: int) -> str:
        """How ``token`` would read as the next piece of a row's text (a word is spaced)."""
        if self.vocab.level == "char":
            return self.vocab.tokens[token]
        previous = tracker.previous[0]
        return detokenize([previous, self.vocab.tokens[token]], "word")[len(previous) :]

    def _samples(self, running: _Running) -> list[Sample]:
        texts = [streams.texts()[0] for streams in running.texts]
        samples = []
        for i, text in enumerate(texts):
            scores = None
            if running.job.logprobs is not None:
                scores, length = [], 0
                for score in running.scores[i]:
                    if length >= len(text) and running.done[i]:
                        break  # the tokens of the stop string
                    scores.append(score)
                    length += len(score.text)
            samples.append(
                Sample(text, "stop" if running.done[i] else "length", int(running.tokens[i]), scores)
            )
        return samples

    def _score(self, job: Job) -> Sample:
        """Every token of ``job.ids`` scored from the tokens before it, from a zero state with the
        state carried, in the chunks of :func:`seqpred.scoring.carried_loss`; the first token has no
        score. ``job.logprobs`` alternatives come with each score."""
        ids = job.ids
        if len(ids) == 0:
            return Sample("", "length", 0, [])
        rows = []
        state = self.model.initial_state(1)
        for start in range(0, len(ids) - 1, CARRIED_CHUNK):
            logits, state = self.model.forward(
                ids[None, start : min(start + CARRIED_CHUNK, len(ids) - 1)], state
            )
            rows.append(log_softmax(np.asarray(logits, dtype=np.float64))[0])
        logp = np.concatenate(rows) if rows else np.zeros((0, len(self.vocab)))
        top = np.argsort(-logp, axis=-1, kind="stable")[:, : job.logprobs or 0]
        pieces: list[str] = []
        tracker = _Streams(self.vocab, 1, None, (), pieces.append)
        scores = []
        for position, token in enumerate(ids):
            if position == 0:
                logprob, alternatives = None, None
            else:
                row = logp[position - 1]
                logprob = float(row[token])
                alternatives = {self._piece(tracker, int(t)): float(row[t]) for t in top[position - 1]}
            tracker.add(ids[position : position + 1])
            scores.append(TokenScore("".join(pieces), logprob, alternatives))
            pieces.clear()
        return Sample("".join(s.text for s in scores), "length", 0, scores)
