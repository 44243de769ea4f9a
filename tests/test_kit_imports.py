"""What importing the conformance kit and the NumPy plugin costs: no framework, no test tools at run time."""

import json
import subprocess
import sys

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax")


def imported_after(code: str) -> set[str]:
    """Names of the modules that a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(output.splitlines()[-1]))


def test_seqpred_does_not_import_the_kit():
    loaded = imported_after("import seqpred, seqpred.cli, seqpred.train")
    assert "seqpred.testing" not in loaded
    assert "pytest" not in loaded


def test_the_kit_imports_no_framework():
    loaded = imported_after("import seqpred.testing")
    assert not loaded & set(FRAMEWORKS)


def test_registering_the_numpy_backend_does_not_import_its_maths():
    loaded = imported_after("from seqpred.registry import get_registry\nget_registry().get('numpy')")
    assert "seqpred_numpy.plugin" in loaded
    assert "seqpred_numpy.model" not in loaded
