"""The hardening cases: each bad input or fault through the CLI ends in one line on stderr with its
documented exit code, nothing is trained on the wrong data, nothing of the user's is overwritten
and no read is unbounded. The numpy backend keeps every training here to a fraction of a second."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from seqpred.registry import reset_registry
from tests.conftest import TINY, Cli, make_text, one_line_error

NUMPY = ("--backend", "numpy", "--quiet", *TINY)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny numpy run of a few steps, trained once; tests change copies of it."""
    folder = tmp_path_factory.mktemp("hardening")
    corpus = folder / "corpus.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    result = Cli()("train", corpus, "--out", folder / "run", "--max-steps", "6", *NUMPY)
    assert result.exit_code == 0, result.output
    return folder / "run"


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run", ignore=shutil.ignore_patterns(".lock")))


# -- the corpus ---------------------------------------------------------------------------------


def test_empty_corpus_path_is_refused_not_the_current_folder(cli, tmp_path, monkeypatch):
    (tmp_path / "stray.txt").write_text(make_text(), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    one_line_error(cli("train", "", "--out", tmp_path / "r", *NUMPY), 1, "corpus path is empty")
    assert not (tmp_path / "r").exists()
    one_line_error(cli("train", " ", "--out", tmp_path / "r", *NUMPY), 1, "corpus path is empty")


def test_empty_corpus_path_in_evaluate(cli, run, tmp_path, monkeypatch):
    (tmp_path / "stray.txt").write_text(make_text(), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    one_line_error(cli("evaluate", run, ""), 1, "corpus path is empty")


def test_fifo_without_a_writer_is_refused_at_once(cli, tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    one_line_error(cli("train", fifo, "--out", tmp_path / "r", *NUMPY), 1, "FIFO", "regular file", "use -")
    assert not (tmp_path / "r").exists()


def test_fifo_in_a_corpus_folder_is_left_out(cli, tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text(make_text(), encoding="utf-8")
    os.mkfifo(folder / "b.txt")
    result = cli("train", folder, "--out", tmp_path / "r", "--max-steps", "1", *NUMPY)
    assert result.exit_code == 0, result.output


def test_device_is_refused(cli, tmp_path):
    one_line_error(cli("train", "/dev/zero", "--out", tmp_path / "r", *NUMPY), 1, "/dev/zero", "a device")
    assert not (tmp_path / "r").exists()


def test_sparse_file_over_the_read_limit_is_refused_with_the_figure(cli, tmp_path, monkeypatch):
    path = tmp_path / "huge.txt"
    with path.open("wb") as handle:
        handle.truncate(8 * 1024**3)  # 8 GiB that take no disk space
    one_line_error(
        cli("train", path, "--out", tmp_path / "r", *NUMPY),
        1,
        "8,589,934,592 bytes",
        "read limit of 4,294,967,296",
        "SEQPRED_MAX_READ_BYTES",
    )
    assert not (tmp_path / "r").exists()


def test_read_limit_variable(cli, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("SEQPRED_MAX_READ_BYTES", "100")
    one_line_error(cli("train", corpus, "--out", tmp_path / "r", *NUMPY), 1, "read limit of 100")
    monkeypatch.setenv("SEQPRED_MAX_READ_BYTES", "lots")
    one_line_error(cli("train", corpus, "--out", tmp_path / "r", *NUMPY), 2, "SEQPRED_MAX_READ_BYTES")
    monkeypatch.setenv("SEQPRED_MAX_READ_BYTES", str(10**9))
    assert cli("train", corpus, "--out", tmp_path / "r", "--max-steps", "1", *NUMPY).exit_code == 0


def test_corpus_folder_over_the_read_limit_in_all(cli, tmp_path, monkeypatch):
    folder = tmp_path / "texts"
    folder.mkdir()
    for name in "ab":
        (folder / f"{name}.txt").write_text(make_text(600), encoding="utf-8")
    monkeypatch.setenv("SEQPRED_MAX_READ_BYTES", "1000")  # each file is under it, both are not
    one_line_error(
        cli("train", folder, "--out", tmp_path / "r", *NUMPY), 1, ".txt files hold", "read limit of 1,000"
    )


def test_standard_input_over_the_read_limit(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SEQPRED_MAX_READ_BYTES", "1000")
    result = cli("train", "-", "--out", tmp_path / "r", *NUMPY, input=make_text())
    one_line_error(result, 1, "standard input", "read limit of 1,000")


@pytest.mark.parametrize(
    ("encoding", "named"),
    [
        ("utf-16", "UTF-16 (little-endian, with a byte-order mark)"),
        ("utf-16-be", "UTF-16 (big-endian, without a byte-order mark)"),
        ("utf-16-le", "UTF-16 (little-endian, without a byte-order mark)"),
        ("utf-32", "UTF-32 (little-endian, with a byte-order mark)"),
        ("utf-32-be", "UTF-32 (big-endian, without a byte-order mark)"),
        ("utf-32-le", "UTF-32 (little-endian, without a byte-order mark)"),
    ],
)
def test_utf16_and_utf32_are_named(cli, tmp_path, encoding, named):
    path = tmp_path / "wide.txt"
    path.write_bytes(make_text(2000).encode(encoding))
    one_line_error(cli("train", path, "--out", tmp_path / "r", *NUMPY), 1, named, "iconv -f", "-t UTF-8")


def test_utf8_bom_is_stripped(tmp_path):
    from seqpred.text_sources import read_corpus

    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfhello\r\nworld\n")
    assert read_corpus(path) == "hello\nworld\n"


@pytest.mark.parametrize("offset", [0, 10_000, 70_000, 200_000])
def test_nul_byte_is_binary_wherever_it_occurs(cli, tmp_path, offset):
    text = make_text(210_000).encode("utf-8")
    path = tmp_path / "nul.txt"
    path.write_bytes(text[:offset] + b"\x00" + text[offset:])
    one_line_error(
        cli("train", path, "--out", tmp_path / "r", *NUMPY), 1, "binary", f"byte offset {offset:,}"
    )
    assert not (tmp_path / "r").exists()


# -- generate and evaluate ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", ["-1", str(2**63), str(2**64)])
def test_generate_seed_out_of_range(cli, run, seed):
    one_line_error(cli("generate", run, "--seed", seed, "--length", "3"), 2, "--seed", "2**63 - 1")


@pytest.mark.parametrize("seed", ["-1", str(2**63), str(2**64)])
def test_train_seed_out_of_range(cli, corpus, tmp_path, seed):
    one_line_error(cli("train", corpus, "--out", tmp_path / "r", "--seed", seed, *NUMPY), 2, "--seed")
    assert not (tmp_path / "r").exists()


def test_num_samples_beyond_memory_is_refused_with_the_figure(cli, run):
    result = cli("generate", run, "--num-samples", "1000000000")
    one_line_error(result, 2, "1,000,000,000 sample(s)", "TiB of memory", "available", "--num-samples")
    assert result.stdout == ""


def test_prime_file_that_is_a_fifo(cli, run, tmp_path):
    fifo = tmp_path / "prime"
    os.mkfifo(fifo)
    one_line_error(cli("generate", run, "--prime-file", fifo), 1, "FIFO", "regular file")


def test_prime_file_in_utf16(cli, run, tmp_path):
    path = tmp_path / "prime.txt"
    path.write_bytes("the king".encode("utf-16"))
    one_line_error(cli("generate", run, "--prime-file", path), 1, "UTF-16")


def test_evaluate_on_a_text_shorter_than_one_window(cli, run, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("the", encoding="utf-8")
    one_line_error(cli("evaluate", run, short), 1, "3 char tokens", "shorter than one window of 17")


# -- plot -----------------------------------------------------------------------------------------


def test_plot_replaces_a_symlink_instead_of_following_it(cli, run, tmp_path):
    pytest.importorskip("matplotlib")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run / "curves.png").symlink_to(victim)
    result = cli("plot", run)
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious\n"
    assert not (run / "curves.png").is_symlink()
    assert (run / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert not list(run.glob(".*.tmp"))


def test_plot_unknown_extension(cli, run, tmp_path):
    pytest.importorskip("matplotlib")
    one_line_error(cli("plot", run, "-o", tmp_path / "curves.foo"), 2, "unknown image format", ".png")
    assert not (tmp_path / "curves.foo").exists()


def test_plot_other_formats_by_extension(cli, run, tmp_path):
    pytest.importorskip("matplotlib")
    assert cli("plot", run, "-o", tmp_path / "c.svg").exit_code == 0
    assert b"<svg" in (tmp_path / "c.svg").read_bytes()[:1000]


def test_plot_history_with_a_cut_last_line_and_records_without_step(cli, run, tmp_path):
    pytest.importorskip("matplotlib")
    history = run / "history.jsonl"
    with history.open("a") as handle:
        handle.write(json.dumps({"event": "train", "loss": 1.0}) + "\n")  # no step
        handle.write(json.dumps({"event": "train", "step": "x", "loss": 1.0}) + "\n")
        handle.write('{"event": "train", "st')  # a kill cut the last line short
    result = cli("plot", run, "-o", tmp_path / "c.png")
    assert result.exit_code == 0, result.output


def test_plot_history_with_a_deeply_nested_line(cli, run, tmp_path):
    pytest.importorskip("matplotlib")
    history = run / "history.jsonl"
    lines = history.read_text().splitlines()
    lines.insert(1, "[" * 100_000 + "]" * 100_000)
    history.write_text("\n".join(lines) + "\n")
    one_line_error(cli("plot", run, "-o", tmp_path / "c.png"), 1, "line 2 is not valid JSON")


def test_resume_with_a_deeply_nested_history_line(cli, run):
    history = run / "history.jsonl"
    history.write_text(history.read_text() + "[" * 100_000 + "]" * 100_000 + "\n")
    result = cli("train", "--resume", run, "--max-steps", "7", "--quiet")
    assert result.exit_code == 0, result.output


# -- run folders ----------------------------------------------------------------------------------


def test_lock_file_symlink_is_refused_not_followed(cli, run, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run / ".lock").symlink_to(victim)
    one_line_error(cli("train", "--resume", run, "--max-steps", "8", "--quiet"), 2, ".lock", "symbolic link")
    assert victim.read_text() == "precious\n"


def test_run_files_planted_as_symlinks_are_replaced(cli, run, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run / "history.jsonl").rename(tmp_path / "history.jsonl")
    (run / "history.jsonl").symlink_to(victim)
    result = cli("train", "--resume", run, "--max-steps", "8", "--quiet")
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious\n"
    assert not (run / "history.jsonl").is_symlink()


def test_weights_beyond_float32_range_are_refused(cli, run, tmp_path):
    tensors = load_file(run / "best.safetensors")
    big = {name: value.astype(np.float64) for name, value in tensors.items()}
    big["dense.bias"][0] = 1e300  # finite in float64, infinite once cast to float32
    save_file(big, run / "best.safetensors")
    corpus = tmp_path / "text.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    one_line_error(cli("evaluate", run, corpus), 1, "dense.bias", "beyond float32's range")


def test_weights_read_through_a_symlink_do_not_print_the_target(cli, run, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("password=hunter2\n" * 10)
    (run / "best.safetensors").unlink()
    (run / "best.safetensors").symlink_to(secret)
    result = cli("generate", run, "--length", "3")
    message = one_line_error(result, 1, "best.safetensors", "not a safetensors file")
    assert "hunter2" not in message and "password" not in message
    announced = int.from_bytes(secret.read_bytes()[:8], "little")  # the secret's first bytes as a number
    assert f"{announced:,}" not in message and str(announced) not in message


# -- options are checked before anything is touched -------------------------------------------


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [("--seed", "-1", "--seed"), ("--lr", "inf", "--lr"), ("--min-lr", "nan", "--min-lr")],
)
def test_force_with_a_bad_option_keeps_the_old_run(cli, run, corpus, flag, value, fragment):
    before = _snapshot(run)
    one_line_error(cli("train", corpus, "--out", run, "--force", flag, value, *NUMPY), 2, fragment)
    assert _snapshot(run) == before


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [("--lr", "inf", "finite"), ("--lr", "nan", "finite"), ("--min-lr", "nan", "finite")],
)
def test_non_finite_rates_are_refused(cli, corpus, tmp_path, flag, value, fragment):
    one_line_error(cli("train", corpus, "--out", tmp_path / "r", flag, value, *NUMPY), 2, flag, fragment)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("line", "fragments"),
    [
        ('lr = "x"', ("--lr", "number")),
        ("max_steps = 2.5", ("--max-steps", "whole number")),
        ("hidden = true", ("--hidden",)),
        ("seed = -1", ("--seed",)),
        ("clip = nan", ("--clip", "finite")),
        ('time_limit = "x"', ("--time-limit", "duration")),
        ("time_limit = [1]", ("--time-limit",)),
        ('patience = "15m"', ("--patience", "whole number")),
    ],
)
def test_toml_values_of_the_wrong_type_or_range(cli, corpus, tmp_path, line, fragments):
    config = tmp_path / "c.toml"
    config.write_text(f'[train]\ncorpus = "{corpus}"\n{line}\n')
    one_line_error(cli("train", "--config", config, "--out", tmp_path / "r", "--quiet"), 2, *fragments)
    assert not (tmp_path / "r").exists()


def test_toml_train_that_is_not_a_table(cli, corpus, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("train = 5\n")
    one_line_error(cli("train", corpus, "--config", config, "--out", tmp_path / "r"), 2, "[train]", "table")
    assert not (tmp_path / "r").exists()


# -- damaged run folders on resume ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "fragments"),
    [
        ("run.json", '{"format": "seqpred-run", "format_version": 1, "step": "x"}', ("run.json", "step")),
        ("run.json", "[1, 2", ("run.json", "not valid JSON")),
        ("train.json", "[1, 2", ("train.json", "not valid JSON")),
        ("train.json", '{"lr": "x", "corpus": "c.txt"}', ("train.json", "--lr")),
        ("train.json", '{"lr": 0.01}', ("train.json", "no corpus")),
        ("train.json", "[" * 100_000 + "]" * 100_000, ("train.json",)),
        ("optimizer.safetensors", "not tensors", ("optimizer.safetensors", "not a safetensors file")),
    ],
)
def test_resume_of_a_damaged_run(cli, run, name, content, fragments):
    (run / name).write_text(content)
    one_line_error(cli("train", "--resume", run, "--max-steps", "8", "--quiet"), 1, *fragments)


def test_resume_with_an_optimizer_state_of_another_model(cli, run):
    save_file({"x": np.zeros(3, np.float32)}, run / "optimizer.safetensors")
    one_line_error(
        cli("train", "--resume", run, "--max-steps", "8", "--quiet"),
        1,
        "optimizer.safetensors",
        "delete it to resume with a fresh optimizer state",
    )
    (run / "optimizer.safetensors").unlink()
    assert cli("train", "--resume", run, "--max-steps", "8", "--quiet").exit_code == 0


# -- faults while training ------------------------------------------------------------------------


def test_disk_full_at_the_first_checkpoint_says_so_and_force_replaces(cli, corpus, tmp_path, monkeypatch):
    import errno

    out = tmp_path / "r"
    real_fsync = os.fsync

    def fsync(fd):
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(".weights.safetensors."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    message = one_line_error(
        cli("train", corpus, "--out", out, "--max-steps", "3", *NUMPY),
        1,
        "checkpoint of step 0",
        "No space left on device",
        "no checkpoint was saved",
        "--force",
    )
    assert "intact" not in message and "--resume" not in message
    monkeypatch.undo()
    one_line_error(
        cli("train", "--resume", out, "--quiet"), 1, "stopped before its first checkpoint", "--force"
    )
    result = cli("train", corpus, "--out", out, "--force", "--max-steps", "3", *NUMPY)
    assert result.exit_code == 0, result.output


def test_divergence_stops_with_one_line_and_keeps_the_last_finite_checkpoint(cli, corpus, tmp_path):
    from seqpred.runs import load_run

    out = tmp_path / "r"
    result = cli("train", corpus, "--out", out, "--lr", "1e38", "--max-steps", "20", *NUMPY)
    one_line_error(result, 1, "training diverged", "the checkpoint of step 0 is kept", "lower --lr")
    loaded = load_run(out, "latest")
    assert loaded.meta["step"] == 0
    assert all(np.all(np.isfinite(w)) for w in loaded.weights.values())


# -- plugins ----------------------------------------------------------------------------------------


def test_unknown_distribution_in_load_plugins_is_a_warning(cli, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("SEQPRED_LOAD_PLUGINS", "seqpred-nosuch")
    listing = cli("backends")
    assert listing.exit_code == 0
    warnings = [line for line in listing.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "'seqpred-nosuch'" in warnings[0], listing.stderr
    reset_registry()  # as a new process would: the warning is printed once per process
    result = cli("train", corpus, "--out", tmp_path / "r", "--max-steps", "1", *NUMPY)
    assert result.exit_code == 0
    assert "seqpred-nosuch" in result.stderr


# -- memory estimated up front ------------------------------------------------------------------


def _fake_nvidia_smi(folder: Path, monkeypatch, free_mib: str) -> Path:
    """An ``nvidia-smi`` first on PATH that reports ``free_mib`` and logs its arguments."""
    program = folder / "bin" / "nvidia-smi"
    program.parent.mkdir()
    log = folder / "nvidia-smi.log"
    program.write_text(f'#!/bin/sh\necho "$@" >> {log}\necho "{free_mib}"\n')
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{program.parent}{os.pathsep}{os.environ['PATH']}")
    return log


@pytest.mark.parametrize("backend", ["keras", "torch"])
def test_training_that_cannot_fit_on_the_gpu_is_refused_with_its_free_memory(
    cli, corpus, tmp_path, monkeypatch, backend
):
    """Checked before the model is built, so a machine without the GPU shows it as well as one with."""
    from seqpred.registry import get_registry

    get_registry().get(backend)
    log = _fake_nvidia_smi(tmp_path, monkeypatch, "100")
    result = cli(
        "train", corpus, "--out", tmp_path / "r", "--backend", backend, "--device", "cuda:1",
        "--hidden", "2048", "--quiet",
    )  # fmt: skip
    one_line_error(result, 2, "needs about", "of GPU memory", "100.0 MiB free on cuda:1", "--hidden")
    assert "-i 1" in log.read_text()
    assert not (tmp_path / "r").exists()


def test_gpu_memory_is_judged_by_the_framework_where_nvidia_smi_cannot_tell(tmp_path, monkeypatch):
    from seqpred.memory import check_fits, gpu_free_bytes, memory_device

    _fake_nvidia_smi(tmp_path, monkeypatch, "No devices were found")
    assert gpu_free_bytes("cuda") is None
    check_fits(2.0**60, "this", "less", "cuda")  # unknown: no refusal here, the allocator decides
    with pytest.raises(Exception, match="of memory, more than"):
        check_fits(2.0**60, "this", "less", "cpu")
    assert memory_device("auto", ("cpu", "cuda")) == "cpu"
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert gpu_free_bytes("cuda:0") is None


def test_auto_counts_as_the_gpu_when_one_is_reported_and_the_backend_offers_it(tmp_path, monkeypatch):
    from seqpred.memory import check_fits, memory_device

    _fake_nvidia_smi(tmp_path, monkeypatch, "2048")
    assert memory_device("auto", ("cpu", "cuda")) == "cuda"
    assert memory_device("auto", ("cpu",)) == "cpu"
    assert memory_device("cuda:2", ("cpu", "cuda")) == "cuda:2"
    check_fits(2.0**30, "this", "less", "cuda")  # 1 GiB in 2 GiB free
    with pytest.raises(
        Exception, match=r"needs about 3.0 GiB of GPU memory, more than the 2.0 GiB free on cuda"
    ):
        check_fits(3 * 2.0**30, "this", "less", "cuda")


@pytest.mark.parametrize("backend", ["numpy", "keras", "torch"])
def test_training_that_cannot_fit_in_memory_is_refused_with_the_figure(cli, corpus, tmp_path, backend):
    from seqpred.registry import get_registry

    get_registry().get(backend)  # skips where the backend's framework is not installed
    result = cli(
        "train", corpus, "--out", tmp_path / "r", "--backend", backend, "--batch-size", "100000000", "--quiet"
    )
    one_line_error(result, 2, "needs about", "TiB of memory", "available", "--batch-size")
    assert not (tmp_path / "r").exists()


def test_run_folder_that_cannot_be_written_on_resume_is_a_usage_error(cli, run, monkeypatch):
    import errno
    import tempfile

    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # noqa: A002 - mkstemp's own keyword
        if dir is not None and Path(dir) == run:  # as a read-only folder answers (root ignores chmod)
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_mkstemp(*args, dir=dir, **kwargs)

    before = _snapshot(run)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    one_line_error(
        cli("train", "--resume", run, "--max-steps", "8", "--quiet"), 2, "cannot write there", "writable"
    )
    monkeypatch.undo()
    assert _snapshot(run) == before


def test_read_only_run_folder_on_resume(cli, run):
    """A folder nobody may write to. Root writes into any folder whatever its mode, so as root the
    folder is made immutable (``chattr +i``), which holds for root too."""
    import subprocess

    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", run], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"root, and this filesystem refuses chattr +i: {made.stderr.strip()}")
        undo = ["chattr", "-i", run]
    else:
        run.chmod(0o555)
        undo = ["chmod", "755", run]
    try:
        before = _snapshot(run)
        one_line_error(cli("train", "--resume", run, "--max-steps", "8", "--quiet"), 2, "cannot write there")
        assert _snapshot(run) == before
    finally:
        subprocess.run(undo, check=True)


def test_history_is_appended_to_never_through_a_link(tmp_path):
    from seqpred.errors import RunError
    from seqpred.runs import open_for_append

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = tmp_path / "history.jsonl"
    link.symlink_to(victim)
    with pytest.raises(RunError, match="symbolic link"):
        open_for_append(link)
    assert victim.read_text() == "precious\n"
    link.unlink()
    with open_for_append(link) as handle:
        handle.write("{}\n")
    assert link.read_text() == "{}\n"
