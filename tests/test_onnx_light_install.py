"""A run trained with torch generates in a process where neither torch nor TensorFlow can be imported.

The process runs seqpred's CLI behind an import hook that refuses ``torch``, ``tensorflow``, ``keras``
and ``jax`` and records every attempt, as if they were not installed: the onnx backend must need
none of them, from the run folder or from the exported file, and give the text torch gives.
"""

from __future__ import annotations

import subprocess
import sys

from tests.backend_helpers import needs_torch

BLOCKED_CLI = """
import importlib.abc, sys

BLOCKED = {"torch", "tensorflow", "keras", "jax"}
attempts = []


class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Absent())
from seqpred.cli import app

code = app(sys.argv[1:], prog_name="seqpred", standalone_mode=False)
sys.stdout.flush()
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
print(f"attempted={sorted(set(attempts))} loaded={loaded}", file=sys.stderr)
sys.exit(code)
"""

ARGS = ("--length", "120", "--prime", "The ", "--seed", "4")


def without_frameworks(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_CLI, *map(str, args)], capture_output=True, text=True, timeout=120
    )


@needs_torch
def test_a_torch_run_generates_where_torch_cannot_be_imported(cli, tiny_run, tmp_path):
    expected = cli("generate", tiny_run, "--backend", "torch", *ARGS)
    assert expected.exit_code == 0, expected.output

    from_folder = without_frameworks("generate", tiny_run, "--backend", "onnx", *ARGS)
    assert from_folder.returncode == 0, from_folder.stderr
    assert from_folder.stdout == expected.stdout
    assert from_folder.stderr.strip() == "attempted=[] loaded=[]"

    model = tmp_path / "model.onnx"
    exported = without_frameworks("export", tiny_run, "--out", model)
    assert exported.returncode == 0, exported.stderr
    from_file = without_frameworks("generate", model, *ARGS)
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout == expected.stdout
    assert from_file.stderr.strip() == "attempted=[] loaded=[]"

    # The hook does refuse torch: the torch backend cannot run in that process.
    refused = without_frameworks("generate", tiny_run, "--backend", "torch", *ARGS)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: backend 'torch'"), refused.stderr
    assert refused.stderr.splitlines()[-1] == "attempted=['torch'] loaded=[]"


def test_installing_seqpred_onnx_pulls_no_framework():
    """The dependency closure of seqpred-onnx, walked through the installed distributions' metadata
    (extras left out), holds neither torch nor TensorFlow."""
    from importlib import metadata

    from packaging.requirements import Requirement

    closure, todo = set(), ["seqpred-onnx"]
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in closure:
            continue
        closure.add(key)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    assert {"seqpred", "onnx", "onnxruntime", "numpy"} <= closure
    assert not closure & {"torch", "tensorflow", "tensorflow-cpu", "keras", "jax"}, sorted(closure)
