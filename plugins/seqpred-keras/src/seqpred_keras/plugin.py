"""Entry point of the keras backend: registers it without importing keras or tensorflow."""

from __future__ import annotations

from seqpred import Backend, ModelSpec, hookimpl


class KerasBackend(Backend):
    name = "keras"
    description = "Keras 3 LSTM on TensorFlow; CPU or GPU"
    devices = ("cpu", "cuda")
    requires = ("tensorflow", "keras")
    install = "pip install tensorflow keras"
    objectives = ("sequence", "last")
    data_parallel = "devices"  # tf.distribute.MirroredStrategy over this machine's devices
    precisions = ("fp32", "bf16")

    def create_model(self, spec: ModelSpec, *, device: str = "cpu", seed: int = 0, **options):
        from .model import KerasModel  # imports keras and tensorflow

        return KerasModel(spec, device=device, seed=seed, **options)


@hookimpl
def seqpred_register_backends(register):
    register(KerasBackend())
