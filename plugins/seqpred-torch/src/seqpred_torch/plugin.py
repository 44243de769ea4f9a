"""Entry point of the torch backend: registers it without importing torch."""

from __future__ import annotations

from seqpred import Backend, ModelSpec, hookimpl


class TorchBackend(Backend):
    name = "torch"
    description = "PyTorch nn.LSTM; CPU or CUDA"
    devices = ("cpu", "cuda")
    requires = ("torch",)
    install = "pip install torch"
    objectives = ("sequence", "last")

    def create_model(self, spec: ModelSpec, *, device: str = "cpu", seed: int = 0):
        from .model import TorchModel  # imports torch

        return TorchModel(spec, device=device, seed=seed)


@hookimpl
def seqpred_register_backends(register):
    register(TorchBackend())
