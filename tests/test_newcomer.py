"""What a new user sees while seqpred works: progress on a terminal and in logs, training's start, resume
and end, and the sample shown at validation."""

from __future__ import annotations

import io
import json
import re
import shlex
import time

import numpy as np
import pytest
from rich.console import Console

from seqpred import progress
from seqpred.config import resolve
from seqpred.train import train
from tests.backend_helpers import needs_torch
from tests.conftest import TINY, make_text

pytestmark = needs_torch


def history(out):
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


class Recorder(progress.Display):
    """A display that keeps every task it was shown, and their last state."""

    def __init__(self):
        super().__init__(Console(file=io.StringIO()))
        self.tasks: list[progress.Task] = []
        self.lines: list[str] = []

    def open(self, task):
        self.tasks.append(task)

    def print(self, text):
        self.lines.append(text)


# -- progress: log lines off a terminal, bars on one --------------------------------------------


def test_training_off_a_terminal_logs_a_line_at_a_steady_interval(cli, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0.01")
    big = tmp_path / "big.txt"
    big.write_text(make_text(60_000))
    out = tmp_path / "r"
    result = cli("train", big, "-o", out, "--max-steps", "300", "--val-fraction", "0.4", *TINY)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("step ")]
    assert lines, result.stderr
    pattern = (
        r"step ([\d,]+)/300 \(\d+%\)  epoch \d+  loss \d+\.\d{4}  (val \d\.\d{4}  )?[\d,]+ tok/s  "
        r"\d:\d\d:\d\d elapsed"
    )
    trained = [line for line in lines if not line.startswith("step 0/")]  # before the first step: no loss
    assert trained and all(re.match(pattern, line) for line in trained), lines
    assert any(", ETA " in line for line in lines), lines
    assert lines[-1].startswith("step 300/300 (100%)")  # the log ends with the last step
    assert "validation at step 5: loss" in result.stderr  # each validation, as it happens
    scoring = [line for line in result.stderr.splitlines() if line.startswith("validation ") and "%)" in line]
    assert scoring and all(re.match(r"validation [\d,]+/[\d,]+ tokens \(\d+%\)", line) for line in scoring)
    assert "\x1b[" not in result.stderr  # plain text: no bar, no colours


def test_training_on_a_terminal_shows_a_bar_without_log_lines(cli, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich: stderr is a terminal
    monkeypatch.setenv(progress.INTERVAL_ENV, "0.01")
    result = cli("train", corpus, "--backend", "torch", "--out", tmp_path / "r", "--max-steps", "30", *TINY)
    assert result.exit_code == 0, result.output
    assert "━" in result.stderr and "30/30" in result.stderr
    assert "validation at step" not in result.stderr and "ETA" not in result.stderr


def test_quiet_and_json_show_no_progress(cli, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0.01")
    quiet = cli("train", corpus, "--out", tmp_path / "q", "--max-steps", "20", "--quiet", *TINY)
    assert quiet.exit_code == 0 and quiet.stderr == ""
    as_json = cli(
        "train", corpus, "--out", tmp_path / "j", "--max-steps", "20", "--log-format", "json", *TINY
    )
    assert as_json.exit_code == 0 and as_json.stderr == ""
    end = json.loads(as_json.stdout.splitlines()[-1])
    assert end["event"] == "end" and end["best_step"] == 20 and end["tokens_per_s"] > 0


def test_validation_reports_its_progress_to_the_end(corpus, tmp_path):
    config = resolve(
        {"corpus": str(corpus), "hidden": 16, "embedding": 8, "seq_len": 16, "batch_size": 8, "max_steps": 10}
    )
    with progress.showing(Recorder()) as shown:
        train(config, tmp_path / "r")
    validations = [t for t in shown.tasks if t.description == "validation"]
    assert validations and all(t.total and t.completed == t.total for t in validations)


@pytest.mark.parametrize("objective", ["sequence", "last"])
def test_scoring_counts_exactly_the_tokens_it_reads(objective):
    from seqpred.models import build_model
    from seqpred.scoring import carried_loss, window_loss
    from seqpred.spec import ModelSpec

    spec = ModelSpec(vocab_size=7, hidden=8, layers=1, embedding=4, seq_len=10, objective=objective)
    model = build_model("numpy", spec, "cpu", 0)
    ids = np.asarray((list(range(7)) * 60)[:397], dtype=np.int32)
    with (
        progress.showing(Recorder()) as shown,
        progress.scoring("validation", model, len(ids), spec, stripes=3) as scored,
    ):
        window_loss(scored, ids, spec)
        carried_loss(scored, ids, stripes=3)
    (work,) = shown.tasks
    assert work.completed == work.total > 0


def test_a_task_without_a_display_costs_nothing():
    assert progress.current() is None
    with progress.task("nothing", total=3) as work:
        work.advance(3)
    assert work.completed == 3


def test_a_log_line_says_how_far_and_when_it_ends():
    task = progress.Task("validation", total=200, unit="tokens")
    task.started -= 10  # ten seconds ago
    task.update(completed=50)
    line = task.line()
    assert line.startswith("validation 50/200 tokens (25%)") and "0:00:10 elapsed, ETA 0:00:30" in line


# -- training's voice ---------------------------------------------------------------------------


def test_training_says_where_it_runs_and_where_it_writes(cli, corpus, tmp_path):
    out = tmp_path / "r"
    result = cli("train", corpus, "--out", out, "--max-steps", "5", "--device", "auto", *TINY)
    assert result.exit_code == 0, result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith("training on torch, device cpu (") and f"into {out}:" in first
    assert "thread" in first
    numpy = cli(
        "train", corpus, "-o", tmp_path / "n", "-b", "numpy", "--max-steps", "2", "--device", "auto", *TINY
    )
    assert numpy.stderr.startswith("training on numpy, device cpu (")  # auto, resolved


def test_train_without_out_says_where_the_run_went(cli, corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("train", corpus, "--max-steps", "3", "--quiet", *TINY)
    assert result.exit_code == 0, result.output
    assert "saved run to runs/latest at step 3" in result.stdout
    assert (tmp_path / "runs" / "latest" / "run.json").is_file()


def test_resume_says_from_which_step(cli, corpus, tmp_path):
    out = tmp_path / "r"
    assert cli("train", corpus, "--out", out, "--max-steps", "10", "--quiet", *TINY).exit_code == 0
    result = cli("train", "--resume", out, "--max-steps", "20")
    assert result.exit_code == 0, result.output
    assert "resuming from step 10 of 20" in result.stderr


def test_the_end_summary_and_its_generate_command(cli, corpus, tmp_path):
    out = tmp_path / "r"
    result = cli("train", corpus, "--out", out, "--max-steps", "12", "--quiet", *TINY)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    best = min((r for r in history(out) if r["event"] == "validation"), key=lambda r: r["loss"])
    summary = next(line for line in lines if line.startswith("trained "))
    match = re.fullmatch(
        r"trained 12 steps in (\d:\d\d:\d\d) \(([\d,]+) tokens/s\); best validation loss (\d\.\d{4}) nats "
        r"\((\d\.\d{4}) bits/token\) at step (\d+)",
        summary,
    )
    assert match, summary
    assert float(match[3]) == pytest.approx(best["loss"], abs=1e-4) and int(match[5]) == best["step"]
    assert f"saved run to {out} at step 12" in lines
    command = lines[-1].removeprefix("generate from it with: ")
    assert lines[-1] != command and shlex.split(command)[:3] == ["seqpred", "generate", str(out)]
    generated = cli(*shlex.split(command)[1:], "--length", "20", "--seed", "1")
    assert generated.exit_code == 0 and len(generated.stdout) == 21


def test_sample_every_shows_text_at_validation_and_changes_nothing_else(cli, corpus, tmp_path):
    plain, sampled = tmp_path / "plain", tmp_path / "sampled"
    assert cli("train", corpus, "--out", plain, "--max-steps", "20", "--quiet", *TINY).exit_code == 0
    result = cli("train", corpus, "--out", sampled, "--max-steps", "20", "--sample-every", "10", *TINY)
    assert result.exit_code == 0, result.output
    records = history(sampled)
    samples = {r["step"]: r["sample"] for r in records if "sample" in r}
    assert sorted(samples) == [10, 20] and all(len(text) > 0 for text in samples.values())
    assert "sample at step 10:" in result.stderr and "sample at step 20:" in result.stderr
    losses = [r.get("loss") for r in records]
    assert losses == [r.get("loss") for r in history(plain)]  # the sample does not touch training
    # The sample is what generate gives from that moment's weights with the step as seed.
    generated = cli("generate", sampled, "--checkpoint", "latest", "--length", "200", "--seed", "20")
    assert generated.stdout.removesuffix("\n") == samples[20]


def test_time_limit_counts_the_whole_training(cli, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text(make_text(200_000))
    sizes = ("--hidden", "32", "--seq-len", "32", "--batch-size", "16", "--val-every", "40", "--quiet")
    warm = cli("train", big, "-o", tmp_path / "warm", "--max-steps", "1", *sizes)  # imports torch
    assert warm.exit_code == 0, warm.output
    began = time.perf_counter()
    result = cli("train", big, "-o", tmp_path / "r", "--time-limit", "3s", *sizes)
    wall = time.perf_counter() - began
    assert result.exit_code == 0, result.output
    assert "(time limit reached)" in result.stdout
    recorded = json.loads((tmp_path / "r" / "run.json").read_text())
    assert recorded["status"] == "time-limit" and recorded["step"] > 0
    # It stops when one more step and the final validation would pass the limit: it ends within a
    # step or two of it, not a whole validation (or the set-up) later.
    spent = re.search(r"trained [\d,]+ steps in 0:00:0(\d)", result.stdout)
    assert spent and int(spent[1]) <= 3, result.stdout
    assert recorded["seconds"] <= 3.0 and wall <= 3.0 * 1.2, (recorded["seconds"], wall)
