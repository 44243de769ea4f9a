"""Windows over the encoded corpus and the seeded batch order that every backend receives.

Windows are zero-copy views (``sliding_window_view``): only the rows of one batch are ever
copied. The ids may be a read-only ``np.memmap`` of the token cache: windows, the validation split
and batches index it without reading more of it than the rows they take. A window holds
``seq_len + 1`` tokens: the inputs and, shifted by one, the targets.

* ``sequence`` objective: an epoch is ``len // seq_len`` windows (as many tokens as the text) whose
  starts are drawn uniformly from every position of the text; the targets are the next token at
  every position. Starts anywhere learned faster per predicted character than starts on a grid of
  ``seq_len`` with one random offset per epoch (the README's "Why these defaults").
* ``last`` objective (the tutorial's): a window starts at every token; the target is the token
  after the window.

The order is a function of (seed, epoch) alone, so a batch is fully determined by the global step:
resuming at step ``s`` needs nothing but ``s``.
"""

from __future__ import annotations

import contextlib
import mmap
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import CorpusError, UsageError


def windows(ids: np.ndarray, length: int) -> np.ndarray:
    """All windows of ``length`` consecutive tokens, as a read-only view [N, length]."""
    return sliding_window_view(ids, length)


def split_validation(ids: np.ndarray, fraction: float, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Training head and contiguous validation tail (views), each long enough for one window."""
    if not 0.0 <= fraction < 1.0:
        raise UsageError(f"val-fraction must be in [0, 1), got {fraction}")
    need = seq_len + 1
    n_val = int(round(len(ids) * fraction))
    if fraction > 0:
        n_val = max(n_val, need)
    if len(ids) - n_val < need:
        minimum = need + (need if fraction > 0 else 0)
        raise CorpusError(
            f"the corpus has {len(ids):,} tokens, shorter than one training window: with --seq-len {seq_len}"
            f" and --val-fraction {fraction} it needs at least {minimum:,}; use a longer corpus or a smaller"
            " --seq-len"
        )
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


@dataclass(frozen=True)
class Batch:
    inputs: np.ndarray  # [B, T] int32
    targets: np.ndarray  # [B, T] (sequence) or [B] (last), int32

    @property
    def predicted_tokens(self) -> int:
        return int(self.targets.size)


def _as_batch(rows: np.ndarray, objective: str) -> Batch:
    # Corpora are stored in the smallest integer type; backends always receive int32.
    inputs = np.ascontiguousarray(rows[:, :-1], dtype=np.int32)
    targets = np.ascontiguousarray(rows[:, 1:] if objective == "sequence" else rows[:, -1], dtype=np.int32)
    return Batch(inputs, targets)


def release(ids: np.ndarray) -> None:
    """Let go of the pages of a mapped corpus that reading rows has mapped into this process.

    The kernel maps a whole page-cache folio (up to megabytes) where one row is read, so batches
    drawn at random would soon count most of a large corpus as this process's resident memory:
    clean pages the kernel could reclaim, but counted all the same. Dropping the mapping after each
    batch costs one system call; the pages stay in the page cache for the next read.
    """
    mapping = getattr(ids, "_mmap", None)
    if mapping is not None:
        with contextlib.suppress(ValueError, OSError):
            mapping.madvise(mmap.MADV_DONTNEED)


#: Rows read from a mapped corpus between two releases: at most a few MB mapped at any moment.
ROWS_PER_RELEASE = 8


def take_rows(view: np.ndarray, starts: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``view[starts]`` (a copy), releasing the pages of ``ids`` as it goes when they are mapped."""
    if getattr(ids, "_mmap", None) is None:
        return view[starts]
    parts = []
    for i in range(0, len(starts), ROWS_PER_RELEASE):
        parts.append(view[starts[i : i + ROWS_PER_RELEASE]])
        release(ids)
    return np.concatenate(parts) if parts else view[starts]


class TrainBatches:
    """Seeded, epoch-shuffled batches of training windows."""

    def __init__(self, ids: np.ndarray, seq_len: int, batch_size: int, objective: str, seed: int):
        if batch_size < 1:
            raise UsageError(f"batch-size must be a positive integer, got {batch_size}")
        self.ids = ids
        self.seq_len = seq_len
        self.objective = objective
        self.seed = seed
        self.view = windows(ids, seq_len + 1)
        if objective == "sequence":
            self.windows_per_epoch = max(1, (len(ids) - 1) // seq_len)
        else:
            self.windows_per_epoch = len(self.view)
        self.batch_size = min(batch_size, self.windows_per_epoch)
        self.batches_per_epoch = self.windows_per_epoch // self.batch_size

    def _epoch_plan(self, epoch: int) -> np.ndarray:
        """The start of every window of epoch ``epoch``, in the order they are trained."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.objective == "sequence":
            # With replacement: 8 bytes per window, a window per seq_len tokens of text.
            return rng.integers(0, len(self.view), size=self.windows_per_epoch)
        # int32 and shuffled in place: 4 bytes per window, where a window starts at every token.
        order = np.arange(
            self.windows_per_epoch, dtype=np.int32 if self.windows_per_epoch < 2**31 else np.int64
        )
        rng.shuffle(order)
        return order

    @property
    def plan_bytes(self) -> int:
        """Memory an epoch's plan takes: all that training holds of the corpus, whose ids may be mapped."""
        if self.objective == "sequence":
            return 8 * self.windows_per_epoch
        return (4 if self.windows_per_epoch < 2**31 else 8) * self.windows_per_epoch

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of global step ``step``."""
        return divmod(step, self.batches_per_epoch)

    def _take(self, plan: np.ndarray, index: int) -> Batch:
        starts = plan[index * self.batch_size : (index + 1) * self.batch_size]
        return _as_batch(take_rows(self.view, starts.astype(np.int64), self.ids), self.objective)

    def batch(self, step: int) -> Batch:
        """The batch of global step ``step`` (0-based)."""
        epoch, index = self.position(step)
        return self._take(self._epoch_plan(epoch), index)

    def iter_from(self, step: int):
        """Batches from global step ``step`` on, forever; each epoch's plan is computed once."""
        epoch, index = self.position(step)
        while True:
            plan = self._epoch_plan(epoch)
            for i in range(index, self.batches_per_epoch):
                yield self._take(plan, i)
            epoch, index = epoch + 1, 0


def eval_batches(ids: np.ndarray, seq_len: int, objective: str, batch_size: int = 256):
    """Every evaluation window of ``ids`` once, in order: non-overlapping for ``sequence``."""
    view = windows(ids, seq_len + 1)
    if objective == "sequence":
        view = view[::seq_len]
    for start in range(0, len(view), batch_size):
        batch = _as_batch(view[start : start + batch_size], objective)
        release(ids)
        yield batch


class StripeBatches:
    """Batches for stateful training (truncated back-propagation through time).

    The training text is cut into ``batch_size`` contiguous stripes, one per batch row; batch ``i``
    of an epoch holds, in row ``r``, the ``i``-th window of stripe ``r``, so each row continues
    where the same row of the previous batch stopped and the trainer carries the state from one
    batch to the next, resetting it at every epoch. Each epoch shifts every stripe by a random
    offset below ``seq_len`` (a function of (seed, epoch)), so window boundaries move between epochs.
    Only the ``sequence`` objective trains this way.
    """

    def __init__(self, ids: np.ndarray, seq_len: int, batch_size: int, seed: int):
        if batch_size < 1:
            raise UsageError(f"batch-size must be a positive integer, got {batch_size}")
        self.ids = ids
        self.seq_len = seq_len
        self.seed = seed
        # The offset takes up to seq_len - 1 tokens; every stripe needs at least one whole window.
        usable = len(ids) - seq_len
        self.batch_size = max(1, min(batch_size, usable // (seq_len + 1)))
        self.stripe = usable // self.batch_size
        self.batches_per_epoch = max(1, (self.stripe - 1) // seq_len)

    #: Stripes need no plan: a batch's rows are computed from its step.
    plan_bytes = 0

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of global step ``step``; index 0 resets the state."""
        return divmod(step, self.batches_per_epoch)

    def _offset(self, epoch: int) -> int:
        return int(np.random.default_rng([self.seed, epoch, 1]).integers(0, self.seq_len))

    def batch(self, step: int) -> Batch:
        epoch, index = self.position(step)
        starts = self._offset(epoch) + np.arange(self.batch_size) * self.stripe + index * self.seq_len
        return _as_batch(take_rows(windows(self.ids, self.seq_len + 1), starts, self.ids), "sequence")

    def iter_from(self, step: int):
        """Batches from global step ``step`` on, forever."""
        while True:
            yield self.batch(step)
            step += 1
