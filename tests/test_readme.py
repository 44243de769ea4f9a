"""The README stays true to the code: its options exist, its set-up commands exist and CI runs one."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
COMMANDS = [
    "train",
    "generate",
    "evaluate",
    "plot",
    "export",
    "backends",
    "corpus list",
    "corpus download",
    "serve",
    "runs",
]


def test_every_option_the_readme_names_exists(cli):
    known = set()
    for command in COMMANDS:
        result = cli(*command.split(), "--help")
        assert result.exit_code == 0
        known |= set(re.findall(r"--[a-z][a-z-]+", result.stdout))
    known |= set(re.findall(r"--[a-z][a-z-]+", cli("--help").stdout))
    # benchmarks and torchrun have options of their own
    own = ("bench/", "torchrun ")
    spans = [span for span in re.findall(r"`([^`]*)`", README) if not any(o in span for o in own)]
    named = {option for span in spans for option in re.findall(r"(--[a-z][a-z-]+)", span)}
    commands = [line for line in README.splitlines() if line.startswith("$ seqpred ")]
    named |= {option for line in commands for option in re.findall(r" (--[a-z][a-z-]+)", line)}
    assert named, "the README names no options"
    assert named <= known, sorted(named - known)


def test_the_two_setup_commands_exist_and_ci_runs_the_test_one():
    assert "scripts/demo" in README and "scripts/test" in README
    for script in ("scripts/demo", "scripts/test", "scripts/bootstrap", ".ci/run"):
        assert os.access(ROOT / script, os.X_OK), script
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
