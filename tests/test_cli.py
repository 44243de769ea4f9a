"""The command line as a user drives it: train, generate, backends, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest

from seqpred.registry import get_registry
from tests.backend_helpers import needs_torch
from tests.conftest import TINY, one_line_error


@needs_torch
def test_torch_backend_is_found_through_its_entry_point():
    points = {ep.name: ep for ep in metadata.entry_points(group="seqpred")}
    assert points["torch"].value == "seqpred_torch.plugin"
    entry = get_registry().backends["torch"]
    assert entry.plugin.distribution == "seqpred-torch"
    assert entry.plugin.entry_point == "torch"
    assert type(entry.backend).__module__ == "seqpred_torch.plugin"


@needs_torch  # the listing it checks is torch's
def test_backends_lists_distribution_and_version(cli):
    result = cli("backends")
    assert result.exit_code == 0
    line = next(line for line in result.stdout.splitlines() if line.startswith("torch "))
    assert "seqpred-torch" in line and metadata.version("seqpred-torch") in line and line.endswith("ok")
    rows = json.loads(cli("backends", "--json").stdout)
    assert {"name": "torch", "distribution": "seqpred-torch"}.items() <= next(
        r for r in rows if r["name"] == "torch"
    ).items()


@pytest.mark.parametrize("args", [["--help"], ["backends"], ["train", "--help"]])
def test_listing_and_help_import_no_framework(args):
    code = (
        f"import sys, runpy; sys.argv = ['seqpred', *{args!r}]\n"
        "try:\n    runpy.run_module('seqpred', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in result.stderr, result.stderr


def test_python_dash_m_and_version():
    result = subprocess.run([sys.executable, "-m", "seqpred", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("seqpred ")


def test_train_then_generate(cli, corpus, tmp_path):
    out = tmp_path / "run"
    result = cli("train", corpus, "--backend", "torch", "--out", out, "--max-steps", "10", "--quiet", *TINY)
    assert result.exit_code == 0, result.output
    assert "validation: loss" in result.stdout and "bits/token" in result.stdout
    for name in (
        "run.json",
        "model.json",
        "train.json",
        "vocab.json",
        "weights.safetensors",
        "history.jsonl",
    ):
        assert (out / name).is_file(), name
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history if r["event"] == "train"] == list(range(1, 11))
    assert any(r["event"] == "validation" for r in history)

    result = cli("generate", out, "--backend", "torch", "--length", "300", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert len(result.stdout) == 300 + 1  # the text and a final newline


def test_generate_continues_the_prime(cli, tiny_run):
    result = cli("generate", tiny_run, "--length", "40", "--prime", "The king", "--seed", "3")
    assert result.exit_code == 0
    assert result.stdout.startswith("The king") and len(result.stdout) == len("The king") + 40 + 1


def test_generation_is_reproducible_with_a_seed(cli, tiny_run):
    a = cli("generate", tiny_run, "--length", "80", "--seed", "11").stdout
    b = cli("generate", tiny_run, "--length", "80", "--seed", "11").stdout
    c = cli("generate", tiny_run, "--length", "80", "--seed", "12").stdout
    assert a == b and a != c


@pytest.mark.slow
def test_corpus_from_a_folder_and_from_stdin(cli, tmp_path, corpus):
    folder = tmp_path / "texts"
    folder.mkdir()
    text = corpus.read_text()
    (folder / "a.txt").write_text(text[:3000])
    (folder / "b.txt").write_text(text[3000:])
    result = cli("train", folder, "--out", tmp_path / "f", "--max-steps", "2", "--quiet", *TINY)
    assert result.exit_code == 0, result.output
    result = cli("train", "-", "--out", tmp_path / "s", "--max-steps", "2", "--quiet", *TINY, input=text)
    assert result.exit_code == 0, result.output


def test_crlf_corpus_trains_like_lf(cli, tmp_path, corpus):
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(corpus.read_bytes().replace(b"\n", b"\r\n"))
    for name, path in (("lf", corpus), ("crlf", crlf)):
        assert (
            cli("train", path, "--out", tmp_path / name, "--max-steps", "3", "--quiet", *TINY).exit_code == 0
        )
    assert (tmp_path / "lf" / "vocab.json").read_text() == (tmp_path / "crlf" / "vocab.json").read_text()
    assert "\r" not in json.loads((tmp_path / "crlf" / "vocab.json").read_text())["tokens"]


def test_lower_and_word_level(cli, corpus, tmp_path):
    out = tmp_path / "w"
    result = cli(
        "train",
        corpus,
        "--out",
        out,
        "--level",
        "word",
        "--lower",
        "--max-steps",
        "3",
        "--quiet",
        "--hidden",
        "16",
        "--embedding",
        "8",
        "--seq-len",
        "8",
        "--batch-size",
        "4",
    )
    assert result.exit_code == 0, result.output
    vocab = json.loads((out / "vocab.json").read_text())
    assert vocab["level"] == "word" and "king" in vocab["tokens"] and "King" not in vocab["tokens"]
    text = cli("generate", out, "--length", "30", "--seed", "0").stdout
    assert "  " not in text and len(text.split()) >= 10


# -- bad input ------------------------------------------------------------------------------


def test_missing_corpus(cli, tmp_path):
    one_line_error(
        cli("train", tmp_path / "nope.txt", "--out", tmp_path / "r"), 1, "nope.txt", "no such file"
    )


def test_empty_corpus(cli, tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    one_line_error(cli("train", path, "--out", tmp_path / "r"), 1, "empty")


def test_corpus_shorter_than_one_window(cli, tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("a short text\n")
    one_line_error(
        cli("train", path, "--out", tmp_path / "r"), 1, "shorter than one training window", "--seq-len"
    )


def test_undecodable_bytes_name_file_and_offset(cli, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 au lait ".encode("latin-1") * 20)
    one_line_error(cli("train", path, "--out", tmp_path / "r"), 1, "latin1.txt", "UTF-8", "byte offset 3")


@needs_torch  # the list it checks names torch
def test_unknown_backend_lists_the_available_ones(cli, corpus, tmp_path):
    one_line_error(
        cli("train", corpus, "--backend", "tensorflowish", "--out", tmp_path / "r", *TINY),
        1,
        "unknown backend 'tensorflowish'",
        "torch",
    )


def test_generate_on_a_folder_that_is_not_a_run(cli, tmp_path):
    one_line_error(cli("generate", tmp_path), 1, "not a seqpred run")
    one_line_error(cli("generate", tmp_path / "missing"), 1, "no such run folder")


def test_prime_outside_the_vocabulary_names_the_symbols(cli, tiny_run):
    one_line_error(cli("generate", tiny_run, "--prime", "Zebra€"), 1, "'Z'", "'€'")


@pytest.mark.parametrize(
    "flag", ["--hidden", "--seq-len", "--batch-size", "--epochs", "--max-steps", "--layers"]
)
@pytest.mark.parametrize("value", ["0", "-3"])
def test_non_positive_sizes(cli, corpus, tmp_path, flag, value):
    one_line_error(
        cli("train", corpus, "--out", tmp_path / "r", flag, value), 2, flag.lstrip("-"), "positive"
    )


def test_absurd_size_is_refused_before_allocation(cli, corpus, tmp_path):
    message = one_line_error(cli("train", corpus, "--out", tmp_path / "r", "--hidden", "10000000"), 2, "GiB")
    assert "parameters" in message
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "x", "--hiden", "3"], "No such option: --hiden"),
        (["train", "x", "--hidden", "many"], "'--hidden'"),
        (["frobnicate"], "No such command"),
    ],
)
def test_command_line_parse_errors_are_one_line(cli, args, fragment):
    one_line_error(cli(*args), 2, fragment, "--help")
