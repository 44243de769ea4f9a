"""How many threads the frameworks' intra-op pools (torch, TensorFlow, BLAS, OpenMP) may use.

A pool of N threads is only as fast as its slowest thread: with one thread per core and one core
busy with another program, every parallel region of every step waits for the thread that shares
the busy core, and training can run twenty times slower than with a single thread. So seqpred does
not assume an idle machine. The count is, in this order:

* ``--threads N`` (every command that computes), or the ``threads`` training option;
* ``SEQPRED_THREADS``;
* ``OMP_NUM_THREADS`` as the process received it (the usual knob, honoured);
* otherwise measured: the cores of this process's CPU set (its affinity, capped by a cgroup CPU
  quota) that are not busy now, from ``/proc/stat`` over a tenth of a second (the 1-minute load
  average where there is no ``/proc/stat``), at least 1. A core counts as free when other programs
  use less than about a third of it.

A count asked for is the total for the command: :func:`threads_for` shares it among the processes
of a data-parallel run, each getting at least 1.

:func:`use_threads` applies a count: BLAS and OpenMP libraries already loaded (threadpoolctl), the
environment that frameworks not yet imported read (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``, ``TF_NUM_INTRAOP_THREADS``, ...), and :func:`chosen_threads`, which the torch and
keras backends read when they build a model (``torch.set_num_threads``, TensorFlow's intra- and
inter-op settings).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from .errors import UsageError

THREADS_VARIABLE = "SEQPRED_THREADS"
#: ``OMP_NUM_THREADS`` as the process received it, before :func:`use_threads` wrote its own.
_INHERITED_OMP = os.environ.get("OMP_NUM_THREADS", "")
#: What frameworks and BLAS libraries loaded after :func:`use_threads` read.
_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
)
#: The share of a core that other programs may use while it still counts as free.
FREE_CORE_SLACK = 0.3
SAMPLE_SECONDS = 0.1

#: The help of every command's ``--threads``.
THREADS_OPTION_HELP = (
    "Intra-op threads of torch, TensorFlow, onnxruntime and BLAS (or SEQPRED_THREADS). "
    "[default: as many as cores are free now, at least 1]"
)

_chosen: int | None = None
#: (when, count) of the last :func:`free_cores` measurement.
_last_free: tuple[float, int] | None = None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies of each CPU in ``cpus``, from /proc/stat."""
    times = {}
    with open("/proc/stat", encoding="ascii") as handle:
        for line in handle:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            if int(name[3:]) not in cpus:
                continue
            values = [int(v) for v in fields[:8]]
            idle = values[3] + values[4]  # idle and iowait
            total = sum(values)
            times[int(name[3:])] = (total - idle, total)
    return times


def _own_cpu_seconds() -> float:
    """CPU time of this process so far, every thread's, user and system."""
    times = os.times()
    return times.user + times.system


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float:
    """Cores of this process's CPU set that other programs keep busy now (0.0 to their number),
    sampled over ``seconds``.

    This process's own threads are left out: the count is for sharing the machine with other
    programs. While the caller sleeps through the sample, its own busy threads are mostly ones
    spinning after their last work (another onnxruntime session's, a framework's pool), which
    stop by themselves; counted, they made a new session choose threads that sleep."""
    try:
        cpus = os.sched_getaffinity(0)
        before, own_before, started = _cpu_times(cpus), _own_cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        after, own_after, ended = _cpu_times(cpus), _own_cpu_seconds(), time.monotonic()
        busy = 0.0
        for cpu, (b1, t1) in after.items():
            b0, t0 = before.get(cpu, (b1, t1))
            if t1 > t0:
                busy += (b1 - b0) / (t1 - t0)
        if after:
            own = (own_after - own_before) / max(ended - started, 1e-9)
            return max(0.0, busy - own)
    except (AttributeError, OSError, ValueError):
        pass
    try:
        return min(float(usable_cores()), os.getloadavg()[0])
    except OSError:  # pragma: no cover - every Unix has a load average
        return 0.0


def free_cores(seconds: float = SAMPLE_SECONDS) -> int:
    """Cores that are free now: usable, less those busy (each above :data:`FREE_CORE_SLACK`), at least 1."""
    global _last_free
    free = max(1, int(usable_cores() - busy_cores(seconds) + FREE_CORE_SLACK))
    _last_free = (time.monotonic(), free)
    return free


def recent_free_cores(max_age: float = 10.0) -> int:
    """:func:`free_cores` as measured in the last ``max_age`` seconds (by the command choosing its
    threads, say), else measured now: for a choice made at start-up without another tenth of a second."""
    if _last_free is not None and time.monotonic() - _last_free[0] <= max_age:
        return _last_free[1]
    return free_cores()


def _parse(value: str, where: str) -> int:
    text = value.strip()
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"{where} must be a whole number of threads, at least 1, got {value!r}")
    return int(text)


def requested_threads(requested: int | None = None) -> int | None:
    """The thread count asked for: ``requested``, else ``SEQPRED_THREADS``, else the inherited
    ``OMP_NUM_THREADS``; None when nothing was asked (then seqpred measures)."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise UsageError(f"--threads must be a whole number, at least 1, got {requested!r}")
        return requested
    value = os.environ.get(THREADS_VARIABLE, "")
    if value.strip():
        return _parse(value, THREADS_VARIABLE)
    if _INHERITED_OMP.strip():
        return _parse(_INHERITED_OMP, "OMP_NUM_THREADS")
    return None


def threads_for(requested: int | None = None, processes: int = 1) -> int:
    """Intra-op threads for each of ``processes`` processes computing side by side on this machine.

    ``requested`` (or the environment, see :func:`requested_threads`) is the total for all of them;
    without one, the free cores are measured. Each process gets an equal share, at least 1, so
    that replicas never oversubscribe the cores between them.
    """
    if processes < 1:
        raise UsageError(f"the number of processes must be at least 1, got {processes}")
    total = requested_threads(requested)
    if total is None:
        total = free_cores()
    return max(1, total // processes)


def local_processes() -> int:
    """Processes of this run on this machine: ``LOCAL_WORLD_SIZE`` under torchrun, else 1."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 1


def use_threads(threads: int) -> int:
    """Apply ``threads`` to this process's thread pools, loaded or still to load; returns it."""
    global _chosen
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UsageError(f"--threads must be a whole number, at least 1, got {threads!r}")
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(inter_op_threads(threads))
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threadpool_limits(threads)  # BLAS and OpenMP libraries already loaded (NumPy's OpenBLAS, torch's)
    _chosen = threads
    return threads


def inter_op_threads(threads: int) -> int:
    """Threads that run independent operators side by side: at most two, never more than ``threads``."""
    return min(2, threads)


def apply_option(requested: int | None) -> int:
    """What a command does with its ``--threads``: resolve (see :func:`threads_for`) and apply."""
    return use_threads(threads_for(requested, local_processes()))


def chosen_threads() -> int | None:
    """The count :func:`use_threads` applied in this process; None when seqpred chose none."""
    return _chosen
