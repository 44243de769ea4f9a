"""Training as a practitioner runs it: validation, checkpoints, resume, schedules, stopping, logs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from seqpred.runs import load_run, load_tensors
from seqpred.weights import init_weights
from tests.backend_helpers import needs_torch
from tests.conftest import TINY


def history(run: Path, event: str = "train") -> list[dict]:
    records = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == event]


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in history(run)]


def train(cli, corpus, out, *args):
    result = cli("train", corpus, "--out", out, "--quiet", *TINY, *args)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_same_seed_same_loss_curve_and_another_seed_differs(cli, corpus, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        train(cli, corpus, tmp_path / name, "--max-steps", "8", "--seed", str(seed))
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert losses(tmp_path / "a") != losses(tmp_path / "c")


@pytest.mark.slow
def test_resume_gives_the_same_history_as_an_uninterrupted_run(cli, corpus, tmp_path):
    # dropout on, a schedule whose position matters, validation in between
    common = ("--dropout", "0.3", "--schedule", "plateau", "--plateau-patience", "1", "--warmup", "3")
    train(cli, corpus, tmp_path / "straight", "--max-steps", "16", *common)
    train(cli, corpus, tmp_path / "split", "--max-steps", "8", *common)
    result = cli("train", "--resume", tmp_path / "split", "--max-steps", "16", "--quiet")
    assert result.exit_code == 0, result.output
    straight, split = losses(tmp_path / "straight"), losses(tmp_path / "split")
    assert len(split) == 16
    np.testing.assert_allclose(split, straight, rtol=1e-6)
    assert [r["lr"] for r in history(tmp_path / "split")] == [r["lr"] for r in history(tmp_path / "straight")]
    a, b = load_run(tmp_path / "straight", "latest"), load_run(tmp_path / "split", "latest")
    for name in a.weights:
        np.testing.assert_allclose(a.weights[name], b.weights[name], atol=1e-6)


def test_resume_refuses_to_change_the_model(cli, tiny_run):
    result = cli("train", "--resume", tiny_run, "--hidden", "32")
    assert result.exit_code == 2 and "cannot change --hidden when resuming" in result.stderr


def test_resume_of_a_missing_run(cli, tmp_path):
    result = cli("train", "--resume", tmp_path / "nothing")
    assert result.exit_code == 1 and "no such run folder" in result.stderr


@pytest.mark.slow
def test_validation_every_n_steps_and_at_each_epoch_end(cli, corpus, tmp_path):
    out = tmp_path / "r"
    train(cli, corpus, out, "--epochs", "2", "--val-every", "7")
    per_epoch = json.loads((out / "run.json").read_text())["step"] // 2
    steps = [r["step"] for r in history(out, "validation")]
    expected = sorted({s for s in range(1, 2 * per_epoch + 1) if s % 7 == 0 or s % per_epoch == 0})
    assert steps == expected
    record = history(out, "validation")[-1]
    assert math.isclose(record["bits_per_token"], record["loss"] / math.log(2))
    assert math.isclose(record["perplexity"], math.exp(record["loss"]))


@pytest.mark.slow
def test_best_and_latest_checkpoints(cli, corpus, tmp_path):
    out = tmp_path / "r"
    train(cli, corpus, out, "--max-steps", "30", "--val-every", "5", "--lr", "0.05")
    meta = json.loads((out / "run.json").read_text())
    vals = history(out, "validation")
    best = min(vals, key=lambda r: r["loss"])
    assert meta["best_step"] == best["step"] and meta["best_val_loss"] == pytest.approx(best["loss"])
    assert load_tensors(out / "best.safetensors").keys() == load_tensors(out / "weights.safetensors").keys()
    assert meta["status"] == "finished" and meta["step"] == 30


def test_cosine_schedule_with_warmup(cli, corpus, tmp_path):
    out = tmp_path / "r"
    train(
        cli,
        corpus,
        out,
        "--max-steps",
        "20",
        "--schedule",
        "cosine",
        "--warmup",
        "4",
        "--lr",
        "0.01",
        "--min-lr",
        "0.001",
    )
    rates = [r["lr"] for r in history(out)]
    assert rates[:4] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])
    expected = [0.001 + 0.009 * 0.5 * (1 + math.cos(math.pi * (s - 4) / 16)) for s in range(4, 20)]
    assert rates[4:] == pytest.approx(expected)


@pytest.mark.slow
def test_plateau_schedule_lowers_the_rate(cli, corpus, tmp_path):
    out = tmp_path / "r"
    # a rate so high the validation loss cannot keep improving
    train(
        cli,
        corpus,
        out,
        "--max-steps",
        "40",
        "--val-every",
        "2",
        "--lr",
        "0.5",
        "--schedule",
        "plateau",
        "--plateau-patience",
        "1",
        "--plateau-factor",
        "0.5",
        "--clip",
        "0",
    )
    rates = sorted({r["lr"] for r in history(out)}, reverse=True)
    assert rates[0] == 0.5 and len(rates) >= 2 and rates[1] == 0.25


def test_patience_stops_early(cli, corpus, tmp_path):
    out = tmp_path / "r"
    result = train(
        cli,
        corpus,
        out,
        "--max-steps",
        "200",
        "--val-every",
        "1",
        "--lr",
        "0.5",
        "--patience",
        "2",
        "--clip",
        "0",
    )
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "early-stopped" and meta["step"] < 200
    assert "stopped early" in result.stdout
    vals = history(out, "validation")
    assert vals[-1]["loss"] >= vals[-3]["best"] and vals[-2]["loss"] >= vals[-3]["best"]


def test_time_limit(cli, corpus, tmp_path):
    out = tmp_path / "r"
    result = train(cli, corpus, out, "--epochs", "100000", "--time-limit", "1s")
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "time-limit" and 0 < meta["step"] < 100000
    assert "time limit" in result.stdout
    assert load_run(out).spec.hidden == 16


def test_gradient_clipping_limits_the_update(cli, corpus, tmp_path):
    spec_args = ("--max-steps", "1", "--lr", "0.1", "--dropout", "0", "--seed", "4")
    train(cli, corpus, tmp_path / "free", *spec_args, "--clip", "0")
    train(cli, corpus, tmp_path / "clipped", *spec_args, "--clip", "1e-12")
    run = load_run(tmp_path / "free", "latest")
    start = init_weights(run.spec, 4)
    moved = {n: np.abs(run.weights[n] - start[n]).max() for n in start}
    clipped = load_run(tmp_path / "clipped", "latest").weights
    moved_clipped = {n: np.abs(clipped[n] - start[n]).max() for n in start}
    assert max(moved.values()) > 0.05
    assert max(moved_clipped.values()) < 1e-5


def test_json_log_format(cli, corpus, tmp_path):
    result = cli("train", corpus, "--out", tmp_path / "r", "--log-format", "json", *TINY, "--max-steps", "6")
    assert result.exit_code == 0
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["event"] == "start" and records[-1]["event"] == "end"
    assert [r["step"] for r in records if r["event"] == "train"] == list(range(1, 7))
    assert {"loss", "lr", "tokens_per_s", "epoch"} <= records[1].keys()


def test_progress_bar_reports_step_loss_and_speed(cli, corpus, tmp_path):
    result = cli("train", corpus, "--out", tmp_path / "r", *TINY, "--max-steps", "6")
    assert result.exit_code == 0
    assert "step" in result.stderr and "6/6" in result.stderr and "tok/s" in result.stderr
    assert "loss" in result.stderr and "val" in result.stderr


def test_config_file_with_flags_overriding(cli, corpus, tmp_path):
    config = tmp_path / "train.toml"
    config.write_text(
        f'[train]\ncorpus = "{corpus}"\nhidden = 24\nembedding = 8\nseq-len = 16\n'
        "batch_size = 8\nmax_steps = 3\nlr = 0.01\n"
    )
    out = tmp_path / "r"
    result = cli("train", "--config", config, "--out", out, "--lr", "0.02", "--quiet")
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "train.json").read_text())
    assert saved["hidden"] == 24 and saved["lr"] == 0.02 and saved["max_steps"] == 3
    assert saved["corpus"] == str(corpus)


def test_bad_config_file(cli, tmp_path, corpus):
    config = tmp_path / "bad.toml"
    config.write_text("hidden = [\n")
    result = cli("train", corpus, "--config", config, "--out", tmp_path / "r")
    assert result.exit_code == 2 and "not a valid TOML file" in result.stderr
    config.write_text("hiden = 3\n")
    result = cli("train", corpus, "--config", config, "--out", tmp_path / "r")
    assert result.exit_code == 2 and "unknown option(s) in the configuration file: hiden" in result.stderr


def test_evaluate_scores_any_text(cli, tiny_run, corpus):
    result = cli("evaluate", tiny_run, corpus, "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["backend"] == "torch" and scores["tokens"] == len(corpus.read_text())
    assert math.isclose(scores["bits_per_token"], scores["loss"] / math.log(2))
    text = cli("evaluate", tiny_run, corpus).stdout
    assert "bits/token" in text and "perplexity" in text


def test_evaluate_matches_the_validation_figure(cli, corpus, tmp_path):
    out = tmp_path / "r"
    train(cli, corpus, out, "--max-steps", "5", "--val-fraction", "0.2")
    text = corpus.read_text()
    tail = tmp_path / "tail.txt"
    tail.write_text(text[len(text) - round(len(text) * 0.2) :])
    scores = json.loads(cli("evaluate", out, tail, "--json", "--checkpoint", "latest").stdout)
    assert scores["loss"] == pytest.approx(history(out, "validation")[-1]["loss"], rel=1e-5)


def test_plot_writes_a_png(cli, tiny_run, tmp_path):
    pytest.importorskip("matplotlib")
    result = cli("plot", tiny_run, "--output", tmp_path / "c.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_what_to_install(cli, tiny_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = cli("plot", tiny_run)
    assert result.exit_code == 1 and "pip install 'seqpred[plot]'" in result.stderr


def _start_training(corpus: Path, out: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "seqpred",
        "train",
        str(corpus),
        "--out",
        str(out),
        "--quiet",
        *TINY,
        "--epochs",
        "100000",
        "--val-every",
        "1000",
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_steps(out: Path, steps: int = 5, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = out / "history.jsonl"
        if path.exists() and len(path.read_text().splitlines()) >= steps:
            return
        time.sleep(0.05)
    raise AssertionError("training did not start")


@needs_torch  # trains on the default backend in a subprocess
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.slow
def test_interrupt_saves_a_checkpoint_that_resumes(cli, corpus, tmp_path, sig):
    out = tmp_path / "r"
    process = _start_training(corpus, out)
    _wait_for_steps(out)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "checkpoint saved" in lines[0] and f"seqpred train --resume {out}" in lines[0]
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["step"] >= 5
    load_run(out)  # loadable
    result = cli("train", "--resume", out, "--max-steps", str(meta["step"] + 2), "--quiet")
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in history(out)] == list(range(1, meta["step"] + 3))


@needs_torch  # trains on the default backend in a subprocess
@pytest.mark.slow
def test_a_killed_run_leaves_a_loadable_folder(cli, corpus, tmp_path):
    out = tmp_path / "r"
    process = _start_training(corpus, out)
    _wait_for_steps(out, steps=3)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    run = load_run(out)  # a write cut short leaves at most a hidden temporary, never a half file
    assert run.spec.hidden == 16
    result = cli("train", "--resume", out, "--max-steps", str(run.meta["step"] + 3), "--quiet")
    assert result.exit_code == 0, result.output
    assert not list(out.glob(".*.tmp"))  # the next training clears what the kill left
