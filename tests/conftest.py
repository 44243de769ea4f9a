"""Shared fixtures: small corpora made on the fly, and a CLI runner that keeps stderr apart."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqpred.cli import app
from seqpred.registry import Registry, reset_registry

#: Backend → the framework it needs, for the backends whose framework is not installed here.
MISSING_FRAMEWORKS = {
    backend: module
    for backend, module in (("torch", "torch"), ("keras", "tensorflow"))
    if importlib.util.find_spec(module) is None
}

WORDS = (
    "the king and the queen rode out at dawn to see the sea while the old wind sang of rain "
    "and the young men laughed in the hall where fire burned bright all night long"
).split()


def make_text(n_chars: int = 6000, seed: int = 0) -> str:
    """English-looking text with a small vocabulary, short lines and punctuation."""
    rng = random.Random(seed)
    lines: list[str] = []
    size = 0
    while size < n_chars:
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 9))]
        line = " ".join(words).capitalize() + rng.choice([",", ".", ";", "!", "?"])
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines) + "\n"


def one_line_error(result, code: int, *fragments: str) -> str:
    """Assert the CLI failed with ``code`` and one ``error:`` line on stderr holding ``fragments``."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch):
    """Each test discovers plugins anew, so environment changes in one never leak into another."""
    monkeypatch.delenv("SEQPRED_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("SEQPRED_STRICT_PLUGINS", raising=False)
    reset_registry()
    yield
    reset_registry()


@pytest.fixture(autouse=True, scope="session")
def _skip_backends_whose_framework_is_missing():
    """Where torch or TensorFlow is not installed, a test (or a fixture) that asks for that backend
    skips, saying so, the moment it asks. In CI every framework is installed and this changes
    nothing; tests that run a backend in a subprocess carry ``needs_torch`` or ``needs_keras``."""
    if not MISSING_FRAMEWORKS:
        yield
        return
    get = Registry.get

    def get_installed(self, name):
        if name in MISSING_FRAMEWORKS:
            pytest.skip(f"{MISSING_FRAMEWORKS[name]} is not installed: this test needs the {name} backend")
        return get(self, name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Registry, "get", get_installed)
        yield


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


class Cli:
    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: object, input: str | bytes | None = None):
        return self.runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture
def cli() -> Cli:
    return Cli()


TINY = ("--hidden", "16", "--embedding", "8", "--seq-len", "16", "--batch-size", "8", "--val-every", "5")


@pytest.fixture
def tiny_run(cli: Cli, corpus: Path, tmp_path: Path) -> Path:
    """A run folder trained for a few steps on the torch backend."""
    out = tmp_path / "run"
    result = cli("train", corpus, "--backend", "torch", "--out", out, "--max-steps", "12", "--quiet", *TINY)
    assert result.exit_code == 0, result.output
    return out
