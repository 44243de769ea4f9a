"""Every shipped backend against the conformance kit of :mod:`seqpred.testing`.

A third-party backend needs one such class in its own tests, with its own backend name.
"""

from importlib import metadata

import pytest

from seqpred.testing import BackendConformance


class TestNumpyBackend(BackendConformance):
    @pytest.fixture
    def backend_name(self):
        return "numpy"


class TestTorchBackend(BackendConformance):
    @pytest.fixture
    def backend_name(self):
        return "torch"

    @pytest.fixture(autouse=True)
    def one_thread(self):
        """The kit's models are tiny: one thread is faster, and far faster on a busy machine."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(threads)


class TestKerasBackend(BackendConformance):
    @pytest.fixture
    def backend_name(self):
        # Skipped, with this reason in the summary, only when the distribution is absent; installed
        # but failing to load is a failure.
        try:
            metadata.distribution("seqpred-keras")
        except metadata.PackageNotFoundError:
            pytest.skip("seqpred-keras is not installed (pip install -e plugins/seqpred-keras)")
        return "keras"
