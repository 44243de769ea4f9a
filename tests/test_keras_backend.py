"""The keras backend: its plugin and pinned Keras, and what the conformance kit (run on it in
tests/test_conformance.py) leaves out."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from seqpred.backend import OptimizerSettings
from seqpred.errors import BackendError, UsageError
from seqpred.reference import ReferenceModel
from seqpred.testing import perturbed_weights
from seqpred.train import build_model
from tests.backend_helpers import loaded, needs_keras, needs_torch, stepped_logits, tiny_spec

pytestmark = needs_keras


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter, so that which modules are imported, and how, is its own."""
    command = [sys.executable, "-c", textwrap.dedent(code)]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, timeout=120)


def test_plugin_registers_keras_without_importing_a_framework():
    result = run_python("""
        import sys
        from seqpred.registry import get_registry
        backend = get_registry().get("keras")
        print(backend.name, backend.devices, backend.objectives)
        print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["keras ('cpu', 'cuda') ('sequence', 'last')", "[]"]


def test_keras_runs_on_tensorflow_whatever_keras_backend_says():
    result = run_python(
        """
        from seqpred.spec import ModelSpec
        from seqpred.train import build_model
        build_model("keras", ModelSpec(vocab_size=5, hidden=4, layers=1, embedding=2), "cpu", 0)
        import keras
        print(keras.config.backend())
        """,
        KERAS_BACKEND="numpy",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tensorflow"


@needs_torch  # keras' numpy backend would need scipy; its torch backend needs only torch
def test_keras_already_imported_on_another_backend_is_refused():
    result = run_python(
        """
        import keras
        from seqpred.errors import BackendError
        from seqpred.spec import ModelSpec
        from seqpred.train import build_model
        try:
            build_model("keras", ModelSpec(vocab_size=5, hidden=4, layers=1, embedding=2), "cpu", 0)
        except BackendError as exc:
            print(exc)
        """,
        KERAS_BACKEND="torch",
    )
    assert result.returncode == 0, result.stderr
    assert "keras is already imported in this process with the 'torch' backend" in result.stdout


def test_unknown_or_missing_devices_are_refused():
    with pytest.raises(UsageError, match="unknown device 'tpu'"):
        build_model("keras", tiny_spec(), "tpu", 0)
    from seqpred_keras.framework import tf

    if not tf.config.list_physical_devices("GPU"):
        with pytest.raises(BackendError, match="TensorFlow sees 0 GPU"):
            build_model("keras", tiny_spec(), "cuda", 0)


def test_step_follows_new_weights_and_training():
    """The token table that step() precomputes is rebuilt after set_weights and after training."""
    spec = tiny_spec()
    tokens = np.random.default_rng(0).integers(0, spec.vocab_size, size=(2, 5))
    model = loaded("keras", spec, perturbed_weights(spec, seed=1))
    stepped_logits(model, tokens)
    for change in ("set_weights", "train_batch"):
        if change == "set_weights":
            model.set_weights(perturbed_weights(spec, seed=2))
        else:
            model.configure_training(OptimizerSettings())
            model.train_batch(tokens[:, :-1], tokens[:, 1:], 0.1, step=0)
        expected = stepped_logits(ReferenceModel(spec, model.get_weights()), tokens)
        assert np.abs(stepped_logits(model, tokens) - expected).max() <= 1e-5, change


def test_train_batch_returns_the_loss_before_the_update():
    spec = tiny_spec()
    batch = np.random.default_rng(1).integers(0, spec.vocab_size, size=(4, spec.seq_len + 1))
    inputs, targets = batch[:, :-1], batch[:, 1:]
    model = loaded("keras", spec, perturbed_weights(spec))
    model.configure_training(OptimizerSettings())
    before = model.evaluate_batch(inputs, targets)
    assert model.train_batch(inputs, targets, 1e-2, step=0) == pytest.approx(before, rel=1e-6)
    assert model.evaluate_batch(inputs, targets) < before


def test_dropout_masks_are_a_function_of_seed_and_step():
    """With a zero learning rate the weights stay put, so the loss changes only with the masks."""
    spec = tiny_spec(dropout=0.5)
    batch = np.random.default_rng(2).integers(0, spec.vocab_size, size=(4, spec.seq_len + 1))
    weights = perturbed_weights(spec)
    losses = {}
    for name, seed in (("first", 0), ("again", 0), ("other seed", 1)):
        model = loaded("keras", spec, weights, seed=seed)
        model.configure_training(OptimizerSettings())
        losses[name] = [model.train_batch(batch[:, :-1], batch[:, 1:], 0.0, step=s) for s in range(3)]
    assert losses["first"] == losses["again"]
    assert len(set(losses["first"])) == 3, "the masks did not change from one step to the next"
    assert losses["other seed"][0] != losses["first"][0]


def test_each_computation_is_traced_once():
    """Fixed signatures: new batch sizes and lengths reuse the traced graphs instead of retracing."""
    spec = tiny_spec()
    model = loaded("keras", spec, perturbed_weights(spec))
    model.configure_training(OptimizerSettings())
    rng = np.random.default_rng(3)
    for step, (batch, length) in enumerate(((2, 5), (3, 9), (1, 4))):
        tokens = rng.integers(0, spec.vocab_size, size=(batch, length + 1))
        model.train_batch(tokens[:, :-1], tokens[:, 1:], 1e-3, step=step)
        model.evaluate_batch(tokens[:, :-1], tokens[:, 1:])
        _, state = model.forward(tokens, model.initial_state(batch))
        model.step(tokens[:, 0], state)
    functions = (model._train_fn, model._loss_fn, model._forward_fn, model._step_fn)
    assert [f.experimental_get_tracing_count() for f in functions] == [1, 1, 1, 1]
