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
    data_parallel = "processes"  # torch.distributed: torchrun, or torch's elastic launcher
    precisions = ("fp32", "bf16")

    def create_model(self, spec: ModelSpec, *, device: str = "cpu", seed: int = 0, **options):
        from .model import TorchModel  # imports torch

        return TorchModel(spec, device=device, seed=seed, **options)

    def join(self, replicas):
        from .distributed import join

        return join(replicas)

    def launch(self, count, worker, args):
        from .distributed import launch

        launch(count, worker, args)


@hookimpl
def seqpred_register_backends(register):
    register(TorchBackend())
