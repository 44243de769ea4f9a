"""Entry point of the onnx backend: registers it without importing onnx or onnxruntime."""

from __future__ import annotations

from seqpred import Backend, ModelSpec, hookimpl


class OnnxBackend(Backend):
    name = "onnx"
    description = "onnxruntime on the exported ONNX graph; inference only, CPU"
    devices = ("cpu",)
    requires = ("onnx", "onnxruntime")
    install = "pip install onnx onnxruntime"
    objectives = ("sequence", "last")
    trains = False

    def create_model(self, spec: ModelSpec, *, device: str = "cpu", seed: int = 0):
        if device not in ("cpu", "auto"):
            raise ValueError(f"the onnx backend runs on the CPU only, not on {device!r}")
        from .model import OnnxModel  # imports onnxruntime

        return OnnxModel(spec)


@hookimpl
def seqpred_register_backends(register):
    register(OnnxBackend())
