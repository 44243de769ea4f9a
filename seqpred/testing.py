"""A conformance kit for backend authors: the tests every seqpred backend must pass.

Subclass :class:`BackendConformance` in your own test suite and provide one fixture::

    import pytest

    from seqpred.testing import BackendConformance


    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def backend_name(self):
            return "mine"

Every test method of the kit then runs against your backend, each reported on its own, so a
failure names the part of the contract that is broken. The models are tiny (hidden 16) and the
whole kit takes seconds on a CPU.

Fixture contract
----------------
``backend_name`` (required, any scope)
    The name under which the plugin registers its backend (``Backend.name``), as a string. The
    plugin must be installed, so that its entry point in the group ``seqpred`` is visible:
    ``pip install -e .`` in the plugin's folder. The fixture may call ``pytest.skip`` to skip the
    whole kit, for instance when an optional framework is missing.
``device`` (optional, default ``"cpu"``)
    The device passed to ``Backend.create_model``. Override it to run the kit on an accelerator.

Tests for an objective the backend does not list in ``Backend.objectives`` are skipped, with the
reason given, and so are the tests that train (marked :func:`trains`) for an inference-only backend
(``Backend.trains = False``). The kit compares logits with :class:`seqpred.reference.ReferenceModel`
to within :attr:`BackendConformance.logit_tolerance`.

This module is imported only by tests: importing :mod:`seqpred` does not import it. It imports
pytest and NumPy and no deep-learning framework.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .backend import BACKEND_ATTRIBUTES, MODEL_METHODS, Backend, Model, OptimizerSettings, missing_methods
from .config import resolve
from .data import TrainBatches, split_validation
from .reference import ReferenceModel, cross_entropy
from .registry import get_registry
from .runs import OPTIMIZER_FILE, load_run, load_tensors
from .spec import OBJECTIVES, ModelSpec
from .train import Trainer, build_model, evaluate
from .vocab import build_char_vocab_and_ids
from .weights import Weights, canonical_shapes, init_weights

#: A tiny, very repetitive corpus: any working model learns it within a few dozen steps.
CORPUS = "the cat sat on the mat. the dog sat on the log.\n" * 20

VOCAB, IDS = build_char_vocab_and_ids(CORPUS)

BOTH_INPUTS = pytest.mark.parametrize("embedding", [8, 0], ids=["embedding", "scaled-input"])
BOTH_OBJECTIVES = pytest.mark.parametrize("objective", OBJECTIVES)


def perturbed_weights(spec: ModelSpec, seed: int = 1) -> Weights:
    """Seeded canonical weights with noise on every tensor.

    The initial biases are zero but for the forget gate; noise on every tensor makes a wrong gate
    order, a dropped bias or a transposed kernel change the logits.
    """
    rng = np.random.default_rng(seed)
    weights = init_weights(spec, seed)
    return {name: (w + rng.normal(0.0, 0.1, w.shape)).astype(np.float32) for name, w in weights.items()}


def trains(test):
    """Marks a kit test that trains: skipped, with the reason, for an inference-only backend."""
    test.seqpred_trains = True
    return test


def assert_float(value: object, what: str) -> None:
    assert isinstance(value, float), f"{what} must return a Python float, got {type(value).__name__}"
    assert np.isfinite(value), f"{what} returned {value}"


class BackendConformance:
    """The model contract of :mod:`seqpred.backend`, checked against the NumPy reference.

    Subclass it as ``Test<Something>`` and provide the ``backend_name`` fixture (see the module
    documentation for the fixture contract).
    """

    #: Largest absolute difference allowed between a backend's logits and the reference's.
    logit_tolerance: float = 1e-5

    # -- fixtures and helpers ------------------------------------------------------------------
    @pytest.fixture
    def device(self) -> str:
        return "cpu"

    @pytest.fixture
    def backend(self, backend_name: str) -> Backend:
        return get_registry().get(backend_name)

    @pytest.fixture(autouse=True)
    def _skip_training_if_inference_only(self, request, backend_name: str) -> None:
        trains = getattr(request.function, "seqpred_trains", False)
        if trains and not getattr(get_registry().get(backend_name), "trains", True):
            pytest.skip(f"backend {backend_name!r} is inference-only (trains = False): nothing to train")

    @staticmethod
    def spec(**changes) -> ModelSpec:
        """A tiny spec over the kit's corpus; ``changes`` override its fields."""
        fields = {
            "hidden": 16,
            "layers": 2,
            "embedding": 8,
            "dropout": 0.0,
            "objective": "sequence",
            "seq_len": 12,
        }
        return ModelSpec(vocab_size=len(VOCAB), **{**fields, **changes})

    @staticmethod
    def require_objective(backend: Backend, objective: str) -> None:
        if objective not in backend.objectives:
            pytest.skip(f"backend {backend.name!r} does not declare the {objective!r} objective")

    @staticmethod
    def make_model(
        backend_name: str,
        spec: ModelSpec,
        device: str,
        *,
        seed: int = 0,
        weights: Weights | None = None,
        settings: OptimizerSettings | None = None,
    ) -> Model:
        """A model holding ``weights`` (seeded ones by default), ready to train when ``settings``."""
        model = build_model(backend_name, spec, device, seed)
        model.set_weights(weights if weights is not None else init_weights(spec, seed))
        if settings is not None:
            model.configure_training(settings)
        return model

    @staticmethod
    def batches(spec: ModelSpec, batch_size: int = 4, seed: int = 0) -> TrainBatches:
        return TrainBatches(IDS, spec.seq_len, batch_size, spec.objective, seed)

    @staticmethod
    def train(model: Model, batches: TrainBatches, first: int, count: int, lr: float = 1e-2) -> list[float]:
        """Train ``count`` steps on the batches of global steps ``first``...; return the losses."""
        losses = []
        for step in range(first, first + count):
            batch = batches.batch(step)
            losses.append(model.train_batch(batch.inputs, batch.targets, lr))
        return losses

    # -- the contract's shape --------------------------------------------------------------------
    def test_backend_is_registered(self, backend: Backend, backend_name: str):
        assert missing_methods(backend, BACKEND_ATTRIBUTES) == []
        assert backend.name == backend_name
        assert backend.objectives, "a backend must support at least one objective"
        assert set(backend.objectives) <= set(OBJECTIVES), f"unknown objective in {backend.objectives}"
        assert backend.devices, "a backend must list at least one device"

    def test_model_has_every_contract_method(self, backend_name: str, device: str):
        model = build_model(backend_name, self.spec(), device, 0)
        assert missing_methods(model, MODEL_METHODS) == []
        assert model.spec == self.spec()

    def test_step_output_shapes_and_dtypes(self, backend_name: str, device: str):
        spec = self.spec()
        model = self.make_model(backend_name, spec, device)
        state = model.initial_state(3)
        for tokens in ([0, 1, 2], [3, 4, 5]):  # a second step takes back the state it returned
            logits, state = model.step(np.asarray(tokens, dtype=np.int32), state)
            assert isinstance(logits, np.ndarray)
            assert logits.shape == (3, spec.vocab_size)
            assert np.issubdtype(logits.dtype, np.floating)
            assert np.all(np.isfinite(logits))

    def test_forward_output_shapes_and_dtypes(self, backend_name: str, device: str):
        spec = self.spec()
        model = self.make_model(backend_name, spec, device)
        tokens = np.random.default_rng(0).integers(0, spec.vocab_size, (2, 7)).astype(np.int32)
        logits, state = model.forward(tokens, model.initial_state(2))
        assert isinstance(logits, np.ndarray)
        assert logits.shape == (2, 7, spec.vocab_size)
        assert np.issubdtype(logits.dtype, np.floating)
        assert np.all(np.isfinite(logits))
        more, _ = model.step(tokens[:, 0], state)
        assert more.shape == (2, spec.vocab_size)

    @BOTH_OBJECTIVES
    def test_evaluate_batch_returns_a_float(
        self, backend: Backend, backend_name: str, device: str, objective
    ):
        self.require_objective(backend, objective)
        spec = self.spec(objective=objective)
        batch = self.batches(spec).batch(0)
        model = self.make_model(backend_name, spec, device)
        before = {name: value.copy() for name, value in model.get_weights().items()}
        assert_float(model.evaluate_batch(batch.inputs, batch.targets), "evaluate_batch")
        after = model.get_weights()
        assert all(np.array_equal(before[n], after[n]) for n in before), "evaluate_batch changed the weights"

    @trains
    @BOTH_OBJECTIVES
    def test_train_batch_returns_a_float(self, backend: Backend, backend_name: str, device: str, objective):
        self.require_objective(backend, objective)
        spec = self.spec(objective=objective, dropout=0.2)
        batch = self.batches(spec).batch(0)
        model = self.make_model(backend_name, spec, device, settings=OptimizerSettings(clip=1.0))
        before = {name: value.copy() for name, value in model.get_weights().items()}
        assert_float(model.train_batch(batch.inputs, batch.targets, 1e-2), "train_batch")
        after = model.get_weights()
        assert all(not np.array_equal(before[n], after[n]) for n in before), "some weights did not train"

    # -- weights ---------------------------------------------------------------------------------
    @BOTH_INPUTS
    def test_canonical_weights_round_trip_exactly(self, backend_name: str, device: str, embedding):
        spec = self.spec(embedding=embedding)
        weights = perturbed_weights(spec)
        model = self.make_model(backend_name, spec, device, weights=weights)
        got = model.get_weights()
        assert set(got) == set(canonical_shapes(spec))
        for name, value in weights.items():
            assert got[name].dtype == np.float32, f"{name} is {got[name].dtype}, not float32"
            assert got[name].shape == value.shape, name
            np.testing.assert_array_equal(got[name], value, err_msg=name)

    # -- inference against the reference ---------------------------------------------------------
    @BOTH_INPUTS
    @BOTH_OBJECTIVES
    def test_step_matches_the_reference(
        self, backend: Backend, backend_name: str, device: str, embedding, objective
    ):
        self.require_objective(backend, objective)
        spec = self.spec(embedding=embedding, objective=objective)
        weights = perturbed_weights(spec)
        model = self.make_model(backend_name, spec, device, weights=weights)
        reference = ReferenceModel(spec, weights)
        tokens = np.random.default_rng(2).integers(0, spec.vocab_size, (3, 60)).astype(np.int32)
        state, expected_state = model.initial_state(3), reference.initial_state(3)
        for t in range(tokens.shape[1]):
            logits, state = model.step(tokens[:, t], state)
            expected, expected_state = reference.step(tokens[:, t], expected_state)
            np.testing.assert_allclose(
                logits, expected, rtol=0, atol=self.logit_tolerance, err_msg=f"logits of step {t + 1}"
            )

    @BOTH_INPUTS
    def test_forward_equals_stepping(self, backend_name: str, device: str, embedding):
        spec = self.spec(embedding=embedding)
        model = self.make_model(backend_name, spec, device, weights=perturbed_weights(spec))
        tokens = np.random.default_rng(3).integers(0, spec.vocab_size, (2, 30)).astype(np.int32)
        # Two forward calls: the state handed back by the first must carry on the sequence.
        first, state = model.forward(tokens[:, :18], model.initial_state(2))
        second, state = model.forward(tokens[:, 18:], state)
        stepped, step_state = [], model.initial_state(2)
        for t in range(tokens.shape[1]):
            logits, step_state = model.step(tokens[:, t], step_state)
            stepped.append(logits)
        tol = dict(rtol=0, atol=self.logit_tolerance)
        np.testing.assert_allclose(np.concatenate([first, second], axis=1), np.stack(stepped, axis=1), **tol)
        after_forward, _ = model.step(tokens[:, 0], state)
        after_steps, _ = model.step(tokens[:, 0], step_state)
        np.testing.assert_allclose(after_forward, after_steps, **tol, err_msg="the states differ")

    @BOTH_INPUTS
    @BOTH_OBJECTIVES
    def test_evaluate_batch_matches_the_reference(
        self, backend: Backend, backend_name: str, device: str, embedding, objective
    ):
        self.require_objective(backend, objective)
        spec = self.spec(embedding=embedding, objective=objective)
        weights = perturbed_weights(spec)
        batch = self.batches(spec, batch_size=6).batch(0)
        model = self.make_model(backend_name, spec, device, weights=weights)
        logits, _ = ReferenceModel(spec, weights).forward(batch.inputs)
        if objective == "last":
            logits = logits[:, -1]
        expected = cross_entropy(logits, batch.targets)
        assert model.evaluate_batch(batch.inputs, batch.targets) == pytest.approx(expected, rel=1e-5)

    # -- training --------------------------------------------------------------------------------
    @trains
    @BOTH_OBJECTIVES
    def test_training_lowers_the_loss(self, backend: Backend, backend_name: str, device: str, objective):
        self.require_objective(backend, objective)
        spec = self.spec(objective=objective, layers=1, hidden=32, dropout=0.1)
        model = self.make_model(backend_name, spec, device, settings=OptimizerSettings(clip=5.0))
        before = evaluate(model, IDS, spec)
        self.train(model, self.batches(spec, batch_size=32), 0, 60, lr=3e-2)
        after = evaluate(model, IDS, spec)
        assert after < 0.5 * before, f"loss went from {before:.3f} to only {after:.3f} in 60 steps"

    @trains
    def test_training_is_deterministic_under_a_seed(self, backend_name: str, device: str):
        spec = self.spec(dropout=0.3)
        settings = OptimizerSettings(clip=1.0)
        batches = self.batches(spec)
        first, second = (
            self.train(self.make_model(backend_name, spec, device, seed=5, settings=settings), batches, 0, 5)
            for _ in range(2)
        )
        assert first == second, "two models with the same seed and batches trained differently"

    @trains
    def test_optimizer_state_layout(self, backend_name: str, device: str):
        spec = self.spec()
        model = self.make_model(backend_name, spec, device, settings=OptimizerSettings())
        self.train(model, self.batches(spec), 0, 2)
        state = model.get_optimizer_state()
        shapes = canonical_shapes(spec)
        expected = {"step"} | {f"{slot}/{name}" for name in shapes for slot in ("m", "v")}
        assert set(state) == expected
        assert state["step"].shape == () and state["step"].dtype == np.float64
        assert float(state["step"]) == 2.0
        for name, shape in shapes.items():
            for slot in ("m", "v"):
                value = state[f"{slot}/{name}"]
                assert value.shape == shape, f"{slot}/{name} has shape {value.shape}, expected {shape}"
                assert np.issubdtype(value.dtype, np.floating)
            assert np.any(state[f"v/{name}"] > 0), f"v/{name} is zero after two steps"

    @trains
    def test_optimizer_state_round_trip(self, backend_name: str, device: str):
        """A fresh model given the weights and Adam state continues exactly as the original does."""
        spec = self.spec(dropout=0.3)
        settings = OptimizerSettings(clip=1.0)
        batches = self.batches(spec)
        original = self.make_model(backend_name, spec, device, seed=3, settings=settings)
        self.train(original, batches, 0, 3)
        # Copies, as the core's are (it passes both through files): sharing arrays between the two
        # models is a separate fault, which test_weights_and_optimizer_state_are_not_shared reports.
        weights = {name: value.copy() for name, value in original.get_weights().items()}
        state = {name: value.copy() for name, value in original.get_optimizer_state().items()}
        restored = self.make_model(backend_name, spec, device, seed=3, weights=weights, settings=settings)
        restored.set_optimizer_state(state)
        expected = self.train(original, batches, 3, 4)
        np.testing.assert_allclose(self.train(restored, batches, 3, 4), expected, rtol=1e-6)

    @trains
    def test_weights_and_optimizer_state_are_not_shared(self, backend_name: str, device: str):
        """Arrays going in or out are copies: the model never writes to them or reads them later.

        A backend that hands out views of its live tensors (``Tensor.numpy()`` on the CPU does) makes
        a saved snapshot change as training goes on, and one that keeps the arrays it was given
        lets two models restored from one snapshot update each other's tensors.
        """
        spec = self.spec()
        settings = OptimizerSettings()
        batches = self.batches(spec)
        given = perturbed_weights(spec)
        model = self.make_model(backend_name, spec, device, weights=given, settings=settings)
        self.train(model, batches, 0, 1)
        given_state = {name: value.copy() for name, value in model.get_optimizer_state().items()}
        kept_state = {name: value.copy() for name, value in given_state.items()}
        model.set_optimizer_state(given_state)
        weights_out = model.get_weights()
        kept_weights = {name: value.copy() for name, value in weights_out.items()}
        state_out = model.get_optimizer_state()
        kept_state_out = {name: value.copy() for name, value in state_out.items()}
        self.train(model, batches, 1, 1)
        unchanged = perturbed_weights(spec)

        def changed(arrays, expected):
            return sorted(name for name in expected if not np.array_equal(arrays[name], expected[name]))

        problems = {
            "set_weights kept and trained the caller's arrays": changed(given, unchanged),
            "get_weights returned live arrays": changed(weights_out, kept_weights),
            "set_optimizer_state kept and updated the caller's arrays": changed(given_state, kept_state),
            "get_optimizer_state returned live arrays": changed(state_out, kept_state_out),
        }
        problems = {what: names for what, names in problems.items() if names}
        assert not problems, "; ".join(f"{what}: {', '.join(names)}" for what, names in problems.items())

    # -- run folders -----------------------------------------------------------------------------
    @trains
    def test_run_folder_round_trip(self, backend_name: str, device: str, tmp_path: Path):
        """Train through the core into a run folder, load it back, and get the same model."""
        corpus = tmp_path / "corpus.txt"
        corpus.write_text(CORPUS, encoding="utf-8")
        config = resolve(
            {
                "corpus": str(corpus),
                "backend": backend_name,
                "device": device,
                "hidden": 16,
                "layers": 2,
                "embedding": 8,
                "seq_len": 12,
                "batch_size": 4,
                "max_steps": 4,
                "val_every": 2,
                "val_fraction": 0.2,
                "dropout": 0.1,
                "lr": 1e-2,
            }
        )
        result = Trainer(config, tmp_path / "run").run()
        run = load_run(tmp_path / "run", "latest")
        assert run.backend == backend_name
        model = self.make_model(backend_name, run.spec, device, weights=run.weights)
        # The validation loss the trainer measured is measured again from the saved weights.
        _, val_ids = split_validation(run.vocab.encode(CORPUS), config.val_fraction, run.spec.seq_len)
        assert result.val is not None
        assert evaluate(model, val_ids, run.spec) == pytest.approx(result.val["loss"], rel=1e-5)
        tokens = np.random.default_rng(4).integers(0, run.spec.vocab_size, (2, 50)).astype(np.int32)
        logits, _ = model.forward(tokens, model.initial_state(2))
        expected, _ = ReferenceModel(run.spec, run.weights).forward(tokens)
        np.testing.assert_allclose(logits, expected, rtol=0, atol=self.logit_tolerance)
        optimizer = load_tensors(tmp_path / "run" / OPTIMIZER_FILE)
        assert float(optimizer["step"]) == result.steps
        assert set(optimizer) == {"step"} | {f"{s}/{n}" for n in canonical_shapes(run.spec) for s in "mv"}

    # -- states in the canonical layout and stateful training --------------------------------------
    def test_state_round_trips_through_the_canonical_layout(self, backend_name: str, device: str):
        spec = self.spec()
        model = self.make_model(backend_name, spec, device, weights=perturbed_weights(spec))
        reference = ReferenceModel(spec, perturbed_weights(spec))
        tokens = np.random.default_rng(5).integers(0, spec.vocab_size, (3, 9)).astype(np.int32)
        _, state = model.forward(tokens, model.initial_state(3))
        array = model.state_to_numpy(state)
        assert isinstance(array, np.ndarray) and array.dtype == np.float32, "state_to_numpy: float32 array"
        assert array.shape == (spec.layers, 2, 3, spec.hidden), f"state_to_numpy shape {array.shape}"
        _, expected = reference.forward(tokens)
        expected_array = np.asarray([[h, c] for h, c in expected])
        np.testing.assert_allclose(
            array, expected_array, rtol=0, atol=self.logit_tolerance, err_msg="h then c, per layer"
        )
        again = model.state_to_numpy(model.state_from_numpy(array))
        np.testing.assert_array_equal(again, array, err_msg="state_from_numpy then state_to_numpy")
        # Streams split from a converted state go on as they would have.
        logits, _ = model.step(tokens[1:, 0], model.state_from_numpy(array[:, :, 1:]))
        expected_logits, _ = reference.step(tokens[1:, 0], [(h[1:], c[1:]) for h, c in expected])
        np.testing.assert_allclose(logits, expected_logits, rtol=0, atol=self.logit_tolerance)

    @trains
    def test_train_batch_carried_starts_from_the_state_and_returns_the_final_one(
        self, backend_name: str, device: str
    ):
        spec = self.spec()
        weights = perturbed_weights(spec)
        model = self.make_model(backend_name, spec, device, weights=weights, settings=OptimizerSettings())
        if type(model).train_batch_carried is Model.train_batch_carried:
            pytest.skip(f"backend {backend_name!r} does not implement train_batch_carried (--state carry)")
        reference = ReferenceModel(spec, weights)
        rng = np.random.default_rng(6)
        tokens = rng.integers(0, spec.vocab_size, (4, spec.seq_len + 1)).astype(np.int32)
        start = rng.normal(0.0, 0.5, (spec.layers, 2, 4, spec.hidden)).astype(np.float32)
        loss, final = model.train_batch_carried(tokens[:, :-1], tokens[:, 1:], 1e-3, start)
        logits, expected_state = reference.forward(tokens[:, :-1], [(h, c) for h, c in start])
        assert_float(loss, "train_batch_carried's loss")
        np.testing.assert_allclose(
            loss, cross_entropy(logits, tokens[:, 1:]), rtol=1e-4, err_msg="the loss before the update"
        )
        assert isinstance(final, np.ndarray) and final.shape == start.shape, "the final state's layout"
        np.testing.assert_allclose(
            final, np.asarray([[h, c] for h, c in expected_state]), rtol=0, atol=1e-4, err_msg="final state"
        )
