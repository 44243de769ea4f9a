"""Adam in the form every seqpred backend applies, on TensorFlow variables.

The update is Kingma and Ba's Algorithm 1, which ``torch.optim.Adam`` implements::

    m = m + (1 - beta1) (g - m)          v = beta2 v + (1 - beta2) g²
    p = p - lr / (1 - beta1^t) · m / (sqrt(v) / sqrt(1 - beta2^t) + epsilon)

``keras.optimizers.Adam`` differs in two ways that make the same settings train differently:
it adds epsilon after folding ``sqrt(1 - beta2^t)`` into the step size (the paper's "epsilon hat",
in effect an epsilon ``1 / sqrt(1 - beta2^t)`` times larger: about 30 times at the first step), and
given an embedding's gradient as slices, one per token occurrence, it squares each slice before
adding them up, so the second moment of a token seen twice in a batch comes out too small.
On a tiny model (hidden 32, learning rate 2e-3 or 2e-2) its losses drift from torch's by 1 % to
9 % within 100 steps, this class's by under 1e-5. Owning the moments, kept in the canonical
layout, also lets them move between backends as they are: :mod:`seqpred.optim` packs and checks
that state, as it does for every backend.
"""

from __future__ import annotations

import numpy as np

from seqpred import OptimizerSettings
from seqpred.optim import pack_optimizer_state, unpack_optimizer_state

from .framework import tf


class Adam:
    """Moments and step counter for the canonical ``variables``; :meth:`apply` runs in a ``tf.function``."""

    def __init__(self, variables: dict, settings: OptimizerSettings):
        self.variables = variables
        self.settings = settings
        self.m = {name: tf.Variable(tf.zeros(var.shape), trainable=False) for name, var in variables.items()}
        self.v = {name: tf.Variable(tf.zeros(var.shape), trainable=False) for name, var in variables.items()}
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)

    def apply(self, gradients: dict, lr) -> None:
        """One update with ``gradients`` (canonical name → dense tensor: slices summed) and rate ``lr``."""
        s = self.settings
        if s.clip:
            norm = tf.linalg.global_norm(list(gradients.values()))
            # torch's clip_grad_norm_: scale by clip / (norm + 1e-6) when that is below 1.
            scale = tf.minimum(1.0, s.clip / (norm + 1e-6))
            gradients = {name: g * scale for name, g in gradients.items()}
        self.step.assign_add(1)
        t = tf.cast(self.step, tf.float64)
        step_size = tf.cast(tf.cast(lr, tf.float64) / (1.0 - s.beta1**t), tf.float32)
        bias_correction2_sqrt = tf.cast(tf.sqrt(1.0 - s.beta2**t), tf.float32)
        for name, var in self.variables.items():
            g, m, v = gradients[name], self.m[name], self.v[name]
            m.assign_add((1.0 - s.beta1) * (g - m))
            v.assign(s.beta2 * v + (1.0 - s.beta2) * tf.square(g))
            var.assign_sub(step_size * m / (tf.sqrt(v) / bias_correction2_sqrt + s.epsilon))

    def get_state(self) -> dict[str, np.ndarray]:
        """The canonical optimizer state: ``m/NAME``, ``v/NAME`` and ``step``."""
        m = {name: value.numpy() for name, value in self.m.items()}
        v = {name: value.numpy() for name, value in self.v.items()}
        return pack_optimizer_state(int(self.step.numpy()), m, v)

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Load a canonical optimizer state, checked first: nothing changes when it is refused."""
        shapes = {name: tuple(var.shape) for name, var in self.variables.items()}
        step, m, v = unpack_optimizer_state(state, shapes)
        self.step.assign(step)
        for name in shapes:
            self.m[name].assign(m[name])
            self.v[name].assign(v[name])
