"""Helpers for the tests that compare backends: markers, tiny specs, stepping, generating with the
reference, and recording what the trainer hands a model. Used by ``test_keras_backend.py`` and
``test_cross_backend.py``.
"""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager

import numpy as np
import pytest

import seqpred.train
from seqpred.reference import ReferenceModel
from seqpred.sampling import SamplingSettings, sample
from seqpred.spec import ModelSpec
from seqpred.train import build_model
from seqpred.weights import Weights

# find_spec, not import: importing keras here would choose its backend before the plugin pins it.
needs_keras = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("keras") is None,
    reason="tensorflow and keras are not installed",
)
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")

BACKENDS = ("keras", "torch")


def tiny_spec(**overrides) -> ModelSpec:
    """A model small enough that any test trains or steps it in well under a second."""
    values = {"vocab_size": 30, "hidden": 32, "layers": 2, "embedding": 16, "dropout": 0.0, "seq_len": 20}
    return ModelSpec(**{**values, **overrides})


def loaded(backend: str, spec: ModelSpec, weights: Weights, seed: int = 0):
    """A backend's model for ``spec`` holding ``weights``."""
    model = build_model(backend, spec, "cpu", seed)
    model.set_weights(weights)
    return model


def stepped_logits(model, tokens: np.ndarray) -> np.ndarray:
    """Logits [B, T, V] from feeding ``tokens`` [B, T] one step at a time, the state carried along."""
    state = model.initial_state(tokens.shape[0])
    logits = []
    for t in range(tokens.shape[1]):
        step_logits, state = model.step(tokens[:, t], state)
        logits.append(np.asarray(step_logits, dtype=np.float64))
    return np.stack(logits, axis=1)


def reference_generate(
    spec: ModelSpec,
    weights: Weights,
    start: np.ndarray,
    length: int,
    settings: SamplingSettings,
    seed: int | None,
) -> list[int]:
    """``length`` tokens from the NumPy reference after the tokens ``start``, chosen as the core's
    generator chooses them (:func:`seqpred.sampling.sample` with a generator seeded by ``seed``).
    """
    model = ReferenceModel(spec, weights)
    rng = np.random.default_rng(seed)
    state = model.initial_state(1)
    for token in start:
        logits, state = model.step(np.asarray([token]), state)
    chosen: list[int] = []
    for _ in range(length):
        chosen.append(int(sample(logits, settings, rng)[0]))
        logits, state = model.step(np.asarray(chosen[-1:]), state)
    return chosen


@contextmanager
def recording_models(log: dict):
    """Within the block, models built by the trainer record into ``log[backend]`` what the core
    hands them: ``weights`` (each set_weights) and ``batches`` (each train_batch's inputs, targets, lr).
    """
    real_build = seqpred.train.build_model

    def build(name, spec, device, seed):
        model = real_build(name, spec, device, seed)
        record = log.setdefault(name, {"weights": [], "batches": []})
        set_weights, train_batch = model.set_weights, model.train_batch

        def recording_set_weights(weights):
            record["weights"].append({k: np.array(v) for k, v in weights.items()})
            set_weights(weights)

        def recording_train_batch(inputs, targets, lr, *, step):
            record["batches"].append((np.array(inputs), np.array(targets), lr))
            return train_batch(inputs, targets, lr, step=step)

        model.set_weights = recording_set_weights
        model.train_batch = recording_train_batch
        return model

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(seqpred.train, "build_model", build)
        yield log
