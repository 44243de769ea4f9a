"""Bad input of every kind: one line on stderr saying what is wrong and what to do, a documented
exit code (2 for usage errors, 1 for the rest, 130 for an interrupt) and no traceback.

Rows already covered elsewhere (missing or empty corpus, undecodable bytes, a corpus shorter than a
window, CRLF text, unknown backend, non-positive sizes, absurd hidden size, unknown prime symbols,
bad sampling values, not-a-run folder, resuming a missing run, bad TOML, Ctrl-C while training)
live in test_cli.py, test_training.py and test_generate.py.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import seqpred.evaluation
import seqpred.registry as registry_module
from seqpred.errors import RunError, UsageError
from seqpred.generate import MAX_PRIME_TOKENS, Generator
from seqpred.registry import Registry
from seqpred.runs import load_run
from seqpred.vocab import Vocab
from seqpred.weights import init_weights
from tests.backend_helpers import needs_torch
from tests.conftest import TINY, Cli, make_text, one_line_error
from tests.test_training import _start_training, _wait_for_steps


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny run with a best and a latest checkpoint, trained once; tests damage copies of it."""
    folder = tmp_path_factory.mktemp("bad-input")
    corpus = folder / "corpus.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    result = Cli()("train", corpus, "--out", folder / "run", "--max-steps", "6", "--quiet", *TINY)
    assert result.exit_code == 0, result.output
    assert (folder / "run" / "best.safetensors").is_file()
    return folder / "run"


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A private copy of the trained run."""
    return Path(shutil.copytree(trained, tmp_path / "run", ignore=shutil.ignore_patterns(".lock")))


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# -- corpus -----------------------------------------------------------------------------------


def test_folder_without_text_files(cli, tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "notes.md").write_text("not a .txt file\n" * 100)
    one_line_error(cli("train", folder, "--out", tmp_path / "r"), 1, "holds no .txt files", "give a file")
    assert not (tmp_path / "r").exists()


def test_binary_file(cli, tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 40)
    one_line_error(cli("train", path, "--out", tmp_path / "r"), 1, "image.png", "binary file", "UTF-8 text")


def test_corpus_of_one_repeated_character(cli, tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("a" * 5000)
    one_line_error(
        cli("train", path, "--out", tmp_path / "r", *TINY), 1, "only one distinct symbol", "at least two"
    )
    assert not (tmp_path / "r").exists()


# -- backends and options ---------------------------------------------------------------------


@pytest.fixture
def broken_plugin(monkeypatch) -> Registry:
    """The real plugins plus one whose module does not exist, installed as the process registry."""
    real = sorted(metadata.entry_points(group="seqpred"), key=lambda ep: ep.name)
    broken = metadata.EntryPoint(name="broken", value="no_such_module_xyz", group="seqpred")
    registry = Registry([*real, broken])
    monkeypatch.setattr(registry_module, "_registry", registry)
    return registry


def test_backend_that_failed_to_load(cli, corpus, tmp_path, broken_plugin):
    one_line_error(
        cli("train", corpus, "--backend", "broken", "--out", tmp_path / "b", *TINY),
        1,
        "backend 'broken' failed to load",
        "No module named 'no_such_module_xyz'",
    )
    assert not (tmp_path / "b").exists()  # refused before any folder is made
    result = cli(
        "train", corpus, "--backend", "torch", "--out", tmp_path / "t", "--max-steps", "2", "--quiet", *TINY
    )
    assert result.exit_code == 0, result.output
    # every other backend works; the broken plugin is one warning line naming it
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "no_such_module_xyz" in warnings[0] and "failed to load" in warnings[0]
    listing = cli("backends")
    assert listing.exit_code == 0
    line = next(line for line in listing.stdout.splitlines() if line.startswith("broken "))
    assert "failed: ModuleNotFoundError" in line
    assert any(line.startswith("torch ") and line.endswith("ok") for line in listing.stdout.splitlines())
    rows = {row["name"]: row for row in json.loads(cli("backends", "--json").stdout)}
    assert rows["broken"]["status"] == "failed" and "no_such_module_xyz" in rows["broken"]["error"]


def test_unknown_preset(cli, corpus, tmp_path):
    one_line_error(
        cli("train", corpus, "--preset", "huge", "--out", tmp_path / "r"),
        2,
        "unknown preset 'huge'",
        "article",
    )


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [
        ("--dropout", "-0.1", "[0, 1)"),
        ("--dropout", "1", "[0, 1)"),
        ("--val-fraction", "-0.2", "[0, 1)"),
        ("--val-fraction", "1", "[0, 1)"),
        ("--lr", "0", "greater than 0"),
        ("--lr", "-0.01", "greater than 0"),
        ("--lr", "nan", "greater than 0"),
        ("--embedding", "-1", "0 (scaled input) or positive"),
    ],
)
def test_out_of_range_values(cli, corpus, tmp_path, flag, value, fragment):
    one_line_error(cli("train", corpus, "--out", tmp_path / "r", flag, value), 2, flag, fragment)
    assert not (tmp_path / "r").exists()


# -- generation -------------------------------------------------------------------------------


def test_prime_longer_than_the_limit(cli, run, tmp_path, monkeypatch):
    prime = tmp_path / "prime.txt"
    prime.write_text("e" * (MAX_PRIME_TOKENS + 1))

    def no_encoding(*args, **kwargs):
        raise AssertionError("the prime was encoded before its length was checked")

    monkeypatch.setattr(Vocab, "encode", no_encoding)
    result = cli("generate", run, "--prime-file", prime, "--length", "5")
    one_line_error(result, 2, "prime", f"{MAX_PRIME_TOKENS:,}", "shorter prime")
    assert result.stdout == ""  # the prime is not echoed before it is refused
    with pytest.raises(UsageError, match="over the limit"):
        Generator(run).generate("e" * (MAX_PRIME_TOKENS + 1), 5)


def test_unknown_checkpoint_name(cli, run):
    one_line_error(cli("generate", run, "--checkpoint", "final"), 2, "unknown checkpoint 'final'", "latest")


# -- run folders ------------------------------------------------------------------------------


def test_run_from_a_newer_format_version(cli, run):
    edit_json(run / "run.json", format_version=99, seqpred_version="9.1.0")
    message = one_line_error(
        cli("generate", run), 1, "format version 99", "upgrade to seqpred 9.1.0 or later"
    )
    assert "newer than this seqpred" in message
    one_line_error(cli("train", "--resume", run), 1, "format version 99", "seqpred 9.1.0")
    edit_json(run / "run.json", seqpred_version="0.0.1")  # no usable hint recorded
    one_line_error(cli("generate", run), 1, "format version 99", "upgrade to a newer seqpred")


@pytest.mark.parametrize("keep", [0.5, 100 / 1000, 7 / 1000])
def test_truncated_weights(cli, run, keep):
    path = run / "best.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: max(7, int(len(data) * keep))])
    one_line_error(cli("generate", run), 1, "best.safetensors", "safetensors", "restore the file")


def _wrong_shape(w):
    w["dense.bias"] = np.zeros(3, np.float32)


def _missing(w):
    del w["lstm.0.recurrent_kernel"]


def _extra(w):
    w["lstm.9.kernel"] = np.zeros((2, 2), np.float32)


def _nan(w):
    w["dense.kernel"] = w["dense.kernel"].copy()
    w["dense.kernel"][1, 2] = np.nan


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (_wrong_shape, "tensor dense.bias has shape [3], the model needs"),
        (_missing, "missing tensor(s) lstm.0.recurrent_kernel"),
        (_extra, "unexpected tensor(s) lstm.9.kernel"),
        (_nan, "tensor dense.kernel holds NaN"),
    ],
)
@pytest.mark.parametrize("checkpoint", ["best", "latest"])
def test_weights_that_do_not_fit_the_model(cli, run, damage, fragment, checkpoint):
    path = run / ("best.safetensors" if checkpoint == "best" else "weights.safetensors")
    weights = load_file(path)
    damage(weights)
    save_file(weights, path)
    one_line_error(
        cli("generate", run, "--checkpoint", checkpoint, "--length", "5"), 1, path.name, fragment, "restore"
    )


def test_malformed_vocabulary(cli, run):
    (run / "vocab.json").write_text('{"level": "char", "tokens": ["a", "b"')
    one_line_error(cli("generate", run), 1, "vocab.json", "not valid JSON", "restore the vocabulary")


def test_vocabulary_that_disagrees_with_the_weights(cli, run):
    vocab = json.loads((run / "vocab.json").read_text())
    size = len(vocab["tokens"])
    vocab["tokens"].append("~")
    (run / "vocab.json").write_text(json.dumps(vocab))
    one_line_error(
        cli("generate", run), 1, "vocab.json", f"holds {size + 1} tokens", f"built for {size}", "restore"
    )


class _Payload:
    """Unpickling this creates ``marker``: a stand-in for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_planted_as_weights_is_never_unpickled(cli, run, tmp_path):
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps({"dense.bias": _Payload(control)}))["dense.bias"].close()
    assert control.exists()  # the payload is live: loading it would run code

    marker = tmp_path / "marker"
    (run / "weights.safetensors").write_bytes(pickle.dumps({"dense.bias": _Payload(marker)}))
    one_line_error(
        cli("generate", run, "--checkpoint", "latest"), 1, "weights.safetensors", "pickle", "never unpickles"
    )
    with pytest.raises(RunError, match="pickle"):
        load_run(run, "latest")
    (run / "best.safetensors").unlink()  # generate falls back to the planted file
    one_line_error(cli("generate", run), 1, "pickle")
    assert not marker.exists()


def test_out_folder_that_holds_a_run_needs_resume_or_force(cli, run, corpus):
    one_line_error(
        cli("train", corpus, "--out", run, "--max-steps", "2", *TINY),
        2,
        "already holds a run",
        f"--resume {run}",
        "--force",
    )
    assert json.loads((run / "run.json").read_text())["step"] == 6  # untouched
    result = cli("train", corpus, "--out", run, "--max-steps", "2", "--force", "--quiet", *TINY)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "run.json").read_text())["step"] == 2
    steps = [json.loads(line)["step"] for line in (run / "history.jsonl").read_text().splitlines()]
    assert steps[0] == 1 and max(steps) == 2
    assert load_run(run).meta["best_step"] == 2  # nothing of the old run is left


def test_out_folder_that_cannot_be_written(cli, corpus, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    one_line_error(
        cli("train", corpus, "--out", blocker / "run", *TINY), 2, "cannot write there", "choose another --out"
    )
    one_line_error(cli("train", corpus, "--out", blocker, *TINY), 2, "not a folder")


@pytest.mark.parametrize("failing", ["weights.safetensors", "run.json"])
def test_disk_full_while_saving_keeps_the_previous_checkpoint(cli, corpus, tmp_path, monkeypatch, failing):
    out = tmp_path / "r"
    real_fsync = os.fsync
    writes: Counter[str] = Counter()

    def fsync(fd):
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        if name.startswith(f".{failing}.") and name.endswith(".tmp"):
            writes[failing] += 1
            if writes[failing] == 2:  # the checkpoint after the one of step 0
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    result = cli("train", corpus, "--out", out, "--max-steps", "20", "--quiet", *TINY)  # checkpoint at step 5
    one_line_error(
        result,
        1,
        "checkpoint of step 5",
        "No space left on device",
        "previous checkpoint (step 0) is intact",
        f"seqpred train --resume {out}",
    )
    monkeypatch.undo()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    for checkpoint in ("best", "latest"):
        loaded = load_run(out, checkpoint)
        assert loaded.meta["step"] == 0
        start = init_weights(loaded.spec, 0)
        for name, value in loaded.weights.items():
            np.testing.assert_array_equal(value, start[name])
    result = cli("train", "--resume", out, "--max-steps", "3", "--quiet")
    assert result.exit_code == 0, result.output
    steps = [json.loads(line)["step"] for line in (out / "history.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 3]  # three train records and the final validation


def test_history_line_cut_short_by_a_kill_does_not_stop_a_resume(cli, run):
    with (run / "history.jsonl").open("a") as history:
        history.write('{"event": "train", "step": 7, "lo')
    result = cli("train", "--resume", run, "--max-steps", "8", "--quiet")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["event"] == "train"] == list(range(1, 9))


def test_an_operating_system_error_is_one_line_too(cli, run, corpus, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/scratch/cache")

    monkeypatch.setattr(seqpred.evaluation, "evaluate_text", full)
    one_line_error(cli("evaluate", run, corpus), 1, "/scratch/cache: No space left on device")


# -- interrupts and concurrency ---------------------------------------------------------------


def _spawn(*args: str, text: bool = False) -> subprocess.Popen:
    """``python -m seqpred ARGS`` with Ctrl-C handled as in a terminal, even where this process
    was started with SIGINT ignored (a background job)."""
    return subprocess.Popen(
        [sys.executable, "-m", "seqpred", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=text,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _interrupted(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
    assert process.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_ctrl_c_during_generation(trained):
    process = _spawn("generate", str(trained), "--length", "10000000", "--seed", "0")
    assert len(process.stdout.read(200)) == 200  # it is generating
    _interrupted(process)


@pytest.mark.slow
def test_ctrl_c_during_evaluation(cli, corpus, tmp_path):
    # A wide model, trained for one step, makes scoring a modest text take many seconds.
    wide = tmp_path / "wide"
    result = cli(
        "train", corpus, "--out", wide, "--hidden", "512", "--embedding", "8", "--seq-len", "16",
        "--batch-size", "4", "--max-steps", "1", "--val-fraction", "0", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = tmp_path / "big.txt"
    text.write_text(make_text(1_000_000))  # some twenty seconds of scoring
    process = _spawn("evaluate", str(wide), str(text), text=True)
    maps = Path(f"/proc/{process.pid}/maps")
    deadline = time.monotonic() + 60
    while "libtorch" not in maps.read_text() and process.poll() is None:  # torch is loaded
        assert time.monotonic() < deadline, "evaluation did not start"
        time.sleep(0.05)
    time.sleep(2)
    assert process.poll() is None, "evaluation ended before it could be interrupted"
    _interrupted(process)


@needs_torch  # trains on the default backend in a subprocess
@pytest.mark.parametrize("second", ["resume", "force"])
@pytest.mark.slow
def test_two_trainings_in_one_folder(cli, corpus, tmp_path, second):
    out = tmp_path / "r"
    first = _start_training(corpus, out)
    try:
        _wait_for_steps(out)
        if second == "resume":
            result = cli("train", "--resume", out, "--max-steps", "200000", "--quiet")
        else:
            result = cli("train", corpus, "--out", out, "--force", "--quiet", *TINY)
        one_line_error(result, 2, "another seqpred training is writing this run folder", "wait for it")
        assert first.poll() is None  # the first training goes on, its folder intact
        assert load_run(out).spec.hidden == 16
    finally:
        first.terminate()
        first.communicate(timeout=60)
    assert first.returncode == 130


def test_debug_shows_the_traceback(cli, tmp_path):
    result = cli("--debug", "train", tmp_path / "missing.txt", "--out", tmp_path / "r")
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr and "CorpusError" in result.stderr
    assert (
        result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'missing.txt'}: no such file or folder"
    )
    plain = cli("train", tmp_path / "missing.txt", "--out", tmp_path / "r")
    one_line_error(plain, 1, "no such file or folder")
