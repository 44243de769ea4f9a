"""Fused generation on torch: K tokens per call, the state kept in torch from token to token.

Each token is one step of the network and one call of the core's own sampler,
:func:`seqpred.sampling.pick`, on the step's logits (on a CPU, a view of the same memory), so the
tokens are the core's by construction. The step's kernel is chosen by device and number of streams
(:data:`LSTM_KERNEL_STREAMS`): the model's own step (:meth:`TorchModel.step_tensors`: layer 0's input
projection a token table, one sigmoid for all four gates, a few large operations per layer), or
``nn.LSTM``'s fused kernel over all layers.

``bench/generate.py --torch-variants`` measures the kernels against each other, ``torch.compile``
of the step included: on a 2-core CPU the model's own step was faster than nn.LSTM's kernel at 64
streams and several times as fast for one, and the compiled step no faster than the eager one
after a compilation of seconds, so the eager step is kept (see the README).
"""

from __future__ import annotations

import numpy as np
import torch

from seqpred.sampling import SamplingSettings, pick

#: From how many streams on a step is one call of nn.LSTM's kernel, by device type (None: never).
#: On a GPU, where every operation is a kernel launch, one launch per layer should win (not measured:
#: no GPU here); on the CPU the model's own step did.
LSTM_KERNEL_STREAMS: dict[str, int | None] = {"cpu": None, "cuda": 1}


class FusedGeneration:
    """:meth:`seqpred.Model.generate_tokens` for a :class:`~seqpred_torch.model.TorchModel`."""

    def __init__(self, model):
        self.model = model

    @torch.inference_mode()
    def __call__(self, tokens, state, settings: SamplingSettings, uniforms, return_logits: bool):
        model = self.model
        uniforms = np.asarray(uniforms, dtype=np.float64)
        streams, count = uniforms.shape
        chosen = np.empty((streams, count), dtype=np.int32)
        seen = np.empty((streams, count, model.spec.vocab_size), np.float32) if return_logits else None
        hs, cs = state
        picked = np.asarray(tokens, dtype=np.int64)
        fewest = LSTM_KERNEL_STREAMS.get(model.device.type)
        if fewest is not None and streams >= fewest:
            model.net.eval()
            step = self.kernel_step
            carried = (torch.stack(list(hs)), torch.stack(list(cs))) if isinstance(hs, list) else (hs, cs)
        else:
            step = model.step_tensors
            carried = (list(hs), list(cs))
        for k in range(count):
            logits, carried = step(torch.from_numpy(picked).to(model.device), carried)
            logits = logits.cpu().numpy()
            if seen is not None:
                seen[:, k] = logits
            chosen[:, k] = picked = pick(logits, settings, uniforms[:, k])
            picked = picked.astype(np.int64)
        return chosen, carried, seen

    def kernel_step(self, rows: torch.Tensor, state):
        """One step of nn.LSTM's kernel: state (h, c), each [layers, B, H]."""
        net = self.model.net
        out, state = net.lstm(net.inputs(rows[:, None]), state)
        return net.dense(out[:, 0]), state
