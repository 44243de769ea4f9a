"""The conformance kit fails on a real backend broken in each of eight ways, and passes on it intact.

Each case runs the kit's training and dropout checks with ``pytest.main``, as a backend author's
suite runs them, on a generated test module in ``tmp_path`` whose class is the kit's, with the
registered ``numpy`` backend building one mutant of :mod:`tests.kit_mutants`. It asserts which
checks failed and that each failure says what differed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .kit_mutants import MUTANTS

#: The kit's checks of training and dropout: what these defects touch.
SELECTION = "reference_trainer or dropout"

#: Defect → {check that must fail (with its parameter where one alone must): what its message says}.
NO_DROPOUT = "no dropout: every step kept all 32 units unscaled"
DIFFERS = "differs from the reference trainer's by"
RATE_CHECK = "test_dropout_in_training_at_the_rate_asked"
EXPECTED: dict[str, dict[str, str]] = {
    "no-dropout": {
        f"{RATE_CHECK}[after-the-only-layer]": NO_DROPOUT,
        f"{RATE_CHECK}[between-layers]": NO_DROPOUT,
        f"{RATE_CHECK}[after-the-last-layer]": NO_DROPOUT,
        "test_dropout_masks_are_a_function_of_seed_and_step": "steps 5 and 9 drew the same dropout masks",
    },
    "dropout-not-rescaled": {
        f"{RATE_CHECK}[after-the-only-layer]": "kept units must be scaled by 1 / (1 - p)",
        f"{RATE_CHECK}[between-layers]": "kept units must be scaled by 1 / (1 - p)",
    },
    "no-dropout-after-the-last-layer": {
        f"{RATE_CHECK}[after-the-only-layer]": NO_DROPOUT,
        f"{RATE_CHECK}[after-the-last-layer]": NO_DROPOUT,
    },
    "dropout-in-evaluation": {"test_no_dropout_in_evaluation": "the reference without dropout"},
    "masks-ignore-the-seed": {
        "test_dropout_masks_are_a_function_of_seed_and_step": "seeds 3 and 4 drew the same dropout masks"
    },
    "clipping-ignored": {"test_training_matches_the_reference_trainer[clipped]": DIFFERS},
    "epsilon-hard-coded-1e-3": {
        "test_training_matches_the_reference_trainer[lr-1e-3]": DIFFERS,
        "test_training_matches_the_reference_trainer[adam-settings]": DIFFERS,
    },
    "adam-without-bias-correction": {
        "test_training_matches_the_reference_trainer[lr-3e-2]": DIFFERS,
        "test_resumed_training_matches_the_reference_trainer": "differs from the reference trainer's by",
    },
}

MODULE = """
import pytest

from seqpred.testing import BackendConformance
from tests.kit_mutants import install


class TestMutant(BackendConformance):
    @pytest.fixture
    def backend_name(self, monkeypatch):
        install(monkeypatch, {defect!r})
        return "numpy"
"""


class Outcomes:
    """A pytest plugin recording the outcome and failure text of every check, by name."""

    def __init__(self) -> None:
        self.failed: dict[str, str] = {}
        self.passed: set[str] = set()

    def pytest_runtest_logreport(self, report) -> None:
        name = report.nodeid.split("::")[-1]
        if report.failed:
            self.failed[name] = report.longreprtext
        elif report.when == "call" and report.passed:
            self.passed.add(name)


def run_kit(tmp_path: Path, defect: str | None) -> Outcomes:
    """The kit's training and dropout checks against the numpy backend with ``defect``."""
    # A module name of its own for each (pytest imports by name), and one that SELECTION does not match.
    number = 0 if defect is None else list(MUTANTS).index(defect) + 1
    module = tmp_path / f"test_mutant_{number}.py"
    module.write_text(MODULE.format(defect=defect), encoding="utf-8")
    outcomes = Outcomes()
    args = [str(module), "-q", "-p", "no:cacheprovider", "--import-mode=importlib", "-k", SELECTION]
    code = pytest.main(args, plugins=[outcomes])
    assert code == (1 if outcomes.failed else 0), f"pytest exited with {code}"
    return outcomes


def test_every_defect_has_a_mutant():
    assert set(EXPECTED) == set(MUTANTS)


def test_the_intact_backend_passes_the_same_checks(tmp_path):
    outcomes = run_kit(tmp_path, None)
    assert not outcomes.failed, f"the intact numpy backend failed: {sorted(outcomes.failed)}"
    checks = {name for names in EXPECTED.values() for name in names}
    assert checks <= outcomes.passed, f"not run: {sorted(checks - outcomes.passed)}"


@pytest.mark.parametrize("defect", list(EXPECTED))
def test_the_kit_fails_on_the_defect(tmp_path, defect):
    must_fail = EXPECTED[defect]
    outcomes = run_kit(tmp_path, defect)
    assert outcomes.failed, f"the kit passed a backend with the defect {defect!r}"
    missed = set(must_fail) - set(outcomes.failed)
    assert not missed, f"{defect}: these checks passed: {sorted(missed)}; failed: {sorted(outcomes.failed)}"
    for name, message in must_fail.items():
        assert message in outcomes.failed[name], (
            f"{defect}: {name} failed without saying so:\n{outcomes.failed[name]}"
        )
