"""The commands around training as a new user meets them: seqpred runs, --help, shell completion,
generation's escapes, seed and unknown symbols, and progress while scoring and downloading."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from seqpred import progress
from tests.backend_helpers import needs_torch
from tests.conftest import make_text, one_line_error

ROOT = Path(__file__).resolve().parent.parent

# -- seqpred runs ---------------------------------------------------------------------------------


@needs_torch
def test_runs_lists_every_run_under_a_folder(cli, tiny_run, tmp_path, monkeypatch):
    folder = tmp_path / "runs"
    nested = folder / "group" / "a"
    nested.parent.mkdir(parents=True)
    tiny_run.rename(nested)
    (folder / "broken").mkdir()
    (folder / "broken" / "run.json").write_text("{not json")
    (folder / "notes").mkdir()  # no run.json: not a run
    monkeypatch.chdir(tmp_path)
    result = cli("runs")  # runs/ by default
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == (
        "run backend status steps best val loss bits/token at step size modified".split()
    )
    run_json = json.loads((nested / "run.json").read_text())
    best = run_json["best_val_loss"]
    row = next(line for line in rows if line.startswith("group/a "))
    cells = row.split()
    assert cells[1:4] == ["torch", "finished", "12"]
    assert cells[4] == f"{best:.4f}" and cells[5] == f"{best / math.log(2):.4f}"
    assert cells[6] == str(run_json["best_step"]) and cells[8] == "kB"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", cells[9])
    broken = next(line for line in rows if line.startswith("broken "))
    assert "damaged" in broken and any(
        line.startswith("broken: ") and "not valid JSON" in line for line in rows
    )
    assert not any(line.startswith("notes") for line in rows)

    listed = json.loads(cli("runs", folder, "--json").stdout)
    assert [r["name"] for r in listed] == ["broken", "group/a"]
    entry = listed[1]
    assert entry["steps"] == 12 and entry["best_val_loss"] == pytest.approx(best)
    size = sum(p.stat().st_size for p in nested.iterdir() if p.is_file())
    assert entry["size"] == size and entry["backend"] == "torch" and entry["problem"] is None
    assert listed[0]["status"] == "damaged" and listed[0]["problem"]


def test_runs_of_a_missing_or_empty_folder(cli, tmp_path):
    one_line_error(cli("runs", tmp_path / "nowhere"), 1, "no such folder", "seqpred train")
    result = cli("runs", tmp_path)
    assert result.exit_code == 0 and result.stdout.startswith(f"no runs under {tmp_path}")
    assert json.loads(cli("runs", tmp_path, "--json").stdout) == []


# -- help and completion --------------------------------------------------------------------------

COMMANDS = [
    [],
    ["train"],
    ["generate"],
    ["evaluate"],
    ["plot"],
    ["export"],
    ["serve"],
    ["backends"],
    ["runs"],
]
COMMANDS += [["corpus", "list"], ["corpus", "download"]]
NO_DEFAULT = {"--help", "--version", "--install-completion", "--show-completion"}


def option_entries(help_text: str) -> list[str]:
    """Each option of a --help page as one line: its flags, metavar and help."""
    options = help_text.split("\nOptions:\n", 1)[1]
    return [" ".join(entry.split()) for entry in re.split(r"\n  (?=-)", "\n" + options) if entry.strip()]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "seqpred")
def test_every_option_shows_its_default_and_a_metavar_that_says_what_it_is(cli, command):
    result = cli(*command, "--help")
    assert result.exit_code == 0
    entries = option_entries(result.stdout)
    assert entries
    for entry in entries:
        if entry.split()[0].rstrip(",") not in NO_DEFAULT and not entry.startswith("-h"):
            assert "[default: " in entry, entry
        # A metavar names what to give (N, FILE, RUN, cpu|cuda), not Python's type of it.
        assert not re.search(r"<(str|int|float|path|list\[str\])>", entry), entry
    assert "``" not in result.stdout  # no reStructuredText left in the text


def test_train_help_shows_the_defaults_a_newcomer_asks_about(cli):
    text = " ".join(cli("train", "--help").stdout.split())
    for flag, default in [("--epochs N", "10"), ("--batch-size N", "64"), ("--lr RATE", "0.005")]:
        assert re.search(re.escape(flag) + r" .*?\[default: " + re.escape(default), text), flag
    assert "--sample-every N" in text and "[default: off]" in text
    generate = " ".join(cli("generate", "--help").stdout.split())
    assert "--temperature T Sampling temperature (> 0). [default: the run's" in generate


def test_shell_completion_is_offered(cli):
    assert "--install-completion" in cli("--help").stdout
    script = cli("--show-completion", "bash")
    assert script.exit_code == 0 and "_SEQPRED_COMPLETE" in script.stdout.upper()
    env = {**os.environ, "_SEQPRED_COMPLETE": "complete_bash", "COMP_WORDS": "seqpred ru", "COMP_CWORD": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "seqpred"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["runs"], done.stderr


# -- generation ---------------------------------------------------------------------------------


@needs_torch
def test_escapes_in_prime_and_stop(cli, tiny_run):
    result = cli("generate", tiny_run, "--prime", r"The king\n", "--length", "5", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("The king\n")
    literal = cli(
        "generate", tiny_run, "--prime", r"a\\nb", "--unknown", "replace", "--length", "1", "--json"
    )
    read = json.loads(literal.stdout)
    assert read["prime"] == "a\\nb" and read["prime_read"] == "a nb"  # \\ is one backslash, unknown
    free = json.loads(
        cli("generate", tiny_run, "--length", "300", "--num-samples", "4", "--seed", "5", "--json").stdout
    )
    assert any("\n" in text for text in free["samples"])
    stopped = cli(
        "generate",
        tiny_run,
        "--length",
        "300",
        "--num-samples",
        "4",
        "--seed",
        "5",
        "--stop",
        r"\n",
        "--json",
    )
    data = json.loads(stopped.stdout)
    assert data["samples"] == [text.split("\n")[0] for text in free["samples"]]
    assert all(data["stopped"][i] == ("\n" in free["samples"][i]) for i in range(4))


@needs_torch
def test_json_reports_the_seed_drawn_and_that_seed_gives_the_same_text(cli, tiny_run):
    first = json.loads(cli("generate", tiny_run, "--length", "60", "--json").stdout)
    assert isinstance(first["seed"], int)
    again = json.loads(cli("generate", tiny_run, "--length", "60", "--json", "--seed", first["seed"]).stdout)
    assert again["samples"] == first["samples"] and again["seed"] == first["seed"]
    other = json.loads(cli("generate", tiny_run, "--length", "60", "--json").stdout)
    assert other["seed"] != first["seed"]


@needs_torch
def test_unknown_symbols_name_the_way_out_and_the_echo_is_what_the_model_saw(cli, tiny_run):
    line = one_line_error(cli("generate", tiny_run, "--prime", "The kïng", "--length", "5"), 1, "'ï'")
    assert "--unknown skip" in line and "--unknown replace" in line
    skipped = cli(
        "generate", tiny_run, "--prime", "The kïng", "--length", "5", "--unknown", "skip", "--seed", "1"
    )
    assert skipped.exit_code == 0 and skipped.stdout.startswith("The kng") and "ï" not in skipped.stdout
    replaced = cli(
        "generate", tiny_run, "--prime", "kïng", "--length", "5", "--unknown", "replace", "--seed", "1"
    )
    assert replaced.stdout.startswith("k ng")
    several = cli(
        "generate", tiny_run, "--prime", "kïng", "--length", "5", "--unknown", "skip", "--num-samples", "2"
    )
    assert [line for line in several.stdout.splitlines() if not line.startswith("=====")][0].startswith("kng")
    as_json = json.loads(cli("generate", tiny_run, "--prime", "kïng", "--unknown", "skip", "--json").stdout)
    assert as_json["prime"] == "kïng" and as_json["prime_read"] == "kng"


@needs_torch
def test_a_long_generation_shows_progress_when_not_streaming(cli, tiny_run, monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0.02")
    result = cli("generate", tiny_run, "--length", "20000", "--num-samples", "8", "--seed", "1", "--json")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("generating ")]
    assert lines and all(re.match(r"generating [\d,]+/20,000 tokens \(\d+%\)", line) for line in lines)
    assert json.loads(result.stdout)["length"] == 20000  # stdout holds only the JSON
    streamed = cli("generate", tiny_run, "--length", "3000", "--seed", "1")
    assert streamed.stderr == ""  # one sample streams: the text itself shows progress


# -- evaluation and downloads -------------------------------------------------------------------


@needs_torch
def test_evaluate_shows_life_and_suggests_skip(cli, tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0.01")
    text = tmp_path / "long.txt"
    text.write_text(make_text(300_000, seed=3))
    result = cli("evaluate", tiny_run, text)
    assert result.exit_code == 0, result.output
    shown = re.escape(f"scoring {text}")
    assert re.search(rf"{shown} [\d,]+/[\d,]+ tokens \(\d+%\)", result.stderr), result.stderr
    odd = tmp_path / "odd.txt"
    odd.write_text(make_text(2000) + "ï")
    line = one_line_error(cli("evaluate", tiny_run, odd), 1, "'ï'")
    assert line.endswith("add --unknown skip to score the text without them")


class SlowServer:
    """Serves ``data`` in small pieces with pauses, on 127.0.0.1."""

    def __init__(self, data: bytes):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                for start in range(0, len(data), 16_000):
                    self.wfile.write(data[start : start + 16_000])
                    self.wfile.flush()
                    time.sleep(0.03)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/corpora"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


def test_download_shows_the_bytes_received(cli, tmp_path, monkeypatch):
    from seqpred.catalogue import CATALOGUE

    data = make_text(400_000).encode()  # several of the 64 KiB pieces the download reads
    name = "tinyshakespeare"
    entry = dataclasses.replace(CATALOGUE[name], size=len(data), sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(CATALOGUE, name, entry)
    server = SlowServer(data)
    monkeypatch.setenv("SEQPRED_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SEQPRED_CORPUS_MIRROR", server.url)
    monkeypatch.setenv(progress.INTERVAL_ENV, "0.1")
    try:
        result = cli("corpus", "download", name)
    finally:
        server.server.shutdown()
        server.server.server_close()
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "cache" / entry.filename)
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"downloading {name} ")]
    assert lines, result.stderr
    received = [int(re.match(r"downloading \S+ ([\d,]+)/", line)[1].replace(",", "")) for line in lines]
    assert f"/{len(data):,} bytes (" in lines[0] and any(0 < n < len(data) for n in received), lines


# -- set-up ---------------------------------------------------------------------------------------


def test_the_demo_installs_what_the_readme_uses_next():
    demo = (ROOT / "scripts" / "demo").read_text()
    assert '".[plot]"' in demo  # seqpred plot, the README's next command, needs matplotlib
    readme = (ROOT / "README.md").read_text()
    plots = [line for line in readme.splitlines() if line.startswith("$ seqpred plot")]
    assert plots and all("docs/" not in line for line in plots)  # never over a tracked file
