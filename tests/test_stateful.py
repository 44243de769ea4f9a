"""Stateful training (``--state carry``) and scoring with the state carried through a text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seqpred.batches import StripeBatches
from seqpred.reference import ReferenceModel, cross_entropy
from seqpred.runs import CARRIED_STATE_FILE, load_run, load_tensors
from seqpred.scoring import carried_loss
from seqpred.testing import perturbed_weights

from .backend_helpers import loaded, needs_keras, needs_torch, tiny_spec
from .conftest import TINY, make_text, one_line_error

BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("torch", id="torch", marks=needs_torch),
    pytest.param("keras", id="keras", marks=needs_keras),
]


# -- the stripe layout ----------------------------------------------------------------------------


def test_each_row_continues_its_own_stripe_from_batch_to_batch():
    ids = np.arange(1000, dtype=np.int32)  # a token's id is its position: windows show where they read
    batches = StripeBatches(ids, seq_len=10, batch_size=4, seed=3)
    assert batches.batches_per_epoch >= 20
    first, second = batches.batch(0), batches.batch(1)
    np.testing.assert_array_equal(second.inputs[:, 0], first.inputs[:, -1] + 1)  # continues the row
    np.testing.assert_array_equal(first.targets, first.inputs + 1)
    starts = first.inputs[:, 0]
    np.testing.assert_array_equal(np.diff(starts), [batches.stripe] * 3)  # one stripe per row
    # An epoch reads each stripe once, in order, without overlap.
    epoch = np.concatenate([batches.batch(i).inputs for i in range(batches.batches_per_epoch)], axis=1)
    np.testing.assert_array_equal(epoch, epoch[:, :1] + np.arange(epoch.shape[1]))
    assert epoch.max() < len(ids) - 1


def test_stripes_are_a_function_of_seed_and_step_and_move_between_epochs():
    ids = np.arange(5000, dtype=np.int32)
    a, b = StripeBatches(ids, 16, 8, seed=1), StripeBatches(ids, 16, 8, seed=1)
    n = a.batches_per_epoch
    for step in (0, 5, n, 3 * n + 2):
        np.testing.assert_array_equal(a.batch(step).inputs, b.batch(step).inputs)
    offsets = {int(a.batch(e * n).inputs[0, 0]) for e in range(8)}
    assert len(offsets) > 1, "every epoch read the same windows"
    assert a.position(n) == (1, 0)


# -- scoring with the state carried ---------------------------------------------------------------


def _reference_one_pass(spec, weights, ids) -> float:
    logits, _ = ReferenceModel(spec, weights).forward(ids[None, :-1])
    return cross_entropy(logits, ids[None, 1:])


def test_carried_loss_is_one_pass_from_the_first_token_to_the_last():
    spec = tiny_spec()
    weights = perturbed_weights(spec)
    ids = np.random.default_rng(0).integers(0, spec.vocab_size, 1301).astype(np.int32)
    model = loaded("numpy", spec, weights)
    expected = _reference_one_pass(spec, weights, ids)
    assert carried_loss(model, ids, chunk=97) == pytest.approx(expected, rel=1e-6)
    # Stripes side by side: each stripe is one pass of its own.
    length = 1300 // 4
    per_stripe = [
        _reference_one_pass(spec, weights, ids[s * length : (s + 1) * length + 1]) for s in range(4)
    ]
    assert carried_loss(model, ids, stripes=4) == pytest.approx(np.mean(per_stripe), rel=1e-6)


def test_evaluate_reports_the_carried_figure(cli, tiny_run: Path, corpus: Path):
    scores = json.loads(cli("evaluate", tiny_run, corpus, "--json").stdout)
    run = load_run(tiny_run)
    ids = run.vocab.encode(corpus.read_text(encoding="utf-8"))
    assert scores["carried_loss"] == pytest.approx(_reference_one_pass(run.spec, run.weights, ids), rel=1e-5)
    assert scores["carried_bits_per_token"] == pytest.approx(scores["carried_loss"] / np.log(2))
    text = cli("evaluate", tiny_run, corpus).stdout
    assert "state carried through the text: loss" in text


def test_validation_reports_both_figures(cli, corpus: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = cli("train", corpus, "--backend", "numpy", "--out", out, "--max-steps", "5", *TINY)
    assert result.exit_code == 0, result.output
    assert "state carried through the text" in result.stdout
    records = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    validation = [r for r in records if r["event"] == "validation"][-1]
    assert validation["carried_loss"] > 0 and validation["loss"] > 0


# -- training with the state carried --------------------------------------------------------------

CARRY = (*TINY, "--state", "carry", "--dropout", "0.2")


def _train(cli, corpus, out, *extra):
    result = cli("train", corpus, "--out", out, "--quiet", *CARRY, *extra)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.slow
def test_stateful_training_resumes_exactly(cli, corpus: Path, tmp_path: Path, backend):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    # A constant rate: the second half is a resume to a longer --max-steps, which stretches a cosine.
    _train(cli, corpus, whole, "--backend", backend, "--max-steps", "14", "--schedule", "constant")
    _train(cli, corpus, parts, "--backend", backend, "--max-steps", "7", "--schedule", "constant")
    saved = load_tensors(parts / CARRIED_STATE_FILE)["state"]
    assert saved.shape == (2, 2, 8, 16) and np.abs(saved).max() > 0, "the carried state was not saved"
    result = cli("train", "--resume", parts, "--max-steps", "14", "--quiet")
    assert result.exit_code == 0, result.output
    a, b = load_run(whole, "latest"), load_run(parts, "latest")
    for name in a.weights:
        np.testing.assert_allclose(b.weights[name], a.weights[name], rtol=0, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(
        load_tensors(parts / CARRIED_STATE_FILE)["state"],
        load_tensors(whole / CARRIED_STATE_FILE)["state"],
        atol=1e-6,
    )


def _losses(run: Path) -> np.ndarray:
    records = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    return np.array([r["loss"] for r in records if r["event"] == "train"])


@pytest.mark.slow
def test_stateful_training_gives_the_same_losses_on_every_backend(cli, tmp_path: Path):
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_text(30000), encoding="utf-8")
    curves = {}
    for backend in ("numpy", "torch", "keras"):
        out = tmp_path / backend
        result = cli(
            "train", corpus, "--backend", backend, "--out", out, "--quiet", *TINY,
            "--state", "carry", "--dropout", "0", "--max-steps", "100", "--val-every", "100",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        curves[backend] = _losses(out)
    assert len(curves["numpy"]) == 100
    for backend in ("torch", "keras"):
        np.testing.assert_allclose(curves[backend], curves["numpy"], rtol=1e-2, err_msg=backend)


def test_the_carried_state_changes_training(cli, corpus: Path, tmp_path: Path):
    """Carrying the state is not resetting it: the second batch's loss differs between the modes."""
    carry, reset = tmp_path / "carry", tmp_path / "reset"
    _train(cli, corpus, carry, "--backend", "numpy", "--max-steps", "3")
    result = cli("train", corpus, "--out", reset, "--quiet", *TINY, "--dropout", "0.2", "--backend", "numpy",
                 "--max-steps", "3")  # fmt: skip
    assert result.exit_code == 0
    assert not np.allclose(_losses(carry)[1:], _losses(reset)[1:])


def test_carry_needs_the_sequence_objective(cli, corpus: Path, tmp_path: Path):
    result = cli("train", corpus, "--out", tmp_path / "r", "--state", "carry", "--objective", "last")
    one_line_error(result, 2, "--state carry needs --objective sequence")
    result = cli("train", corpus, "--out", tmp_path / "r", "--state", "sideways")
    one_line_error(result, 2, "--state must be one of reset, carry")
