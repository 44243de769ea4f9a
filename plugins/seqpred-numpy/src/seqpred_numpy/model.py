"""The :class:`seqpred.Model` contract in NumPy, over the core's reference maths.

Training is :class:`seqpred.reference_trainer.ReferenceTrainer` run in float32: backpropagation
through time (:mod:`seqpred.bptt`), clipping and Adam (:mod:`seqpred.optim`), the weights kept as
a dictionary in the canonical layout itself, so there is no mapping to write. Inference is
:class:`seqpred.reference.ReferenceModel` run in float32. What this backend adds is its dropout
masks, drawn from (seed, step).
"""

from __future__ import annotations

import numpy as np

from seqpred import Model, ModelSpec, OptimizerSettings
from seqpred.bptt import dropout_masks
from seqpred.reference import ReferenceModel, State
from seqpred.reference_trainer import ReferenceTrainer
from seqpred.weights import DTYPE, Weights, init_weights


class NumpyModel(Model):
    def __init__(self, spec: ModelSpec, *, seed: int = 0):
        self.spec = spec
        self.seed = seed
        # The core replaces the initial weights with set_weights.
        self.trainer = ReferenceTrainer(spec, init_weights(spec, seed), dtype=DTYPE)
        self._inference: ReferenceModel | None = None  # built from the weights on first use

    # -- weights -------------------------------------------------------------------------------
    def get_weights(self) -> Weights:
        return self.trainer.get_weights()

    def set_weights(self, weights: Weights) -> None:
        self.trainer.set_weights(weights)  # copies: training never mutates the caller's arrays
        self._inference = None

    # -- training ------------------------------------------------------------------------------
    def configure_training(self, settings: OptimizerSettings) -> None:
        self.trainer.configure(settings)

    def dropout_masks(self, batch: int, steps: int, step: int) -> list | None:
        """The masks of the batch at ``step``: from (seed, step) only, so a resumed run draws the same."""
        rng = np.random.default_rng([self.seed, step])
        return dropout_masks(self.spec, rng, batch, steps, DTYPE)

    def train_batch(self, inputs: np.ndarray, targets: np.ndarray, lr: float, *, step: int) -> float:
        return self._train(inputs, targets, lr, step, None)[0]

    def train_batch_carried(self, inputs, targets, lr, state, *, step):
        return self._train(inputs, targets, lr, step, np.asarray(state, dtype=DTYPE))

    def _train(self, inputs, targets, lr, step, state) -> tuple[float, np.ndarray]:
        masks = self.dropout_masks(inputs.shape[0], inputs.shape[1], step)
        self._inference = None
        return self.trainer.train_batch(inputs, targets, lr, masks=masks, state=state)

    def evaluate_batch(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        return self.trainer.loss(inputs, targets)

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        return self.trainer.optimizer_state()

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self.trainer.load_optimizer_state(state)

    # -- state, canonical layout ----------------------------------------------------------------
    def state_to_numpy(self, state: State) -> np.ndarray:
        return np.asarray([[h, c] for h, c in state], dtype=DTYPE)

    def state_from_numpy(self, array: np.ndarray) -> State:
        array = np.asarray(array, dtype=DTYPE)
        return [(layer[0].copy(), layer[1].copy()) for layer in array]

    # -- inference -----------------------------------------------------------------------------
    def _reference(self) -> ReferenceModel:
        if self._inference is None:
            self._inference = ReferenceModel(self.spec, self.trainer.weights, dtype=DTYPE)
        return self._inference

    def initial_state(self, batch: int) -> State:
        return self._reference().initial_state(batch)

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        return self._reference().step(tokens, state)

    def forward(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        return self._reference().forward(tokens, state)
