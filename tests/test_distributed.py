"""Data-parallel training: replicas train the loss curve of one process, on torch.distributed (gloo
processes, through torchrun and through --replicas) and on tf.distribute (two logical CPU devices);
the core's row split and reductions; mixed precision; what is refused, in one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from seqpred.batches import Batch
from seqpred.distributed import (
    Replicas,
    Team,
    _share,
    dropout_seed,
    row_blocks,
)
from seqpred.errors import UsageError
from seqpred.runs import load_run
from seqpred.scoring import carried_loss, window_loss
from seqpred.spec import ModelSpec
from seqpred.train import build_model
from seqpred.weights import init_weights
from tests.backend_helpers import needs_keras, needs_torch
from tests.conftest import one_line_error

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: dropout 0: the replicas' curve is then the single process's, to float rounding.
# A constant rate: one test trains 3 steps and resumes to 6, which would stretch a cosine schedule.
TRAIN = (
    "--hidden", "16", "--embedding", "8", "--seq-len", "16", "--batch-size", "8", "--val-every", "4",
    "--dropout", "0", "--schedule", "constant", "--max-steps", "6", "--quiet",
)  # fmt: skip


#: What torchrun starts in each process: seqpred's training on the torch backend.
TORCH_TRAIN = ("-m", "seqpred", "train", "corpus.txt", "--backend", "torch")


def history(run: Path, event: str = "train") -> list[dict]:
    records = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == event]


def curves(run: Path) -> tuple[list[float], dict[int, float]]:
    """The training loss of every step, and the validation loss by step."""
    return [r["loss"] for r in history(run)], {r["step"]: r["loss"] for r in history(run, "validation")}


def assert_same_curves(run: Path, reference: Path) -> None:
    (train, val), (train_ref, val_ref) = curves(run), curves(reference)
    assert len(train) == len(train_ref) and val_ref and set(val_ref) <= set(val)
    np.testing.assert_allclose(train, train_ref, rtol=1e-4)
    np.testing.assert_allclose([val[s] for s in val_ref], list(val_ref.values()), rtol=1e-4)
    assert [r["tokens"] for r in history(run)] == [r["tokens"] for r in history(reference)]


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def seqpred(*args: object, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m seqpred ARGS`` in a process of its own, as a user runs it."""
    command = [sys.executable, "-m", "seqpred", *map(str, args)]
    return subprocess.run(
        command, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=timeout
    )


def torchrun(*args: object, cwd: Path, timeout: float = 300) -> subprocess.Popen:
    command = [str(BIN / "torchrun"), *map(str, args)]
    return subprocess.Popen(
        command, cwd=cwd, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    from tests.conftest import make_text

    path = tmp_path_factory.mktemp("distributed")
    (path / "corpus.txt").write_text(make_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def single(workdir: Path) -> dict[str, Path]:
    """One process per backend, trained lazily: the curves every data-parallel run must give."""
    made: dict[str, Path] = {}

    def run(backend: str) -> Path:
        if backend not in made:
            out = workdir / f"single-{backend}"
            result = seqpred("train", "corpus.txt", "--backend", backend, "--out", out, *TRAIN, cwd=workdir)
            assert result.returncode == 0, result.stderr
            made[backend] = out
        return made[backend]

    return run  # type: ignore[return-value]


# -- the core's arithmetic --------------------------------------------------------------------------


def test_each_replica_takes_a_contiguous_equal_block_of_rows():
    assert row_blocks(8, 2) == [slice(0, 4), slice(4, 8)]
    # processes: one replica each; devices: one process holds every row and splits them itself
    assert Replicas(count=4, processes=4, rank=2).process_rows(8) == slice(4, 6)
    assert Replicas(count=2, processes=1).process_rows(8) == slice(0, 8)
    assert Replicas(count=2, processes=1).device_blocks(8) == [slice(0, 4), slice(4, 8)]
    with pytest.raises(UsageError, match="does not split evenly into 3 replicas"):
        row_blocks(8, 3)


def test_shares_cover_every_item_once():
    for items in range(0, 12):
        for size in (1, 2, 3, 5):
            spans = [_share(items, rank, size) for rank in range(size)]
            assert spans[0][0] == 0 and spans[-1][1] == items
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
            assert max(b - a for a, b in spans) - min(b - a for a, b in spans) <= 1


def test_replica_zero_keeps_the_run_seed_and_the_others_differ():
    assert dropout_seed(7, 0) == 7
    assert len({dropout_seed(7, r) for r in range(4)}) == 4


class ThreadsCollective:
    """Processes simulated by threads: the sum of every thread's values, for the core's reductions."""

    def __init__(self, size: int):
        self.barrier = threading.Barrier(size)
        self.lock = threading.Lock()
        self.total: np.ndarray | None = None
        self.size = size

    def all_sum(self, values):
        with self.lock:
            self.total = np.asarray(values, float) if self.total is None else self.total + values
        self.barrier.wait()
        result = self.total.copy()
        self.barrier.wait()
        with self.lock:
            self.total = None
        self.barrier.wait()
        return result

    def close(self):
        pass


@pytest.mark.parametrize("objective", ["sequence", "last"])
def test_validation_shared_between_processes_adds_up_to_the_whole(objective):
    spec = ModelSpec(
        vocab_size=11, hidden=8, layers=1, embedding=4, dropout=0.0, seq_len=7, objective=objective
    )
    model = build_model("numpy", spec, "cpu", 0)
    model.set_weights(init_weights(spec, 3))
    ids = np.random.default_rng(0).integers(0, 11, size=205)
    whole = (window_loss(model, ids, spec), carried_loss(model, ids, stripes=5))
    for size in (2, 3):
        collective = ThreadsCollective(size)
        results: dict[int, tuple[float, float]] = {}

        def rank(r: int, collective=collective, results=results, size=size) -> None:
            team = Team(Replicas(size, size, r), collective)
            results[r] = (team.window_loss(model, ids, spec), team.carried_loss(model, ids, 5))

        threads = [threading.Thread(target=rank, args=(r,)) for r in range(size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for r in range(size):
            np.testing.assert_allclose(results[r], whole, rtol=1e-9)


def test_a_process_takes_its_rows_and_the_loss_is_the_mean_over_all():
    collective = ThreadsCollective(2)
    batch = Batch(np.arange(16).reshape(4, 4), np.arange(16).reshape(4, 4))
    seen: dict[int, tuple] = {}

    def rank(r: int) -> None:
        team = Team(Replicas(2, 2, r), collective)
        rows = team.take(batch)
        # rank 0's rows have loss 1, rank 1's loss 3; a signal reached rank 1 only
        seen[r] = (rows.inputs[:, 0].tolist(), *team.step(1.0 + 2 * r, rows.predicted_tokens, r == 1))

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen[0] == ([0, 4], 2.0, [True]) and seen[1] == ([8, 12], 2.0, [True])


# -- refused, in one line --------------------------------------------------------------------------


def test_a_batch_the_replicas_cannot_share_is_refused(cli, corpus, tmp_path):
    result = cli("train", corpus, "--out", tmp_path / "r", "--batch-size", "9", "--replicas", "2")
    one_line_error(result, 2, "--batch-size 9", "2 replicas", "multiple of 2")
    assert not (tmp_path / "r").exists()


def test_a_backend_without_data_parallelism_is_refused(cli, corpus, tmp_path):
    result = cli("train", corpus, "--backend", "numpy", "--out", tmp_path / "r", "--replicas", "2")
    one_line_error(result, 2, "backend 'numpy' cannot train on several replicas")


@pytest.mark.parametrize(
    ("backend", "fragment"),
    [("numpy", "train in one process"), ("keras", "use --replicas N instead of torchrun")],
)
def test_a_launcher_on_a_backend_that_cannot_use_it_is_refused(
    cli, corpus, tmp_path, monkeypatch, backend, fragment
):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = cli("train", corpus, "--backend", backend, "--out", tmp_path / "r")
    one_line_error(result, 2, f"backend {backend!r} cannot train in several processes", fragment)


@needs_torch
def test_replicas_that_disagree_with_the_launcher_are_refused(cli, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = cli("train", corpus, "--out", tmp_path / "r", "--replicas", "3")
    one_line_error(result, 2, "--replicas 3 but the launcher started 2 processes")


@needs_torch
def test_under_torchrun_a_resume_takes_the_launchers_count(cli, corpus, tmp_path, monkeypatch):
    from seqpred.train import Trainer

    out = tmp_path / "r"
    result = cli("train", corpus, "--out", out, *TRAIN)
    assert result.exit_code == 0, result.output
    stored = json.loads((out / "train.json").read_text())
    (out / "train.json").write_text(json.dumps({**stored, "replicas": 2}))  # as two replicas left it
    assert Trainer.resume(out, {}).config.replicas == 2  # --replicas: the run's own count
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "1")
    assert Trainer.resume(out, {}).config.replicas == 1  # torchrun: its count (1: as it says)
    assert Trainer.resume(out, {"replicas": 4}).config.replicas == 4


def test_stateful_training_on_replicas_is_refused(cli, corpus, tmp_path):
    result = cli("train", corpus, "--out", tmp_path / "r", "--state", "carry", "--replicas", "2")
    one_line_error(result, 2, "--state carry trains on one replica")


def test_mixed_precision_on_a_backend_without_it_is_refused(cli, corpus, tmp_path):
    result = cli("train", corpus, "--backend", "numpy", "--out", tmp_path / "r", "--precision", "bf16")
    one_line_error(result, 2, "backend 'numpy' does not train in --precision bf16", "fp32")
    assert not (tmp_path / "r").exists()


# -- GPUs: the fused kernels, mixed precision, canonical float32 weights -------------------------


@needs_torch
def test_torch_trains_whole_windows_through_nn_lstm(tmp_path):
    """nn.LSTM is the fused kernel (cuDNN on a GPU): one call per batch, never a loop of steps."""
    from seqpred import OptimizerSettings

    spec = ModelSpec(vocab_size=11, hidden=8, layers=2, embedding=4, dropout=0.0, seq_len=7)
    model = build_model("torch", spec, "cpu", 0)
    model.configure_training(OptimizerSettings())
    model.set_weights(init_weights(spec, 0))
    calls = []
    model.net.lstm.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    ids = np.zeros((4, 7), dtype=np.int32)
    model.train_batch(ids, ids, 1e-3, step=0)
    assert [tuple(shape) for shape in calls] == [(4, 7, 4)]


@needs_keras
def test_keras_lstm_layers_meet_the_conditions_for_cudnn():
    from keras.src.backend.tensorflow.rnn import _do_lstm_arguments_support_cudnn

    spec = ModelSpec(vocab_size=11, hidden=8, layers=2, embedding=4, dropout=0.2, seq_len=7)
    for precision in ("fp32", "bf16"):
        model = build_model("keras", spec, "cpu", 0, precision=precision)
        for lstm in model.net.lstms:
            cell = lstm.cell
            assert _do_lstm_arguments_support_cudnn(
                cell.activation, cell.recurrent_activation, lstm.unroll, cell.use_bias
            )
            assert lstm.use_cudnn in ("auto", True) and not lstm.recurrent_dropout and not cell.dropout


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_bf16_trains_near_fp32_and_keeps_float32_weights(cli, corpus, tmp_path, backend):
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        result = cli("train", corpus, "--backend", backend, "--out", out, *TRAIN, "--precision", precision)
        assert result.exit_code == 0, result.output
        runs[precision] = out
    fp32, bf16 = curves(runs["fp32"])[0], curves(runs["bf16"])[0]
    assert fp32 != bf16  # bfloat16 arithmetic did run
    np.testing.assert_allclose(bf16, fp32, rtol=2e-2)
    run = load_run(runs["bf16"], "latest")
    assert all(w.dtype == np.float32 for w in run.weights.values())
    assert json.loads((runs["bf16"] / "train.json").read_text())["precision"] == "bf16"
    result = cli("generate", runs["bf16"], "--backend", "numpy", "--length", "20", "--seed", "1")
    assert result.exit_code == 0 and len(result.stdout) >= 20


# -- equivalence: two replicas, the single process's curve ---------------------------------------


@needs_torch
@pytest.mark.slow
def test_torchrun_two_processes_give_the_single_process_curve_and_generate_everywhere(workdir, single):
    out = workdir / "torchrun"
    run = torchrun("--standalone", "--nproc_per_node", "2", *TORCH_TRAIN, "--out", out, *TRAIN, cwd=workdir)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    assert stdout.count("saved run to") == 1  # rank 0 alone reports
    assert_same_curves(out, single("torch"))
    assert json.loads((out / "train.json").read_text())["replicas"] == 2
    texts = set()
    for backend in ("torch", "keras", "numpy", "onnx"):
        result = seqpred(
            "generate",
            out,
            "--backend",
            backend,
            "--greedy",
            "--length",
            "30",
            "--prime",
            "The ",
            cwd=workdir,
        )
        assert result.returncode == 0, result.stderr
        texts.add(result.stdout)
    assert len(texts) == 1


@needs_torch
@pytest.mark.slow
def test_replicas_option_starts_torch_processes_with_the_same_curve(cli, workdir, single):
    out = workdir / "replicas-torch"
    result = cli(
        "train", workdir / "corpus.txt", "--backend", "torch", "--out", out, *TRAIN, "--replicas", "2"
    )
    assert result.exit_code == 0, result.output
    assert_same_curves(out, single("torch"))


@needs_torch
@pytest.mark.slow
def test_a_run_resumes_on_another_number_of_replicas(cli, workdir, single):
    out = workdir / "resumed"
    two = [a if a != "6" else "3" for a in TRAIN]  # --max-steps 3 on two replicas
    result = cli("train", workdir / "corpus.txt", "--backend", "torch", "--out", out, *two, "--replicas", "2")
    assert result.exit_code == 0, result.output
    result = cli("train", "--resume", out, "--max-steps", "6", "--replicas", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert_same_curves(out, single("torch"))


@needs_keras
@pytest.mark.slow
def test_keras_on_two_logical_cpu_devices_gives_the_single_process_curve(workdir, single):
    out = workdir / "replicas-keras"
    result = seqpred(
        "train", "corpus.txt", "--backend", "keras", "--out", out, *TRAIN, "--replicas", "2", cwd=workdir
    )
    assert result.returncode == 0, result.stderr
    assert_same_curves(out, single("keras"))
    # Two devices indeed, and validation shared out between them (5 rows: shares of 3 and 2) scores
    # as one device does.
    probe = """
import numpy as np
from seqpred.distributed import Replicas
from seqpred.spec import ModelSpec
from seqpred.train import build_model
from seqpred.weights import init_weights

spec = ModelSpec(vocab_size=5, hidden=4, layers=1, embedding=2, seq_len=3)
two, one = build_model("keras", spec, "cpu", 0, replicas=Replicas(2)), build_model("keras", spec, "cpu", 0)
for model in (two, one):
    model.set_weights(init_weights(spec, 1))
rows = np.random.default_rng(0).integers(0, 5, size=(5, 4)).astype(np.int32)
scores = [model.evaluate_batch(rows[:, :-1], rows[:, 1:]) for model in (two, one)]
print(two.strategy.num_replicas_in_sync, two.strategy.extended.worker_devices, abs(scores[0] - scores[1]))

# Dropout on replicas: masks a function of (seed, step), another seed another, in bf16 too.
from seqpred import OptimizerSettings
spec = ModelSpec(vocab_size=5, hidden=8, layers=2, embedding=2, seq_len=3, dropout=0.5, output_dropout=True)
def losses(seed, precision="fp32"):
    model = build_model("keras", spec, "cpu", seed, replicas=Replicas(2), precision=precision)
    model.configure_training(OptimizerSettings())
    model.set_weights(init_weights(spec, 1))
    return [model.train_batch(rows[:4, :-1], rows[:4, 1:], 0.0, step=step) for step in (0, 1, 0)]
print(losses(3), losses(4), losses(3, "bf16"))
"""
    shown = subprocess.run([sys.executable, "-c", probe], env=environment(), capture_output=True, text=True)
    first, second = shown.stdout.splitlines()[:2]
    replicas, *_, difference = first.split()
    assert replicas == "2" and "CPU:1" in first, shown.stderr
    assert float(difference) < 1e-6, shown.stdout
    a, b, bf16 = json.loads("[" + second.replace("] [", "], [") + "]")
    assert a[0] == a[2] and a[0] != a[1] and a != b and bf16[0] == bf16[2], second


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@needs_torch
@pytest.mark.slow
def test_two_nodes_on_localhost_through_torchrun_rendezvous(workdir, single):
    out = workdir / "two-nodes"
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [
        torchrun(
            "--nnodes",
            "2",
            "--node_rank",
            str(rank),
            "--nproc_per_node",
            "1",
            "--rdzv_backend",
            "c10d",
            "--rdzv_endpoint",
            endpoint,
            "--rdzv_id",
            "seqpred-test",
            *TORCH_TRAIN,
            "--out",
            out,
            *TRAIN,
            cwd=workdir,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    for node in nodes:
        _, stderr = node.communicate(timeout=300)
        assert node.returncode == 0, stderr
    assert_same_curves(out, single("torch"))


@needs_torch
@pytest.mark.slow
def test_ctrl_c_stops_every_replica_at_one_step_and_saves(workdir):
    """Ctrl-C reaches the whole process group: one line, exit 130, rank 0's checkpoint of that step."""
    import signal
    import time

    out = workdir / "interrupted"
    command = [sys.executable, "-m", "seqpred", "train", "corpus.txt", "--out", str(out), *TRAIN[:-3]]
    command += ["--quiet", "--epochs", "1000", "--replicas", "2"]  # no --max-steps: until stopped
    run = subprocess.Popen(
        command, cwd=workdir, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not ((out / "history.jsonl").exists() and len(history(out)) >= 5):
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "interrupted by SIGINT" in errors[0], stderr
    saved = json.loads((out / "run.json").read_text())
    assert saved["status"] == "interrupted" and saved["step"] == history(out)[-1]["step"]
