"""Thread counts: asked for, shared among replicas, measured from the cores free now, and applied to
BLAS, torch and TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from seqpred import threads
from seqpred.errors import UsageError
from seqpred.threads import THREADS_VARIABLE, busy_cores, free_cores, threads_for, usable_cores

from .conftest import TINY, one_line_error


@pytest.fixture(autouse=True)
def _nothing_asked(monkeypatch):
    monkeypatch.delenv(THREADS_VARIABLE, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads, "_INHERITED_OMP", "")


def test_a_count_asked_for_is_shared_among_the_processes(monkeypatch):
    assert threads_for(4) == 4
    assert threads_for(4, processes=2) == 2
    assert threads_for(3, processes=2) == 1
    assert threads_for(1, processes=8) == 1  # never 0
    monkeypatch.setenv(THREADS_VARIABLE, "6")
    assert threads_for() == 6 and threads_for(processes=3) == 2
    assert threads_for(2) == 2  # the option wins over the variable


def test_the_inherited_omp_num_threads_is_honoured_after_seqpreds_own_variable(monkeypatch):
    monkeypatch.setattr(threads, "_INHERITED_OMP", "3")
    assert threads_for() == 3
    monkeypatch.setenv(THREADS_VARIABLE, "2")
    assert threads_for() == 2


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_variable_is_one_clear_error(monkeypatch, value):
    monkeypatch.setenv(THREADS_VARIABLE, value)
    with pytest.raises(UsageError, match="SEQPRED_THREADS must be a whole number of threads, at least 1"):
        threads_for()


def test_without_a_request_the_free_cores_are_used_split_among_replicas(monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=0.1: 0.0)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    assert threads_for() == 8 and threads_for(processes=4) == 2 and threads_for(processes=16) == 1
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=0.1: 2.9)
    assert threads_for() == 5  # three cores mostly busy
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=0.1: 2.2)
    assert threads_for() == 6  # the third is busy a fifth of the time: free enough
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=0.1: 8.0)
    assert threads_for() == 1


def test_a_recent_measurement_of_the_free_cores_is_reused(monkeypatch):
    samples = []
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=0.1: samples.append(seconds) or 1.0)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads, "_last_free", None)
    assert threads.recent_free_cores() == 3 and len(samples) == 1  # nothing measured yet: measured
    assert threads.recent_free_cores() == 3 and len(samples) == 1  # reused
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=0.1: samples.append(seconds) or 3.0)
    monkeypatch.setattr(threads, "_last_free", (time.monotonic() - 60, 3))
    assert threads.recent_free_cores(max_age=10) == 1 and len(samples) == 2  # too old: measured again


def test_torchrun_processes_share_the_cores(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv(THREADS_VARIABLE, "4")
    assert threads.apply_option(None) == 2


def test_a_busy_core_is_seen():
    """A CPU-bound process makes at least most of a core busy, whatever else runs."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert busy_cores(0.5) >= 0.7
        assert 1 <= free_cores() <= max(1, usable_cores() - 1)
    finally:
        spinner.kill()
        spinner.wait()


def test_this_processs_own_threads_are_not_counted(monkeypatch):
    """A thread of this process that spins through the sample (onnxruntime's, after its session's
    last call) is not another program: it leaves the count of busy cores as it was."""
    ticks = iter([{0: (0, 100), 1: (0, 100)}, {0: (100, 200), 1: (0, 200)}])  # CPU 0 busy throughout
    own = iter([5.0, 5.0 + threads.SAMPLE_SECONDS])  # ... and that was this process
    monkeypatch.setattr(threads, "_cpu_times", lambda cpus: next(ticks))
    monkeypatch.setattr(threads, "_own_cpu_seconds", lambda: next(own))
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1})
    clock = iter([0.0, threads.SAMPLE_SECONDS])
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: None)
    assert busy_cores() == pytest.approx(0.0, abs=1e-9)


APPLIED = textwrap.dedent(
    """
    import json, sys
    import numpy  # loaded before the count is chosen: threadpoolctl must reach it
    from seqpred.models import build_model
    from seqpred.spec import ModelSpec
    from seqpred.threads import apply_option
    from threadpoolctl import threadpool_info
    chosen = apply_option(None)
    build_model(sys.argv[1], ModelSpec(vocab_size=5, hidden=8), "cpu", 0)
    seen = {"chosen": chosen, "blas": sorted({p["num_threads"] for p in threadpool_info()})}
    if sys.argv[1] == "torch":
        import torch
        seen["framework"] = torch.get_num_threads()
    else:
        import tensorflow as tf
        seen["framework"] = tf.config.threading.get_intra_op_parallelism_threads()
    print(json.dumps(seen))
    """
)


@pytest.mark.parametrize("backend", ["torch", pytest.param("keras", marks=pytest.mark.slow)])
def test_the_count_reaches_blas_and_the_framework(backend):
    env = {**os.environ, THREADS_VARIABLE: "1"}
    env.pop("OMP_NUM_THREADS", None)
    done = subprocess.run(
        [sys.executable, "-c", APPLIED, backend], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen == {"chosen": 1, "blas": [1], "framework": 1}


def test_training_reports_the_threads_it_used(cli, corpus, tmp_path, monkeypatch):
    result = cli(
        "train", corpus, "--backend", "torch", "--out", tmp_path / "run", "--max-steps", "1",
        "--threads", "1", "--log-format", "json", *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    start = json.loads(result.stdout.splitlines()[0])
    assert start["event"] == "start" and start["threads"] == 1


@pytest.mark.parametrize("command", ["generate", "evaluate", "serve"])
def test_every_command_that_computes_refuses_a_bad_count_in_one_line(cli, tiny_run, corpus, command):
    extra = (corpus,) if command == "evaluate" else ()
    result = cli(command, tiny_run, *extra, "--threads", "0")
    one_line_error(result, 2, "--threads must be a whole number, at least 1")


def test_train_refuses_a_bad_count_in_one_line(cli, corpus, tmp_path):
    result = cli("train", corpus, "--out", tmp_path / "run", "--threads", "0")
    one_line_error(result, 2, "--threads must be a positive integer")
