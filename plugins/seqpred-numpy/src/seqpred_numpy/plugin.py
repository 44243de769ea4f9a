"""Entry point of the NumPy backend: the module that ``[project.entry-points.seqpred]`` names.

The registry imports this module on every ``seqpred`` command, including those that never build a
model, so it imports only seqpred itself. The maths is imported in :meth:`create_model`, the one
place where a backend built on a framework would import that framework.
"""

from __future__ import annotations

from seqpred import Backend, ModelSpec, hookimpl


class NumpyBackend(Backend):
    name = "numpy"
    description = "pure NumPy, hand-written backpropagation through time; CPU only"
    devices = ("cpu",)
    objectives = ("sequence", "last")

    def create_model(self, spec: ModelSpec, *, device: str = "cpu", seed: int = 0):
        if device not in ("cpu", "auto"):
            # ValueError is what the core reports as "could not build the model".
            raise ValueError(f"the numpy backend runs on the CPU only, not on {device!r}")
        from .model import NumpyModel

        return NumpyModel(spec, seed=seed)


@hookimpl
def seqpred_register_backends(register):
    register(NumpyBackend())
