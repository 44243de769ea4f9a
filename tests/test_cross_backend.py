"""The keras and torch backends against each other and against the NumPy reference.

One set of canonical weights must give the same logits everywhere; one seed must give the same
batches and initial weights whichever backend trains; the same batches must give the same losses;
and a run trained on one backend must generate the same text on the other.
"""

from __future__ import annotations

import numpy as np
import pytest

from seqpred.backend import OptimizerSettings
from seqpred.config import PRESETS, TrainConfig
from seqpred.generate import Generator
from seqpred.reference import ReferenceModel
from seqpred.runs import load_run
from seqpred.sampling import SamplingSettings
from seqpred.testing import perturbed_weights
from seqpred.train import Trainer, build_model
from seqpred.weights import init_weights, parameter_count
from tests.backend_helpers import (
    BACKENDS,
    loaded,
    needs_keras,
    needs_torch,
    recording_models,
    reference_generate,
    stepped_logits,
    tiny_spec,
)
from tests.conftest import TINY, make_text

pytestmark = [needs_keras, needs_torch]

TOLERANCE = 1e-5


@pytest.mark.parametrize("embedding", [16, 0], ids=["embedding", "scaled-input"])
def test_logits_agree_with_the_reference_over_200_carried_steps(embedding):
    spec = tiny_spec(embedding=embedding)
    weights = perturbed_weights(spec, seed=3)
    tokens = np.random.default_rng(0).integers(0, spec.vocab_size, size=(2, 200))
    expected = stepped_logits(ReferenceModel(spec, weights), tokens)
    for backend in BACKENDS:
        got = stepped_logits(loaded(backend, spec, weights), tokens)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= TOLERANCE, backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_equals_stepping(backend):
    spec = tiny_spec(embedding=0)
    model = loaded(backend, spec, perturbed_weights(spec, seed=4))
    tokens = np.random.default_rng(1).integers(0, spec.vocab_size, size=(3, 50))
    stepped = stepped_logits(model, tokens)
    # Two passes, the second from the first's state: the state forward returns must carry on too.
    head, state = model.forward(tokens[:, :30], model.initial_state(3))
    tail, _ = model.forward(tokens[:, 30:], state)
    assert np.abs(np.concatenate([head, tail], axis=1) - stepped).max() <= TOLERANCE


@pytest.mark.parametrize("backend", BACKENDS)
def test_weight_round_trip_is_exact(backend):
    spec = tiny_spec()
    weights = perturbed_weights(spec, seed=5)
    back = loaded(backend, spec, weights).get_weights()
    assert list(back) == list(weights)
    for name, value in weights.items():
        assert back[name].dtype == np.float32
        assert np.array_equal(back[name], value), name


def test_optimizer_state_moves_between_backends():
    """Torch trains, keras carries on from torch's weights and Adam moments: both continue alike."""
    spec = tiny_spec()
    rng = np.random.default_rng(2)
    batches = [rng.integers(0, spec.vocab_size, size=(4, spec.seq_len + 1)) for _ in range(8)]
    torch_model = loaded("torch", spec, init_weights(spec, 0))
    torch_model.configure_training(OptimizerSettings(clip=1.0))
    for step, batch in enumerate(batches[:4]):
        torch_model.train_batch(batch[:, :-1], batch[:, 1:], 3e-3, step=step)
    state = torch_model.get_optimizer_state()

    keras_model = loaded("keras", spec, torch_model.get_weights())
    keras_model.configure_training(OptimizerSettings(clip=1.0))
    assert {k: v.shape for k, v in keras_model.get_optimizer_state().items()} == {
        k: v.shape for k, v in state.items()
    }
    keras_model.set_optimizer_state(state)
    for step, batch in enumerate(batches[4:], start=4):
        losses = [
            m.train_batch(batch[:, :-1], batch[:, 1:], 3e-3, step=step) for m in (torch_model, keras_model)
        ]
        assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert float(keras_model.get_optimizer_state()["step"]) == 8.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The same 100-step training run on each backend, with what the core handed each model."""
    folder = tmp_path_factory.mktemp("trained")
    corpus = folder / "corpus.txt"
    corpus.write_text(make_text(4000), encoding="utf-8")
    log: dict = {}
    results = {}
    with recording_models(log):
        for backend in BACKENDS:
            config = TrainConfig(
                corpus=str(corpus), backend=backend, hidden=32, layers=2, embedding=16, dropout=0.0,
                seq_len=20, batch_size=8, lr=2e-2, max_steps=100, epochs=1000, val_every=1000, seed=0,
            )  # fmt: skip
            results[backend] = Trainer(config, folder / backend).run()
    return {backend: (results[backend], log[backend]) for backend in BACKENDS}


def test_batches_and_initial_weights_do_not_depend_on_the_backend(trained):
    (_, keras_log), (_, torch_log) = trained["keras"], trained["torch"]
    assert len(keras_log["batches"]) == len(torch_log["batches"]) == 100
    for (ki, kt, klr), (ti, tt, tlr) in zip(keras_log["batches"], torch_log["batches"], strict=True):
        assert np.array_equal(ki, ti) and np.array_equal(kt, tt) and klr == tlr
    expected = init_weights(load_run(trained["keras"][0].run).spec, seed=0)
    for first in (keras_log["weights"][0], torch_log["weights"][0]):
        assert list(first) == list(expected)
        assert all(np.array_equal(first[name], expected[name]) for name in expected)


def test_training_losses_agree_within_one_percent(trained):
    keras_losses = np.asarray(trained["keras"][0].losses)
    torch_losses = np.asarray(trained["torch"][0].losses)
    assert len(keras_losses) == len(torch_losses) == 100
    relative = np.abs(keras_losses - torch_losses) / torch_losses
    assert relative.max() < 0.01, (
        f"largest relative difference {relative.max():.2e} at step {relative.argmax() + 1}"
    )
    assert keras_losses[-1] < keras_losses[0] - 1.0  # it learned something


def test_trained_weights_agree(trained):
    """Tighter than the losses: Keras' own Adam (epsilon added after the bias correction, an
    embedding gradient's slices squared one by one) leaves weights apart by 0.1 or more here."""
    keras_weights = load_run(trained["keras"][0].run, "latest").weights
    torch_weights = load_run(trained["torch"][0].run, "latest").weights
    for name, value in keras_weights.items():
        assert np.abs(value - torch_weights[name]).max() < 1e-3, name


@pytest.mark.parametrize(
    ("settings", "seed"),
    [(SamplingSettings(greedy=True), None), (SamplingSettings(temperature=1.0), 11)],
    ids=["greedy", "sampled"],
)
def test_generation_is_the_same_on_every_backend_and_the_reference(trained, settings, seed):
    run = load_run(trained["keras"][0].run, "latest")
    texts = {}
    for backend in BACKENDS:
        generator = Generator(run, backend)
        texts[backend] = generator.generate("the king ", 200, settings, seed=seed).samples[0]
    start = generator.start_tokens("the king ", "error")
    texts["reference"] = run.vocab.decode(
        reference_generate(run.spec, run.weights, start, 200, settings, seed)
    )
    assert len(texts["reference"]) == 200
    # Greedy text of a briefly trained model may settle into a short cycle ("the the ..."); a single
    # repeated symbol would mean it learned nothing, and the comparison would prove little.
    assert len(set(texts["reference"])) >= 3, "the model learned too little for this comparison to mean much"
    assert texts["keras"] == texts["torch"] == texts["reference"]


def _trainable_in_framework(backend: str, model) -> int:
    if backend == "keras":
        return sum(int(np.prod(w.shape)) for w in model.net.trainable_weights)
    return sum(p.numel() for p in model.net.parameters() if p.requires_grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_article_preset_has_the_tutorials_parameter_count(backend):
    spec = TrainConfig(**PRESETS["article"]).model_spec(vocab_size=43)
    model = build_model(backend, spec, "cpu", 0)
    assert parameter_count(model.get_weights()) == 1_096_543
    assert _trainable_in_framework(backend, model) == 1_096_543


@pytest.mark.parametrize(("trainer", "generator"), [("keras", "torch"), ("torch", "keras")])
def test_cli_trains_on_one_backend_and_generates_on_the_other(cli, corpus, tmp_path, trainer, generator):
    run = tmp_path / "run"
    trained = cli("train", corpus, "--backend", trainer, "--out", run, "--max-steps", "10", "--quiet", *TINY)
    assert trained.exit_code == 0, trained.output
    samples = {}
    for backend in (generator, trainer):
        result = cli("generate", run, "--backend", backend, "--length", "50", "--seed", "7")
        assert result.exit_code == 0, result.output
        assert result.stdout.endswith("\n") and len(result.stdout) == 51, repr(result.stdout)
        samples[backend] = result.stdout
    assert samples[generator] == samples[trainer]  # same seed, same logits: the same sample
