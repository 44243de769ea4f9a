"""The README's examples run as printed.

Every ``console`` block that follows a ``<!-- readme-test -->`` line is run: its ``$`` commands in
order, in bash, in one fresh folder shared by all marked blocks (with ``corpora/`` of the checkout
and ``seqpred`` on the path), and each command's output (stdout and stderr together) must be what
the README prints under it. The comparison is exact but for what changes from machine to machine:

* a line ``...`` stands for any number of lines, and ``...`` inside a line for any text;
* a number with a decimal point may differ by 1% (float arithmetic on another processor); whole
  numbers (steps, token counts) must be equal;
* durations (``0:00:21``), speeds (``8,306 tokens/s``) and dates (``2026-11-30 14:31``) are not compared.

The other blocks need what a test cannot give (the demo's 11 minutes, a running server, a GPU) and
are left unmarked.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARK = "<!-- readme-test -->"

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")
_VARYING = [
    (re.compile(r"\d+:\d\d:\d\d"), "<duration>"),
    (re.compile(r"[\d,]+(?:\.\d+)? (?:tokens|tok|characters)/s"), "<speed>"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d"), "<date>"),
]


@dataclass
class Command:
    line: str
    expected: list[str] = field(default_factory=list)


def marked_blocks(text: str) -> list[list[Command]]:
    """The commands of every marked console block, each with the output printed under it."""
    blocks: list[list[Command]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        if lines[i + 1].strip() != "```console":
            raise AssertionError(f"README line {i + 1}: {MARK} must be followed by a console block")
        commands: list[Command] = []
        for body in lines[i + 2 :]:
            if body.strip() == "```":
                break
            if body.startswith("$ "):
                commands.append(Command(body[2:]))
            elif not commands:
                raise AssertionError(f"README line {i + 3}: a marked block starts with a $ command")
            else:
                commands[-1].expected.append(body)
        blocks.append(commands)
    return blocks


def _normal(line: str) -> str:
    for pattern, placeholder in _VARYING:
        line = pattern.sub(placeholder, line)
    return line.rstrip()


def _line_pattern(expected: str) -> tuple[re.Pattern[str], list[str]]:
    """A regex for one expected line, with a group per number, and those numbers."""
    numbers: list[str] = []
    pieces: list[str] = []
    for part_index, part in enumerate(expected.split("...")):
        if part_index:
            pieces.append(".*?")
        last = 0
        for match in _NUMBER.finditer(part):
            pieces.append(re.escape(part[last : match.start()]))
            pieces.append(r"(-?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?)")
            numbers.append(match.group())
            last = match.end()
        pieces.append(re.escape(part[last:]))
    return re.compile("".join(pieces)), numbers


def _same_number(expected: str, actual: str) -> bool:
    if not any(c in expected for c in ".e"):
        return expected == actual
    a, b = float(expected.replace(",", "")), float(actual.replace(",", ""))
    return math.isclose(a, b, rel_tol=0.01, abs_tol=1e-9)


def line_matches(expected: str, actual: str) -> bool:
    pattern, numbers = _line_pattern(_normal(expected))
    match = pattern.fullmatch(_normal(actual))
    return match is not None and all(_same_number(e, a) for e, a in zip(numbers, match.groups(), strict=True))


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` lines are ``expected``, a ``...`` line standing for any lines."""
    if not expected:
        return not actual
    if expected[0].strip() == "...":
        return any(output_matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and line_matches(expected[0], actual[0]) and output_matches(expected[1:], actual[1:])


# -- the matcher itself: it must catch a wrong output ---------------------------------------------


def test_the_comparison_allows_what_varies_and_nothing_else():
    assert line_matches("loss 2.2044 nats, 94,994 tokens", "loss 2.2051 nats, 94,994 tokens")
    assert not line_matches("loss 2.2044 nats", "loss 2.3044 nats")
    assert not line_matches("94,994 tokens", "94,995 tokens")
    assert not line_matches("saved run to runs/s at step 80", "saved run to runs/t at step 80")
    assert line_matches(
        "trained 40 steps in 0:00:21 (8,306 tokens/s)", "trained 40 steps in 0:01:02 (912 tokens/s)"
    )
    assert not line_matches("trained 40 steps in 0:00:21", "trained 41 steps in 0:00:21")
    assert line_matches("events.out.tfevents...", "events.out.tfevents.1796038358.vm")
    assert output_matches(["a", "...", "z"], ["a", "b", "c", "z"]) and output_matches(["a", "..."], ["a"])
    assert not output_matches(["a", "z"], ["a", "b", "z"]) and not output_matches(["a"], ["a", "b"])


def test_the_readme_marks_the_examples_a_test_can_run():
    blocks = marked_blocks(README.read_text())
    commands = [command.line for block in blocks for command in block]
    assert len(blocks) >= 4 and any(line.startswith("seqpred train") for line in commands)
    assert any(line.startswith("seqpred generate") and "\\n" in line for line in commands)
    assert any(line.startswith("seqpred runs") for line in commands)
    for line in commands:  # examples write into runs/, never over files of the checkout
        for target in re.findall(r"(?:--out|-o|--output|--tensorboard) (\S+)", line):
            assert target.startswith("runs/"), line


# -- the examples -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_marked_readme_examples_run_as_printed(tmp_path):
    (tmp_path / "corpora").symlink_to(ROOT / "corpora")
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "XDG_CACHE_HOME": str(tmp_path / ".cache"),
        "SEQPRED_PROGRESS_INTERVAL": "3600",  # no periodic progress lines in what is compared
        "COLUMNS": "200",
    }
    for block in marked_blocks(README.read_text()):
        for command in block:
            done = subprocess.run(
                ["bash", "-c", command.line],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=900,
            )
            actual = done.stdout.splitlines()
            assert output_matches(command.expected, actual), (
                f"$ {command.line}\n--- the README prints:\n"
                + "\n".join(command.expected)
                + "\n--- it printed:\n"
                + done.stdout
            )
