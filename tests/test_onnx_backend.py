"""The onnx backend: the conformance kit's inference checks, its states, and refusing to train.

The kit skips its training checks here because the backend declares ``trains = False``; the test
at the end runs those checks in a pytest of their own and reads the reason from its summary.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seqpred.backend import OptimizerSettings
from seqpred.errors import BackendError
from seqpred.models import build_model
from seqpred.registry import get_registry
from seqpred.testing import BackendConformance, perturbed_weights
from tests.backend_helpers import needs_keras, needs_torch, tiny_spec
from tests.conftest import TINY, one_line_error

ROOT = Path(__file__).resolve().parent.parent


class TestOnnxBackend(BackendConformance):
    @pytest.fixture
    def backend_name(self):
        return "onnx"


def onnx_model(spec, weights):
    model = build_model("onnx", spec, "cpu", 0)
    model.set_weights(weights)
    return model


def test_the_backend_declares_that_it_cannot_train():
    backend = get_registry().get("onnx")
    assert backend.trains is False
    assert all(get_registry().get(name).trains for name in ("numpy", "torch"))


def test_the_kit_skips_every_training_check_with_the_reason():
    """The kit's training checks, run alone against this backend: every one skipped, with the reason."""
    training = sorted(
        n for n in dir(BackendConformance) if getattr(getattr(BackendConformance, n), "seqpred_trains", 0)
    )
    assert "test_training_lowers_the_loss" in training and "test_run_folder_round_trip" in training
    selected = [f"{__file__}::TestOnnxBackend::{name}" for name in training]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *selected, "-rs", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert "skipped" in summary and "passed" not in summary and "failed" not in summary, summary
    reasons = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert reasons and all(
        line.endswith("backend 'onnx' is inference-only (trains = False): nothing to train")
        for line in reasons
    ), reasons


def test_the_training_methods_say_it_is_inference_only():
    model = onnx_model(tiny_spec(), perturbed_weights(tiny_spec()))
    with pytest.raises(NotImplementedError, match="inference only"):
        model.configure_training(OptimizerSettings())
    with pytest.raises(NotImplementedError, match="inference only"):
        model.train_batch(np.zeros((1, 4), np.int32), np.zeros((1, 4), np.int32), 1e-3, step=0)


def test_state_converts_to_the_canonical_layout_and_back():
    spec = tiny_spec(layers=3)
    model = onnx_model(spec, perturbed_weights(spec))
    tokens = np.random.default_rng(0).integers(0, spec.vocab_size, (4, 9)).astype(np.int32)
    _, state = model.forward(tokens, model.initial_state(4))
    array = model.state_to_numpy(state)
    assert array.shape == (3, 2, 4, spec.hidden) and array.dtype == np.float32
    np.testing.assert_array_equal(array[:, 0], state[0])  # h first ...
    np.testing.assert_array_equal(array[:, 1], state[1])  # ... then c
    # Streams split and joined through the canonical layout continue exactly as the whole batch.
    joined = model.state_from_numpy(np.concatenate([array[:, :, 2:], array[:, :, :2]], axis=2))
    expected, _ = model.step(tokens[:, 0], state)
    got, _ = model.step(np.concatenate([tokens[2:, 0], tokens[:2, 0]]), joined)
    np.testing.assert_array_equal(got, np.concatenate([expected[2:], expected[:2]]))


def test_weights_going_in_and_out_are_copies():
    spec = tiny_spec()
    given = perturbed_weights(spec)
    model = onnx_model(spec, given)
    given["dense.bias"] += 1.0
    out = model.get_weights()
    out["dense.kernel"] += 1.0
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, perturbed_weights(spec)[name], err_msg=name)


@needs_torch  # the message it checks names every backend that trains
@needs_keras
def test_train_with_the_onnx_backend_is_refused_before_any_folder_is_made(cli, corpus, tmp_path):
    out = tmp_path / "run"
    result = cli("train", corpus, "--backend", "onnx", "--out", out, "--max-steps", "2", *TINY)
    line = one_line_error(result, 2, "backend 'onnx' cannot train", "keras, numpy, torch")
    assert "onnx," not in line.split("train with")[1].split(",")[0]
    assert not out.exists()


@needs_torch  # the listing it checks holds every shipped backend
@needs_keras
def test_backends_shows_which_backends_train(cli):
    table = cli("backends")
    assert table.exit_code == 0, table.output
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()}
    trains_column = rows["backend"].index("trains")
    assert rows["onnx"][trains_column] == "no"
    assert rows["numpy"][trains_column] == "yes"
    listed = {row["name"]: row for row in json.loads(cli("backends", "--json").stdout)}
    assert listed["onnx"]["trains"] is False and listed["onnx"]["distribution"] == "seqpred-onnx"
    assert listed["torch"]["trains"] is True


def test_the_threads_come_from_the_environment(cli, monkeypatch, tmp_path):
    spec = tiny_spec()
    monkeypatch.setenv("SEQPRED_ONNX_THREADS", "1")
    model = onnx_model(spec, perturbed_weights(spec))
    assert model.session().get_session_options().intra_op_num_threads == 1
    monkeypatch.setenv("SEQPRED_ONNX_THREADS", "many")
    with pytest.raises(
        BackendError, match="SEQPRED_ONNX_THREADS must be a whole number of threads, got 'many'"
    ):
        build_model("onnx", spec, "cpu", 0)


@pytest.mark.parametrize(("threads", "free", "spinning"), [("2", 2, "1"), ("2", 1, "0"), ("1", 0, "1")])
def test_threads_spin_only_where_each_has_a_free_core(monkeypatch, threads, free, spinning):
    import seqpred_onnx.model

    monkeypatch.setenv("SEQPRED_ONNX_THREADS", threads)
    monkeypatch.setattr(seqpred_onnx.model, "recent_free_cores", lambda: free)
    options = seqpred_onnx.model.session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == spinning
    assert options.intra_op_num_threads == int(threads)
