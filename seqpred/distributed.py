"""Data-parallel training: one model trained by several replicas, each on its own rows of every batch.

Every replica builds the same seeded global batch (:mod:`seqpred.batches`) and trains its own
contiguous block of rows (:func:`row_blocks`); the backend averages the gradients with its
framework's own collective (``torch.distributed``, ``tf.distribute``), so that every replica applies
the same update. The core owns the arithmetic: which rows a replica trains, and how losses are
combined (a mean over every predicted token, from each process's sum and count, :class:`Replicas`).
A backend only translates it into its framework.

A backend declares how it runs replicas in :attr:`seqpred.backend.Backend.data_parallel`:

* ``processes``: one process per replica (torch). ``torchrun`` starts them (its environment says
  which rank this process is), or ``seqpred train --replicas N``, which starts them through the
  backend's :meth:`~seqpred.backend.Backend.launch` (torch's elastic launcher). The processes
  combine losses and decisions (stop, time limit) through the backend's :class:`Collective`.
* ``devices``: one process driving several devices (keras: ``tf.distribute.MirroredStrategy``);
  its model receives the whole batch and hands each device its block of rows.

Only the first process (rank 0) writes the run folder, the history and the progress. The batch
order is global, so a run may resume on a different number of replicas.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .batches import Batch
from .errors import BackendError, SeqpredError, UsageError
from .run_folder import RunWriter
from .runs import RunRecord
from .scoring import carried_loss, window_loss

#: How a backend runs replicas (:attr:`seqpred.backend.Backend.data_parallel`).
PROCESSES, DEVICES = "processes", "devices"


class Collective(Protocol):
    """What the processes of one data-parallel run compute together, in the backend's framework."""

    def all_sum(self, values: np.ndarray) -> np.ndarray:
        """The element-wise sum of ``values`` (float64 [K]) over every process, on every process."""
        ...

    def close(self) -> None:
        """Leave the group; called once, when training ends."""
        ...


class LocalCollective:
    """The collective of a run in one process: the sum over one process is its own values."""

    def all_sum(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def close(self) -> None:
        pass


def row_blocks(rows: int, parts: int) -> list[slice]:
    """``parts`` contiguous, equal blocks of ``rows`` rows: block ``r`` is replica ``r``'s."""
    if rows % parts:
        raise UsageError(
            f"a batch of {rows} windows does not split evenly into {parts} replicas; "
            f"use a --batch-size that is a multiple of {parts}"
        )
    size = rows // parts
    return [slice(r * size, (r + 1) * size) for r in range(parts)]


@dataclass(frozen=True)
class Launched:
    """What a launcher (torchrun, torch's elastic agent) told this process in its environment."""

    rank: int
    world_size: int
    local_rank: int


def launched() -> Launched | None:
    """This process's place in a run started by a launcher, or None outside one (or alone in one)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UsageError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers (torchrun sets them)"
        ) from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise UsageError(f"RANK {rank} is outside WORLD_SIZE {world}")
    return Launched(rank, world, local)


def is_first_process() -> bool:
    """Whether this process reports and writes: alone, or rank 0 of a launched run."""
    env = launched()
    return env is None or env.rank == 0


def dropout_seed(seed: int, replica: int) -> int:
    """The dropout seed of replica ``replica``: the run's own for replica 0 (so one replica trains as a
    single process does), a derived one for the others, so that replicas draw different masks."""
    if replica == 0:
        return seed
    digest = hashlib.sha256(f"{seed}/{replica}".encode()).digest()
    return int.from_bytes(digest[:4], "little")  # small: backends multiply it by the step's factor


@dataclass(frozen=True)
class Replicas:
    """The data-parallel layout of a run as one process sees it; handed to the backend's model.

    ``count`` replicas in all, spread over ``processes`` processes (one each for ``processes``
    backends, one process driving them all for ``devices`` backends); this process is ``rank``, and
    ``local_rank`` on its machine (the GPU it takes). ``device`` is the run's ``--device``.
    """

    count: int = 1
    processes: int = 1
    rank: int = 0
    local_rank: int = 0
    device: str = "cpu"

    @property
    def writer(self) -> bool:
        """Whether this process writes the run folder, the history and the progress (rank 0)."""
        return self.rank == 0

    @property
    def local(self) -> int:
        """Replicas this process drives."""
        return self.count // self.processes

    def process_rows(self, rows: int) -> slice:
        """This process's rows of a global batch of ``rows`` rows."""
        blocks = row_blocks(rows, self.count)
        return slice(blocks[self.rank * self.local].start, blocks[(self.rank + 1) * self.local - 1].stop)

    def device_blocks(self, rows: int) -> list[slice]:
        """The blocks of the ``rows`` rows this process was given, one per replica it drives."""
        return row_blocks(rows, self.local)

    def device_shares(self, rows: int) -> list[slice]:
        """Contiguous shares of ``rows`` rows that need not divide evenly (validation), one per replica
        this process drives; their sizes differ by at most one."""
        return [slice(*_share(rows, k, self.local)) for k in range(self.local)]


class Team:
    """The processes of one run training together: the rows each takes and the reductions they share.

    With one process every method is the identity of the single-process trainer, bit for bit.
    """

    def __init__(self, replicas: Replicas, collective: Collective):
        self.replicas = replicas
        self.collective = collective

    @property
    def alone(self) -> bool:
        return self.replicas.processes == 1

    def take(self, batch: Batch) -> Batch:
        """This process's rows of the global ``batch``."""
        if self.replicas.count == 1:
            return batch
        rows = self.replicas.process_rows(len(batch.inputs))
        return Batch(batch.inputs[rows], batch.targets[rows])

    def step(self, loss: float, tokens: int, *flags: bool) -> tuple[float, list[bool]]:
        """The mean loss over every process's ``tokens``, and whether each flag is raised in any process."""
        if self.alone:
            return loss, list(flags)
        total = self.collective.all_sum(np.array([loss * tokens, tokens, *flags], dtype=np.float64))
        return float(total[0] / total[1]), [bool(f > 0) for f in total[2:]]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is raised in any process; every process gets the same answer."""
        if self.alone:
            return flag
        return bool(self.collective.all_sum(np.array([float(flag)]))[0] > 0)

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if not self.alone:
            self.collective.all_sum(np.zeros(1))

    def window_loss(self, model: Any, ids: np.ndarray, spec: Any) -> float:
        """:func:`seqpred.scoring.window_loss` of ``ids``, each process scoring a contiguous share of the
        windows; the mean over all of them."""
        if self.alone:
            return window_loss(model, ids, spec)
        seq_len, size = spec.seq_len, self.replicas.processes
        # sequence: windows start every seq_len tokens; last: at every token, with one target each.
        step = seq_len if spec.objective == "sequence" else 1
        count = (len(ids) - seq_len - 1) // step + 1 if len(ids) > seq_len else 0
        first, last = _share(count, self.replicas.rank, size)
        tokens = (last - first) * (seq_len if spec.objective == "sequence" else 1)
        local = 0.0
        if last > first:
            part = ids[first * step : (last - 1) * step + seq_len + 1]
            local = window_loss(model, part, spec) * tokens
        total = self.collective.all_sum(np.array([local, tokens], dtype=np.float64))
        return float(total[0] / total[1]) if total[1] else float("nan")

    def carried_loss(self, model: Any, ids: np.ndarray, stripes: int) -> float:
        """:func:`seqpred.scoring.carried_loss` with ``stripes`` stripes shared out between the processes."""
        if self.alone:
            return carried_loss(model, ids, stripes=stripes)
        stripes = max(1, min(int(stripes), len(ids) - 1))
        length = (len(ids) - 1) // stripes
        first, last = _share(stripes, self.replicas.rank, self.replicas.processes)
        tokens = (last - first) * length
        local = 0.0
        if last > first:
            part = ids[first * length : last * length + 1]
            local = carried_loss(model, part, stripes=last - first) * tokens
        total = self.collective.all_sum(np.array([local, tokens], dtype=np.float64))
        return float(total[0] / total[1])

    def close(self) -> None:
        self.collective.close()


def _share(items: int, rank: int, size: int) -> tuple[int, int]:
    """[first, last) of ``items`` for process ``rank`` of ``size``: contiguous, sizes differ by at most 1."""
    base, extra = divmod(items, size)
    first = rank * base + min(rank, extra)
    return first, first + base + (rank < extra)


def plan(config: Any, backend: Callable[[], Any]) -> Replicas | None:
    """The replicas of a run of ``config``; None for one replica in one process (``backend`` is then
    never called: it looks the backend up).

    A :class:`Replicas` with ``processes`` > 1 and no launcher around it means the processes are
    still to be started (:func:`launch`). Refuses what cannot run, in one line.
    """
    env = launched()
    if env is None and config.replicas == 1:
        return None
    kind = getattr(backend(), "data_parallel", None)
    name = config.backend
    if config.state == "carry":
        raise UsageError("--state carry trains on one replica; use --state reset with --replicas")
    if env is not None:
        if kind != PROCESSES:
            how = "use --replicas N instead of torchrun" if kind == DEVICES else "train in one process"
            raise UsageError(
                f"backend {name!r} cannot train in several processes (started {env.world_size} by a "
                f"launcher such as torchrun); {how}"
            )
        if config.replicas not in (1, env.world_size):
            raise UsageError(
                f"--replicas {config.replicas} but the launcher started {env.world_size} processes; "
                f"leave --replicas out under torchrun"
            )
        return Replicas(env.world_size, env.world_size, env.rank, env.local_rank, config.device)
    if kind not in (PROCESSES, DEVICES):
        raise UsageError(
            f"backend {name!r} cannot train on several replicas (data parallelism); "
            f"use --backend torch or keras, or --replicas 1"
        )
    check_layout(Replicas(config.replicas), config, config.batch_size)  # before any process starts
    processes = config.replicas if kind == PROCESSES else 1
    return Replicas(config.replicas, processes, 0, 0, config.device)


def check_layout(replicas: Replicas | None, config: Any, batch_rows: int) -> None:
    """Refuse, in one line, a batch that the replicas cannot share evenly."""
    if replicas is None or replicas.count == 1:
        return
    if config.state == "carry":
        raise UsageError("--state carry trains on one replica; use --state reset with --replicas")
    if batch_rows % replicas.count:
        shrunk = "" if batch_rows == config.batch_size else f" (the corpus holds only {batch_rows} windows)"
        raise UsageError(
            f"--batch-size {batch_rows}{shrunk} does not split evenly into {replicas.count} replicas; "
            f"use a multiple of {replicas.count}"
        )


class SecondaryWriter(RunWriter):
    """The run folder as a process other than rank 0 sees it: read, never written."""

    def prepare(self, *, force: bool) -> None:
        pass

    @contextlib.contextmanager
    def locked(self):
        yield

    def clear(self) -> None:
        pass

    def start(self, spec: Any, config: Any, vocab: Any, backend: str, device: str) -> RunRecord:
        return RunRecord(backend=backend, device=device)

    def checkpoint(self, record, weights, *, optimizer, carried, improved) -> None:
        pass

    def finish(self, record: RunRecord) -> None:
        pass


class NullSink:
    """Where a secondary process writes its history: nowhere."""

    def __enter__(self) -> NullSink:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


# -- starting the processes of a run: ``seqpred train --replicas N`` on a ``processes`` backend ------


class ReplicaFailed(SeqpredError):
    """A replica process stopped with an error; its message and exit code, passed on."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class _QueueReporter:
    """Rank 0's reporter in a started process: sends every event to the reporter of the process that
    started it."""

    def __init__(self, queue: Any):
        self.queue = queue

    def start(self, total_steps, first_step, info):
        self.queue.put(("start", (total_steps, first_step, info)))

    def step(self, record):
        self.queue.put(("step", (record,)))

    def validation(self, record):
        self.queue.put(("validation", (record,)))

    def end(self, result):
        self.queue.put(("end", (result,)))


def replica_main(job: dict[str, Any], queue: Any) -> None:
    """What each started process runs: its replica of the training ``job`` describes."""
    from .config import TrainConfig
    from .train import Trainer

    with contextlib.suppress(ImportError, SeqpredError):  # the thread count is an optimisation
        from .threads import apply_option

        apply_option(job["config"].get("threads"))
    import signal

    # The launcher ignores Ctrl-C while its processes handle it (each stops at the same step).
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    env = launched()
    writer = env is None or env.rank == 0
    try:
        trainer = Trainer(
            TrainConfig(**job["config"]),
            job["out"],
            reporter=_QueueReporter(queue) if writer else None,
            force=job["force"],
        )
        trainer.resuming = job["resuming"]
        trainer.run()
    except SeqpredError as exc:
        queue.put(("error", (env.rank if env else 0, str(exc), exc.exit_code)))
        if exc.exit_code == 130:  # stopped by a signal: the launcher is shutting down, not collecting
            queue.close()
            queue.join_thread()
            os._exit(130)
    except BaseException as exc:
        queue.put(("error", (env.rank if env else 0, f"{type(exc).__name__}: {exc}", 1)))
        raise


def launch(backend: Any, trainer: Any, replicas: Replicas) -> Any:
    """Start ``replicas.count`` processes through the backend's launcher, each training its replica of
    ``trainer``'s run; relay rank 0's progress to ``trainer.reporter``; return rank 0's result."""
    import multiprocessing

    queue = multiprocessing.get_context("spawn").Queue()
    job = {
        "config": trainer.config.to_dict(),
        "out": str(trainer.out),
        "force": trainer.force,
        "resuming": trainer.resuming,
    }
    outcome: dict[str, Any] = {"errors": []}

    def relay() -> None:
        while True:
            kind, args = queue.get()
            if kind == "done":
                return
            if kind == "error":
                outcome["errors"].append(args)
                continue
            if kind == "end":
                outcome["result"] = args[0]
            getattr(trainer.reporter, kind)(*args)

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    failure: BaseException | None = None
    try:
        backend.launch(replicas.count, replica_main, (job, queue))
    except Exception as exc:  # the launcher's report of a failed process; the replica's own message wins
        failure = exc
    finally:
        queue.put(("done", ()))
        thread.join()
    errors = sorted(outcome["errors"])  # rank 0's message first: the others usually follow from it
    if errors:
        rank, message, code = errors[0]
        raise ReplicaFailed(message if rank == 0 else f"replica {rank}: {message}", code)
    if "result" not in outcome:  # rank 0 finished: a process failing on its way out loses nothing
        lines = str(failure or "").splitlines()
        said = next((line.strip() for line in lines if "exitcode" in line or "Error" in line), "")
        raise BackendError(
            f"backend {trainer.config.backend!r}: a replica process stopped without a result"
            + (f" ({' '.join(said.split())})" if said else "")
        )
    return outcome["result"]
