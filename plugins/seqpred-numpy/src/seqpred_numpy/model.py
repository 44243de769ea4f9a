"""The :class:`seqpred.Model` contract in NumPy.

The weights are kept as a dictionary in the canonical layout itself, so there is no mapping to
write: :meth:`get_weights` and :meth:`set_weights` are copies. Inference is delegated to
:class:`seqpred.reference.ReferenceModel` and training to :mod:`.bptt` and :mod:`.adam`.
Everything runs in float32, as the other backends do.
"""

from __future__ import annotations

import numpy as np

from seqpred import Model, ModelSpec, OptimizerSettings
from seqpred.reference import ReferenceModel, State
from seqpred.weights import DTYPE, Weights, check_weights, init_weights

from . import bptt
from .adam import Adam, clip_by_global_norm


class NumpyModel(Model):
    def __init__(self, spec: ModelSpec, *, seed: int = 0):
        self.spec = spec
        self.seed = seed
        self.weights: Weights = init_weights(spec, seed)  # the core replaces them with set_weights
        self.optimizer: Adam | None = None
        self.clip: float | None = None
        self._inference: ReferenceModel | None = None  # built from the weights on first use

    # -- weights -------------------------------------------------------------------------------
    def get_weights(self) -> Weights:
        return {name: value.copy() for name, value in self.weights.items()}

    def set_weights(self, weights: Weights) -> None:
        # check_weights may return the caller's own arrays; copy so that training never mutates them.
        self.weights = {name: value.copy() for name, value in check_weights(self.spec, weights).items()}
        self._inference = None

    # -- training ------------------------------------------------------------------------------
    def configure_training(self, settings: OptimizerSettings) -> None:
        self.optimizer = Adam(self.weights, settings)
        self.clip = settings.clip

    def _optimizer(self) -> Adam:
        if self.optimizer is None:
            raise RuntimeError("call configure_training before training or using the optimizer state")
        return self.optimizer

    def train_batch(self, inputs: np.ndarray, targets: np.ndarray, lr: float) -> float:
        return self._train(inputs, targets, lr, None)[0]

    def train_batch_carried(self, inputs, targets, lr, state):
        return self._train(inputs, targets, lr, np.asarray(state, dtype=DTYPE))

    def _train(self, inputs, targets, lr, state) -> tuple[float, np.ndarray]:
        optimizer = self._optimizer()
        # The masks depend on (seed, step) only, so a run resumed at step s draws the same masks.
        rng = np.random.default_rng([self.seed, optimizer.step])
        masks = bptt.dropout_masks(self.spec, rng, inputs.shape[0], inputs.shape[1], DTYPE)
        loss, grads, final = bptt.loss_and_gradients(self.spec, self.weights, inputs, targets, masks, state)
        if self.clip:
            clip_by_global_norm(grads, self.clip)
        optimizer.update(self.weights, grads, lr)
        self._inference = None
        return loss, final

    def evaluate_batch(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        return bptt.loss(self.spec, self.weights, inputs, targets)

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        return self._optimizer().state()

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self._optimizer().load_state(state)

    # -- state, canonical layout ----------------------------------------------------------------
    def state_to_numpy(self, state: State) -> np.ndarray:
        return np.asarray([[h, c] for h, c in state], dtype=DTYPE)

    def state_from_numpy(self, array: np.ndarray) -> State:
        array = np.asarray(array, dtype=DTYPE)
        return [(layer[0].copy(), layer[1].copy()) for layer in array]

    # -- inference -----------------------------------------------------------------------------
    def _reference(self) -> ReferenceModel:
        if self._inference is None:
            self._inference = ReferenceModel(self.spec, self.weights, dtype=DTYPE)
        return self._inference

    def initial_state(self, batch: int) -> State:
        return self._reference().initial_state(batch)

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        return self._reference().step(tokens, state)

    def forward(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        return self._reference().forward(tokens, state)
