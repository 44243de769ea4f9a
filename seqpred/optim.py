"""Adam and gradient clipping as every backend must compute them, and the canonical optimizer state.

The maths follows ``torch.optim.Adam`` (no weight decay, no AMSGrad) and
``torch.nn.utils.clip_grad_norm_`` rather than a textbook variant: the bias corrections are folded
into the step size and the denominator, and epsilon is added to sqrt(v_hat), not to sqrt(v)::

    m = m + (1 - beta1) (g - m)          v = beta2 v + (1 - beta2) g²
    p = p - lr / (1 - beta1^t) · m / (sqrt(v) / sqrt(1 - beta2^t) + epsilon)

:class:`Adam` is the reference the conformance kit trains beside a backend, and the optimizer of
the NumPy backend. A backend on a framework applies the same update with its own tensors (the
torch backend uses ``torch.optim.Adam``, the keras one a few lines of TensorFlow) but exchanges its
state in one layout, packed by :func:`pack_optimizer_state` and checked by
:func:`unpack_optimizer_state`: ``m/NAME`` and ``v/NAME`` for every canonical weight, float32 in
the weight's shape, and ``step``, the number of updates done, a 0-d float64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .backend import OptimizerSettings
from .errors import RunError

#: The 0-d entry of the optimizer state counting the updates done.
STEP_KEY = "step"


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


def optimizer_state_keys(names: list[str] | tuple[str, ...]) -> set[str]:
    """Every key of the optimizer state for canonical weights ``names``."""
    return {STEP_KEY} | {f"{slot}/{name}" for name in names for slot in ("m", "v")}


def pack_optimizer_state(
    step: int, m: Mapping[str, np.ndarray], v: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The canonical optimizer state: copies of the moments as float32, ``step`` as a 0-d float64."""
    state = {STEP_KEY: np.asarray(float(step), dtype=np.float64)}
    for slot, moments in (("m", m), ("v", v)):
        for name, value in moments.items():
            state[f"{slot}/{name}"] = np.array(value, dtype=np.float32, order="C")
    return state


def unpack_optimizer_state(
    state: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]
) -> tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Check an optimizer state against the weights' ``shapes``; return (step, m, v) as float32 copies.

    Raises :class:`~seqpred.errors.RunError` naming every missing, unknown or misshapen entry,
    so that a bad ``optimizer.safetensors`` is reported in one line whichever backend loads it.
    """
    expected = optimizer_state_keys(tuple(shapes))
    problems = []
    missing = sorted(expected - set(state))
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    unknown = sorted(set(state) - expected)
    if unknown:
        problems.append(f"unknown {', '.join(unknown)}")
    for key in sorted(expected & set(state)):
        want = () if key == STEP_KEY else shapes[key.split("/", 1)[1]]
        got = np.shape(state[key])
        if got != want:
            problems.append(f"{key} has shape {list(got)}, expected {list(want)}")
        elif not np.all(np.isfinite(np.asarray(state[key], dtype=np.float64))):
            problems.append(f"{key} holds NaN or infinite values")
    if not problems:
        step = float(np.asarray(state[STEP_KEY]))
        if step < 0 or step != round(step):
            problems.append(f"step must be a whole number of updates, got {step}")
    if problems:
        raise RunError(f"optimizer state: {'; '.join(problems)}")
    m = {name: np.array(state[f"m/{name}"], dtype=np.float32) for name in shapes}
    v = {name: np.array(state[f"v/{name}"], dtype=np.float32) for name in shapes}
    return int(round(float(np.asarray(state[STEP_KEY])))), m, v


class Adam:
    """Adam's moments for a set of named tensors, updated in place by :meth:`update`.

    The moments take the dtype of the tensors given, so that the same code runs the float32
    NumPy backend and the float64 reference of the conformance kit.
    """

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
        """Copies of the moments in the canonical layout."""
        return pack_optimizer_state(self.step, self.m, self.v)

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned (or another backend's optimizer state)."""
        shapes = {name: value.shape for name, value in self.m.items()}
        self.step, m, v = unpack_optimizer_state(state, shapes)
        for name in shapes:
            self.m[name] = m[name].astype(self.m[name].dtype)
            self.v[name] = v[name].astype(self.v[name].dtype)
