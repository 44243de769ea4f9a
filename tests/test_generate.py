"""Generation through the CLI and the Python API: every option, on a tiny trained run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seqpred.generate import Generator
from seqpred.sampling import SamplingSettings
from tests.conftest import TINY, Cli, make_text, one_line_error


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run trained long enough that its next-token distributions are far from uniform."""
    folder = tmp_path_factory.mktemp("gen")
    corpus = folder / "corpus.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    result = Cli()(
        "train", corpus, "--out", folder / "run", "--max-steps", "60", "--lr", "0.02", "--quiet", *TINY
    )
    assert result.exit_code == 0, result.output
    return folder / "run"


def gen(cli, run, *args):
    result = cli("generate", run, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_length_counts_generated_characters_after_the_prime(cli, tiny_run):
    assert len(gen(cli, tiny_run, "--length", "123", "--seed", "0")) == 123 + 1
    assert gen(cli, tiny_run, "--length", "0", "--prime", "The") == "The\n"


def test_greedy_is_deterministic_and_equals_top_k_1(cli, tiny_run):
    a = gen(cli, tiny_run, "--greedy", "--length", "60", "--seed", "1")
    b = gen(cli, tiny_run, "--greedy", "--length", "60", "--seed", "2")
    c = gen(cli, tiny_run, "--top-k", "1", "--length", "60", "--seed", "3")
    assert a == b == c


def test_temperature_top_k_and_top_p_are_applied(cli, tiny_run):
    runs = {
        args: gen(cli, tiny_run, *args, "--length", "200", "--seed", "5")
        for args in (
            ("--temperature", "1.0"),
            ("--temperature", "0.001"),
            ("--top-p", "0.000001"),
            ("--top-k", "2"),
        )
    }
    greedy = gen(cli, tiny_run, "--greedy", "--length", "200")
    assert runs[("--temperature", "0.001")] == greedy
    assert runs[("--top-p", "0.000001")] == greedy  # the nucleus is the single most likely token
    assert runs[("--temperature", "1.0")] != greedy


def test_top_k_only_emits_the_k_most_likely(tiny_run):
    generator = Generator(tiny_run, fused=False)  # the core steps the model: each step seen
    seen = []
    original = generator.model.step

    def spy(tokens, state):
        logits, state = original(tokens, state)
        seen.append(logits.copy())
        return logits, state

    generator.model.step = spy
    out = generator.generate("The", 100, SamplingSettings(top_k=3), seed=0)
    ids = generator.vocab.encode(out.samples[0])
    for logits, token in zip(seen, ids, strict=False):
        assert token in np.argsort(-logits[0])[:3]


@pytest.mark.parametrize(
    "flags",
    [("--temperature", "0"), ("--temperature", "-1"), ("--top-p", "0"), ("--top-p", "1.5"), ("--top-k", "0")],
)
def test_invalid_sampling_values(cli, tiny_run, flags):
    one_line_error(cli("generate", tiny_run, *flags), 2, flags[0].lstrip("-"))


def test_prime_file_and_prime_conflict(cli, tiny_run, tmp_path):
    prime = tmp_path / "prime.txt"
    prime.write_bytes(b"The king\r\nand")
    out = gen(cli, tiny_run, "--prime-file", prime, "--length", "10", "--seed", "0")
    assert out.startswith("The king\nand") and len(out) == len("The king\nand") + 10 + 1
    one_line_error(cli("generate", tiny_run, "--prime-file", prime, "--prime", "x"), 2, "not both")
    one_line_error(cli("generate", tiny_run, "--prime-file", tmp_path / "missing.txt"), 2, "missing.txt")


def test_unknown_prime_symbols_error_skip_or_replace(cli, tiny_run):
    one_line_error(cli("generate", tiny_run, "--prime", "The Zoo"), 1, "'Z'")
    skipped = json.loads(
        gen(cli, tiny_run, "--prime", "The Zoo", "--unknown", "skip", "--length", "5", "--json")
    )
    replaced = json.loads(
        gen(cli, tiny_run, "--prime", "The Zoo", "--unknown", "replace", "--length", "5", "--json")
    )
    assert skipped["prime"] == replaced["prime"] == "The Zoo"
    one_line_error(cli("generate", tiny_run, "--unknown", "ignore"), 2, "--unknown")


def test_long_prime_goes_through_one_sequence_pass(tiny_run):
    generator = Generator(tiny_run, fused=False)  # the core steps the model: each step seen
    calls = {"step": 0, "forward": 0}
    step, forward = generator.model.step, generator.model.forward

    def count(name, fn):
        def wrapper(*args):
            calls[name] += 1
            return fn(*args)

        return wrapper

    generator.model.step = count("step", step)
    generator.model.forward = count("forward", forward)
    generator.generate("The king and the queen " * 20, 5, seed=0)
    assert calls == {"forward": 1, "step": 5}


def test_stop_strings_end_the_sample(cli, tiny_run):
    free = gen(cli, tiny_run, "--length", "300", "--seed", "9", "--prime", "The")
    stop = next(c for c in (" the", "e", "a") if c in free[3:])
    cut = free[3:].index(stop)
    stopped = gen(
        cli,
        tiny_run,
        "--length",
        "300",
        "--seed",
        "9",
        "--prime",
        "The",
        "--stop",
        stop,
        "--stop",
        "no such string",
    )
    assert stopped == "The" + free[3:][:cut] + "\n"
    data = json.loads(
        gen(cli, tiny_run, "--length", "300", "--seed", "9", "--prime", "The", "--stop", stop, "--json")
    )
    assert data["stopped"] == [True] and data["samples"] == [free[3:][:cut]]


def test_streaming_output_arrives_piece_by_piece(tiny_run):
    pieces = []
    result = Generator(tiny_run).generate("", 50, seed=1, on_text=pieces.append)
    assert len(pieces) == 50 and "".join(pieces) == result.samples[0]
    held = []
    result = Generator(tiny_run).generate("", 50, seed=1, stop=["zzzz"], on_text=held.append)
    assert "".join(held) == result.samples[0] and len(held) > 10


def test_num_samples_are_independent_and_separated(cli, tiny_run):
    out = gen(cli, tiny_run, "--num-samples", "3", "--length", "40", "--seed", "2")
    blocks = out.split("===== sample ")
    assert len(blocks) == 4 and blocks[1].startswith("1 of 3 =====")
    data = json.loads(gen(cli, tiny_run, "--num-samples", "3", "--length", "40", "--seed", "2", "--json"))
    assert len(data["samples"]) == 3 and len(set(data["samples"])) == 3
    assert all(len(s) == 40 for s in data["samples"])
    # a stream of a batch is the same as the same stream alone under greedy decoding
    greedy = json.loads(gen(cli, tiny_run, "--num-samples", "4", "--greedy", "--length", "40", "--json"))
    assert len(set(greedy["samples"])) == 1
    assert greedy["samples"][0] == gen(cli, tiny_run, "--greedy", "--length", "40")[:-1]


def test_json_reports_settings_seed_run_and_backend(cli, tiny_run):
    data = json.loads(
        gen(
            cli,
            tiny_run,
            "--json",
            "--length",
            "20",
            "--seed",
            "4",
            "--top-k",
            "5",
            "--top-p",
            "0.9",
            "--temperature",
            "0.7",
        )
    )
    assert data["seed"] == 4 and data["backend"] == "torch" and data["run"] == str(tiny_run)
    assert data["settings"] == {"temperature": 0.7, "top_k": 5, "top_p": 0.9, "greedy": False}
    assert data["length"] == 20 and len(data["samples"][0]) == 20


@pytest.mark.slow
def test_word_level_generates_tokens_with_sensible_spacing(cli, corpus, tmp_path):
    out = tmp_path / "w"
    result = cli(
        "train",
        corpus,
        "--out",
        out,
        "--level",
        "word",
        "--max-steps",
        "30",
        "--quiet",
        "--hidden",
        "16",
        "--embedding",
        "8",
        "--seq-len",
        "8",
        "--batch-size",
        "8",
        "--lr",
        "0.02",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(gen(cli, out, "--length", "40", "--seed", "0", "--json", "--prime", "The king"))
    text = data["samples"][0]
    assert "  " not in text and " ," not in text and " ." not in text and " \n" not in text
    assert len(Generator(out).vocab.encode(text)) == 40


def test_python_api_matches_the_cli(cli, tiny_run):
    text = Generator(tiny_run).generate("The", 30, SamplingSettings(temperature=0.8), seed=3).samples[0]
    assert gen(cli, tiny_run, "--prime", "The", "--length", "30", "--temperature", "0.8", "--seed", "3") == (
        "The" + text + "\n"
    )
