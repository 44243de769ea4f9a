"""The shipped NumPy backend with one defect each: what the conformance kit must catch.

Every mutant subclasses the real :class:`seqpred_numpy.model.NumpyModel` and breaks one rule of the
contract the way a backend author could; :func:`install` makes the registered ``numpy`` backend
build it. ``tests/test_kit_catches_defects.py`` runs the kit against each.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from seqpred import OptimizerSettings
from seqpred.bptt import dropout_masks, loss_and_gradients
from seqpred.optim import Adam
from seqpred_numpy.model import NumpyModel
from seqpred_numpy.plugin import NumpyBackend


class NoDropout(NumpyModel):
    """Never drops anything."""

    def dropout_masks(self, batch, steps, step):
        return None


class NotRescaled(NumpyModel):
    """Drops units but does not scale the kept ones by 1 / (1 - p)."""

    def dropout_masks(self, batch, steps, step):
        masks = super().dropout_masks(batch, steps, step)
        return None if masks is None else [None if m is None else (m > 0).astype(m.dtype) for m in masks]


class NoOutputDropout(NumpyModel):
    """Drops between the layers only, even when the spec asks for dropout after the last one."""

    def dropout_masks(self, batch, steps, step):
        masks = super().dropout_masks(batch, steps, step)
        return None if masks is None else [*masks[:-1], None]


class DropoutInEvaluation(NumpyModel):
    """Leaves dropout on in evaluate_batch."""

    def evaluate_batch(self, inputs, targets):
        masks = self.dropout_masks(inputs.shape[0], inputs.shape[1], 0)
        return loss_and_gradients(self.spec, self.trainer.weights, inputs, targets, masks)[0]


class SeedIgnored(NumpyModel):
    """Draws the masks from the step alone: every seed drops the same units."""

    def dropout_masks(self, batch, steps, step):
        return dropout_masks(self.spec, np.random.default_rng([0, step]), batch, steps, np.float32)


class ClipIgnored(NumpyModel):
    """Never clips the gradients."""

    def configure_training(self, settings: OptimizerSettings) -> None:
        super().configure_training(dataclasses.replace(settings, clip=None))


class EpsilonHardCoded(NumpyModel):
    """Adam with epsilon 1e-3 whatever the settings say."""

    def configure_training(self, settings: OptimizerSettings) -> None:
        super().configure_training(dataclasses.replace(settings, epsilon=1e-3))


class AdamWithoutBiasCorrection(Adam):
    def update(self, params, grads, lr):
        beta1, beta2, eps = self.settings.beta1, self.settings.beta2, self.settings.epsilon
        self.step += 1
        for name, grad in grads.items():
            m, v = self.m[name], self.v[name]
            m += (1 - beta1) * (grad - m)
            v *= beta2
            v += (1 - beta2) * grad * grad
            params[name] -= lr * (m / (np.sqrt(v) + eps))


class NoBiasCorrection(NumpyModel):
    """Adam without its bias corrections."""

    def configure_training(self, settings: OptimizerSettings) -> None:
        super().configure_training(settings)
        self.trainer.optimizer = AdamWithoutBiasCorrection(self.trainer.weights, settings)


#: Defect name → the mutant model.
MUTANTS: dict[str, type[NumpyModel]] = {
    "no-dropout": NoDropout,
    "dropout-not-rescaled": NotRescaled,
    "no-dropout-after-the-last-layer": NoOutputDropout,
    "dropout-in-evaluation": DropoutInEvaluation,
    "masks-ignore-the-seed": SeedIgnored,
    "clipping-ignored": ClipIgnored,
    "epsilon-hard-coded-1e-3": EpsilonHardCoded,
    "adam-without-bias-correction": NoBiasCorrection,
}


def install(monkeypatch: pytest.MonkeyPatch, defect: str | None) -> None:
    """Make the registered ``numpy`` backend build the mutant for ``defect`` (None: the real model)."""
    if defect is None:
        return
    mutant = MUTANTS[defect]

    def create_model(self, spec, *, device="cpu", seed=0):
        return mutant(spec, seed=seed)

    monkeypatch.setattr(NumpyBackend, "create_model", create_model)
