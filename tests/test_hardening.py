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
    from seqpred.corpus import read_corpus

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
    assert result.exit_code == 1
    assert "hunter2" not in result.output and "password" not in result.output
