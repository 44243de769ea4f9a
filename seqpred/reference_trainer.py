"""Training as every backend must do it, in NumPy: the oracle of the conformance kit.

One batch is :func:`seqpred.bptt.loss_and_gradients` (the loss before the update and its exact
gradients), then :func:`seqpred.optim.clip_by_global_norm` when the settings clip, then one
:class:`seqpred.optim.Adam` update. The kit runs it in float64 beside the backend under test, from
the same weights and batches; the NumPy backend runs it in float32 with its dropout masks.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import bptt
from .backend import OptimizerSettings
from .optim import Adam, clip_by_global_norm
from .spec import ModelSpec
from .weights import Weights, check_weights


class ReferenceTrainer:
    """Canonical weights, Adam's state and the training step, in ``dtype``."""

    def __init__(self, spec: ModelSpec, weights: Mapping[str, np.ndarray], *, dtype: type = np.float64):
        self.spec = spec
        self.dtype = dtype
        self.weights: Weights = {}
        self.set_weights(weights)
        self.optimizer: Adam | None = None
        self.clip: float | None = None
        #: The global gradient norm before clipping of every batch trained, in order.
        self.norms: list[float] = []

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Copies of ``weights`` (checked against the spec) in this trainer's dtype."""
        checked = check_weights(self.spec, weights)
        self.weights = {name: np.array(value, dtype=self.dtype) for name, value in checked.items()}

    def get_weights(self) -> Weights:
        """Copies of the weights as canonical float32 arrays."""
        return {name: value.astype(np.float32) for name, value in self.weights.items()}

    def configure(self, settings: OptimizerSettings) -> None:
        """A fresh Adam with ``settings``: Adam's moments start at zero."""
        self.optimizer = Adam(self.weights, settings)
        self.clip = settings.clip

    def _adam(self) -> Adam:
        if self.optimizer is None:
            raise RuntimeError("configure the optimizer before training or using its state")
        return self.optimizer

    def train_batch(
        self,
        inputs: np.ndarray,
        targets: np.ndarray,
        lr: float,
        *,
        masks: list | None = None,
        state: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray]:
        """One update; returns the loss before it and the canonical state after the last step.

        ``masks`` are dropout multipliers from :func:`seqpred.bptt.dropout_masks` (None: no
        dropout); ``state`` is the canonical state to start from (None: zeros).
        """
        optimizer = self._adam()
        if state is not None:
            state = np.asarray(state, dtype=self.dtype)
        loss, grads, final = bptt.loss_and_gradients(self.spec, self.weights, inputs, targets, masks, state)
        if self.clip:
            self.norms.append(clip_by_global_norm(grads, self.clip))
        else:
            self.norms.append(float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))))
        optimizer.update(self.weights, grads, lr)
        return loss, final

    def loss(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        """The batch's mean cross-entropy without dropout, changing nothing."""
        return bptt.loss(self.spec, self.weights, inputs, targets)

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return self._adam().state()

    def load_optimizer_state(self, state: Mapping[str, np.ndarray]) -> None:
        self._adam().load_state(state)
