"""Adam and global-norm gradient clipping, computed as PyTorch computes them.

Every backend must train alike from the same weights and batches, so this follows the order of
operations of ``torch.optim.Adam`` (no weight decay, no AMSGrad) and of
``torch.nn.utils.clip_grad_norm_`` rather than a textbook variant: the bias corrections are
folded into the step size and the denominator, and epsilon is added to sqrt(v_hat), not to
sqrt(v).

The moments are kept under the canonical weight names, which is also the layout of
:meth:`seqpred.Model.get_optimizer_state`: ``m/NAME``, ``v/NAME`` and ``step``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from seqpred import OptimizerSettings


def clip_by_global_norm(grads: Mapping[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so that their joint L2 norm is at most ``max_norm``.

    Returns the norm before clipping. The 1e-6 keeps the scale finite for zero gradients and is
    PyTorch's.
    """
    total = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values())))
    scale = min(max_norm / (total + 1e-6), 1.0)
    if scale < 1.0:
        for g in grads.values():
            g *= scale
    return total


class Adam:
    """Adam's state for a set of named tensors, updated in place by :meth:`update`."""

    def __init__(self, params: Mapping[str, np.ndarray], settings: OptimizerSettings):
        self.settings = settings
        self.step = 0  # updates done so far
        self.m = {name: np.zeros_like(p) for name, p in params.items()}  # mean of gradients
        self.v = {name: np.zeros_like(p) for name, p in params.items()}  # mean of squared gradients

    def update(self, params: dict[str, np.ndarray], grads: Mapping[str, np.ndarray], lr: float) -> None:
        """One Adam step on ``params`` (in place) with learning rate ``lr``."""
        beta1, beta2, eps = self.settings.beta1, self.settings.beta2, self.settings.epsilon
        self.step += 1
        # Early on m and v are biased towards their zero start; dividing by 1 - beta**step undoes it.
        step_size = lr / (1 - beta1**self.step)
        correction2_sqrt = math.sqrt(1 - beta2**self.step)  # a Python float keeps arrays float32
        for name, grad in grads.items():
            m, v = self.m[name], self.v[name]
            m += (1 - beta1) * (grad - m)  # torch's lerp: m = beta1 * m + (1 - beta1) * grad
            v *= beta2
            v += (1 - beta2) * grad * grad
            params[name] -= step_size * (m / (np.sqrt(v) / correction2_sqrt + eps))

    def state(self) -> dict[str, np.ndarray]:
        """Copies of the moments in the canonical layout, with ``step`` as a 0-d float64."""
        out = {"step": np.asarray(float(self.step), dtype=np.float64)}
        for name in self.m:
            out[f"m/{name}"] = self.m[name].copy()
            out[f"v/{name}"] = self.v[name].copy()
        return out

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned (or another backend's optimizer state)."""
        missing = [key for name in self.m for key in (f"m/{name}", f"v/{name}") if key not in state]
        if "step" not in state or missing:
            raise ValueError(f"optimizer state lacks {', '.join(missing or ['step'])}")
        for name in self.m:
            self.m[name] = np.array(state[f"m/{name}"], dtype=self.m[name].dtype).reshape(self.m[name].shape)
            self.v[name] = np.array(state[f"v/{name}"], dtype=self.v[name].dtype).reshape(self.v[name].shape)
        self.step = int(round(float(np.asarray(state["step"]))))
