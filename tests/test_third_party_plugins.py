"""Third-party plugins as a user installs them: distributions on the path with entry points in the
group ``seqpred``, run through ``python -m seqpred`` in fresh processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.backend_helpers import needs_torch
from tests.conftest import TINY, make_text

TOY = '''
"""A third party's backend: the NumPy model under its own name, plus a command of its own."""
import typer

from seqpred import Backend, hookimpl


class ToyBackend(Backend):
    name = "toy"
    description = "a third party's backend"

    def create_model(self, spec, *, device="cpu", seed=0):
        from seqpred_numpy.model import NumpyModel

        return NumpyModel(spec, seed=seed)


@hookimpl
def seqpred_register_backends(register):
    register(ToyBackend())


@hookimpl
def seqpred_register_commands(app):
    @app.command("toy-info")
    def toy_info():
        """Say that the toy plugin is here."""
        typer.echo("toy plugin at your service")
'''

BROKEN = 'raise ImportError("needs libfoo, which is not installed")\n'

DUPLICATE = """
from seqpred import hookimpl
from toy_backend import ToyBackend


@hookimpl
def seqpred_register_backends(register):
    register(ToyBackend())
"""

INCOMPLETE = """
from seqpred import hookimpl


class NoFactory:
    name = "incomplete"


@hookimpl
def seqpred_register_backends(register):
    register(NoFactory())
"""

MISSPELT = """
from seqpred import hookimpl


@hookimpl
def seqpred_register_backend(register):  # the hook is seqpred_register_backends
    pass
"""


def install(site: Path, distribution: str, module: str, source: str) -> None:
    """What pip leaves behind for a distribution: the module and a dist-info with its entry point."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{distribution.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[seqpred]\n{module.split('_')[0]} = {module}\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    install(site, "toy-backend", "toy_backend", TOY)
    install(site, "broken-plugin", "broken_plugin", BROKEN)
    return site


def seqpred(site: Path, *args: object, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(site), **env}
    environment.pop("SEQPRED_LOAD_PLUGINS", None) if "SEQPRED_LOAD_PLUGINS" not in env else None
    return subprocess.run(
        [sys.executable, "-m", "seqpred", *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


def listing(site: Path, **env: str) -> dict[str, str]:
    result = seqpred(site, "backends", **env)
    assert result.returncode == 0, result.stderr
    return {line.split()[0]: line for line in result.stdout.splitlines()[1:]}


def test_a_third_party_backend_trains_and_generates(site, tmp_path):
    rows = listing(site)
    assert "toy-backend" in rows["toy"] and "1.2.3" in rows["toy"] and rows["toy"].endswith("ok")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_text())
    trained = seqpred(
        site,
        "train",
        corpus,
        "--backend",
        "toy",
        "--out",
        tmp_path / "r",
        "--max-steps",
        "3",
        "--quiet",
        *TINY,
    )
    assert trained.returncode == 0, trained.stderr
    generated = seqpred(site, "generate", tmp_path / "r", "--length", "40", "--seed", "1")
    assert generated.returncode == 0, generated.stderr
    assert len(generated.stdout) == 41


@needs_torch
@pytest.mark.slow
def test_a_broken_plugin_is_listed_as_failed_and_torch_still_works(site, tmp_path):
    rows = listing(site)
    assert "broken-plugin" in rows["broken"] and "failed: ImportError: needs libfoo" in rows["broken"]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_text())
    result = seqpred(
        site,
        "train",
        corpus,
        "--backend",
        "torch",
        "--out",
        tmp_path / "t",
        "--max-steps",
        "2",
        "--quiet",
        *TINY,
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "broken-plugin" in warnings[0]


def test_strict_mode_makes_a_broken_plugin_an_error(site):
    result = seqpred(site, "backends", SEQPRED_STRICT_PLUGINS="1")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "broken-plugin" in result.stderr
    assert "SEQPRED_STRICT_PLUGINS" in result.stderr


@needs_torch  # trains on the default backend in a subprocess
def test_load_plugins_chooses_the_distributions(site):
    only_shipped = listing(site, SEQPRED_LOAD_PLUGINS="")
    assert "disabled" in only_shipped["toy"] and "disabled" in only_shipped["broken"]
    assert only_shipped["torch"].endswith("ok")
    chosen = listing(site, SEQPRED_LOAD_PLUGINS="toy-backend")
    assert chosen["toy"].endswith("ok") and "disabled" in chosen["broken"]


def test_two_backends_claiming_one_name(site):
    install(site, "toy-clone", "toyclone_plugin", DUPLICATE)
    result = seqpred(site, "backends")
    assert result.returncode == 1
    assert (
        "toy-backend" in result.stderr
        and "toy-clone" in result.stderr
        and "SEQPRED_LOAD_PLUGINS" in result.stderr
    )
    assert listing(site, SEQPRED_LOAD_PLUGINS="toy-backend")["toy"].endswith("ok")


def test_a_backend_without_a_required_method_is_rejected(site):
    install(site, "incomplete-backend", "incomplete_plugin", INCOMPLETE)
    row = listing(site)["incomplete"]
    assert "incomplete-backend" in row and "failed" in row and "create_model" in row


def test_a_misspelt_hook_is_caught_by_pluggy(site):
    install(site, "misspelt-plugin", "misspelt_plugin", MISSPELT)
    row = listing(site)["misspelt"]
    assert "failed" in row and "seqpred_register_backend" in row


def test_a_plugin_adds_its_own_command(site):
    result = seqpred(site, "toy-info")
    assert result.returncode == 0 and result.stdout == "toy plugin at your service\n"
    assert "toy-info" in seqpred(site, "--help").stdout


def test_help_and_listing_import_no_framework_with_plugins_installed(site):
    code = (
        "import runpy, sys\n"
        "for argv in (['seqpred', '--help'], ['seqpred', 'backends']):\n"
        "    sys.argv = argv\n"
        "    try:\n        runpy.run_module('seqpred', run_name='__main__')\n"
        "    except SystemExit:\n        pass\n"
        "heavy = sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert "HEAVY []" in result.stderr, result.stderr
