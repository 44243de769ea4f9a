"""Every shipped backend against the conformance kit of :mod:`seqpred.testing`.

A third-party backend needs one such class in its own tests, with its own backend name.
"""

import importlib.util
from importlib import metadata

import pytest

from seqpred.testing import BackendConformance


def require(distribution: str, framework: str) -> None:
    """Skip, with the reason in the summary, where the plugin or its framework is absent; a plugin
    that is installed but fails to load is a failure."""
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{distribution} is not installed (pip install -e plugins/{distribution})")
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed, which {distribution} needs")


class TestNumpyBackend(BackendConformance):
    @pytest.fixture
    def backend_name(self):
        return "numpy"


class TestTorchBackend(BackendConformance):
    @pytest.fixture
    def backend_name(self):
        require("seqpred-torch", "torch")
        return "torch"

    @pytest.fixture(autouse=True)
    def one_thread(self, backend_name):
        """The kit's models are tiny: one thread is faster, and far faster on a busy machine."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(threads)


class TestKerasBackend(BackendConformance):
    @pytest.fixture
    def backend_name(self):
        require("seqpred-keras", "tensorflow")
        return "keras"
