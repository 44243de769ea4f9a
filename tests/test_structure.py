"""The shape of the package and the contract around backends: devices, missing frameworks, errors
from inside a backend, --force on a folder a crash left, options defined once, no import cycles."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from seqpred.config import OPTIONS, RESUMABLE, TrainConfig, load_toml, resolve
from seqpred.devices import check_device, parse_device
from seqpred.errors import UsageError

from .conftest import TINY, one_line_error
from .test_third_party_plugins import install, seqpred

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "seqpred"


# -- devices --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["cpu", "CUDA", "cuda:1", " auto "])
def test_the_device_vocabulary(text):
    assert parse_device(text) == text.strip().lower()


@pytest.mark.parametrize("text", ["tpu", "gpu", "cpu:0", "cuda:", "cuda:x", ""])
def test_devices_outside_the_vocabulary_are_refused(text):
    with pytest.raises(UsageError, match="use cpu, cuda, cuda:N or auto"):
        parse_device(text)


def test_a_device_the_backend_does_not_offer_is_refused_with_what_it_offers():
    with pytest.raises(UsageError, match=r"does not run on 'cuda:1'; it offers: cpu, auto"):
        check_device("numpy", ("cpu",), "cuda:1")
    assert check_device("torch", ("cpu", "cuda"), "auto") == "auto"


def test_train_refuses_an_unknown_device_before_making_a_folder(cli, corpus, tmp_path):
    out = tmp_path / "run"
    one_line_error(cli("train", corpus, "--out", out, "--device", "tpu"), 2, "unknown device 'tpu'")
    one_line_error(
        cli("train", corpus, "--out", out, "--backend", "numpy", "--device", "cuda"),
        2,
        "it offers: cpu, auto",
    )
    assert not out.exists()


# -- third-party backends: missing frameworks, errors from inside ------------------------------------

NEEDY = """
from seqpred import Backend, hookimpl


class NeedyBackend(Backend):
    name = "needy"
    requires = ("a_framework_nobody_installed",)
    install = "pip install a-framework-nobody-installed"

    def create_model(self, spec, *, device="cpu", seed=0):
        import a_framework_nobody_installed  # noqa: F401


@hookimpl
def seqpred_register_backends(register):
    register(NeedyBackend())
"""

FAULTY = """
from seqpred import Backend, hookimpl


class FaultyBackend(Backend):
    name = "faulty"

    def create_model(self, spec, *, device="cpu", seed=0):
        from seqpred_numpy.model import NumpyModel

        class Faulty(NumpyModel):
            def train_batch(self, inputs, targets, lr, *, step):
                return {}["a key that is not there"]

        return Faulty(spec, seed=seed)


@hookimpl
def seqpred_register_backends(register):
    register(FaultyBackend())


@hookimpl
def seqpred_register_commands(app):
    @app.command("divide")
    def divide():
        "Divide by zero."
        print(1 / 0)
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    install(site, "needy-backend", "needy_backend", NEEDY)
    install(site, "faulty-backend", "faulty_backend", FAULTY)
    return site


def test_a_backend_whose_framework_is_missing_is_listed_as_unusable(site, corpus, tmp_path):
    result = seqpred(site, "backends", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["needy"]["status"] == "unusable"
    assert "pip install a-framework-nobody-installed" in rows["needy"]["error"]
    assert rows["numpy"]["status"] == "ok"
    assert "a_framework_nobody_installed" not in result.stderr
    result = seqpred(site, "train", corpus, "--backend", "needy", "--out", tmp_path / "r", "--quiet", *TINY)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "needs a_framework_nobody_installed, not installed: pip install" in result.stderr


def test_an_error_inside_a_backend_is_one_line_naming_its_distribution(site, corpus, tmp_path):
    result = seqpred(site, "train", corpus, "--backend", "faulty", "--out", tmp_path / "r", "--quiet", *TINY)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: backend 'faulty' (faulty-backend) failed in train_batch: KeyError: 'a key that is not there'"
    ]
    debug = seqpred(site, "--debug", "train", corpus, "--backend", "faulty", "--out", tmp_path / "d", *TINY)
    assert "Traceback" in debug.stderr and "a key that is not there" in debug.stderr


def test_an_unexpected_exception_in_any_command_is_one_line_that_calls_it_a_bug(site):
    result = seqpred(site, "divide")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: seqpred divide: unexpected ZeroDivisionError: division by zero; "
        "this is a bug: rerun with --debug and report it"
    ]


# -- --force and a folder left by a crash ------------------------------------------------------------


def test_force_replaces_a_folder_a_crash_left_before_its_first_checkpoint(cli, corpus, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("model.json", "train.json", "vocab.json", "history.jsonl", ".lock"):
        (out / name).write_text("{}")
    (out / ".weights.safetensors.x1.tmp").write_bytes(b"partial")
    args = ("train", corpus, "--out", out, "--backend", "numpy", "--max-steps", "2", "--quiet", *TINY)
    one_line_error(cli(*args), 2, "stopped before its first checkpoint", "--force")
    result = cli(*args, "--force")
    assert result.exit_code == 0, result.output
    assert (out / "run.json").exists()


def test_force_still_refuses_a_folder_holding_other_files(cli, corpus, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "model.json").write_text("{}")
    (out / "thesis.tex").write_text("mine")
    args = ("train", corpus, "--out", out, "--backend", "numpy", "--force", *TINY)
    one_line_error(cli(*args), 2, "not empty and holds no run")
    assert (out / "thesis.tex").read_text() == "mine"


# -- each training option defined once -----------------------------------------------------------


def test_every_training_option_reaches_the_cli_the_toml_file_and_the_api(cli, tmp_path):
    help_text = cli("train", "--help").stdout
    for name, field in OPTIONS.items():
        if field.metadata["cli"]:
            flag = field.metadata["flags"][0] if field.metadata["flags"] else "--" + name.replace("_", "-")
            assert flag.split("/")[0] in help_text, flag
        assert field.metadata["help"], name
    # The TOML file takes the same names, checked by the same checks.
    config = tmp_path / "c.toml"
    config.write_text('[train]\nseq-len = 20\ntime-limit = "2m"\nstate = "carry"\n')
    values = load_toml(str(config))
    resolved = resolve({"corpus": "x"}, values)
    assert (resolved.seq_len, resolved.time_limit, resolved.state) == (20, 120.0, "carry")
    config.write_text('[train]\nlr = "x"\n')
    with pytest.raises(UsageError, match="--lr must be a number"):
        resolve({"corpus": "x"}, load_toml(str(config)))
    resumable = {"corpus", "device", "epochs", "max_steps", "time_limit", "patience", "val_every", "threads"}
    resumable |= {"sample_every"}  # what is shown, not what is trained
    resumable |= {"replicas", "precision"}  # how it is computed: the checkpoint is canonical either way
    assert resumable == RESUMABLE


def test_help_shows_every_default(cli):
    help_text = " ".join(cli("train", "--help").stdout.split())
    flags = [f for f in OPTIONS.values() if f.metadata["cli"]]
    assert help_text.count("[default: ") >= len(flags)
    assert "[default: 64; article preset: 40]" in help_text  # --batch-size
    assert "[default: 0.005; article preset: 0.001]" in help_text  # --lr


def test_the_config_record_has_one_field_per_option():
    assert [f.name for f in dataclasses.fields(TrainConfig)] == list(OPTIONS)


# -- imports --------------------------------------------------------------------------------------


def _module_imports(path: Path) -> set[str]:
    """Modules of seqpred that ``path`` imports at module level (not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0] + "." + "__init__"
    base = package.rsplit(".", 1)[0]
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = base.split(".")
            prefix = ".".join(parts[: len(parts) - node.level + 1])
            target = f"{prefix}.{node.module}" if node.module else prefix
            found.add(target)
            for alias in node.names:
                found.add(f"{target}.{alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("seqpred"):
            found.add(node.module)
    return found


def test_the_package_has_no_import_cycle():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph = {
        name: {m for m in _module_imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }
    # A package's __init__ importing its own submodules is how packages work, not a cycle.
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    visiting, done = set(), set()

    def visit(node, trail):
        if node in done:
            return
        assert node not in visiting, "import cycle: " + " -> ".join([*trail, node])
        visiting.add(node)
        for child in sorted(graph[node]):
            visit(child, [*trail, node])
        visiting.discard(node)
        done.add(node)

    for name in sorted(graph):
        visit(name, [])


def test_generation_and_evaluation_import_no_training_machinery():
    code = (
        "import sys, seqpred.generate, seqpred.evaluation, seqpred.scoring, seqpred.models\n"
        "training = ('seqpred.train', 'seqpred.run_folder', 'seqpred.schedule')\n"
        "print(sorted(m for m in training if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_contributing_notes_show_a_real_option():
    notes = (ROOT / "docs" / "contributing.md").read_text(encoding="utf-8")
    block = notes.split("```python\n", 1)[1].split("```", 1)[0]
    source = (PACKAGE / "config.py").read_text(encoding="utf-8")
    assert block.strip() and block.rstrip("\n") in source
