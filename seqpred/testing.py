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
to within :attr:`BackendConformance.logit_tolerance`, and training with
:class:`seqpred.reference_trainer.ReferenceTrainer` (the same Adam, clipping and loss, in NumPy),
run beside the backend from the same weights and batches and called in the order the trainer calls
a model; dropout, whose masks no two frameworks draw alike, it measures from outside with the
weights of :mod:`seqpred.dropout_probe`.

This module is imported only by tests: importing :mod:`seqpred` does not import it. It imports
pytest and NumPy and no deep-learning framework.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .backend import BACKEND_ATTRIBUTES, MODEL_METHODS, Backend, Model, OptimizerSettings, missing_methods
from .batches import TrainBatches, split_validation
from .config import resolve
from .dropout_probe import PLACEMENTS, dropout_problems, kept_sum, probe_batch, probe_spec, probe_weights
from .models import build_model, implements
from .reference import ReferenceModel, cross_entropy
from .reference_trainer import ReferenceTrainer
from .registry import get_registry
from .runs import OPTIMIZER_FILE, load_run, load_tensors
from .sampling import SamplingSettings, pick
from .sampling import weights as sampling_weights
from .scoring import window_loss as evaluate
from .spec import OBJECTIVES, ModelSpec
from .train import Trainer
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


#: The cases of ``test_training_matches_the_reference_trainer``: spec changes, Adam's settings and
#: the first learning rate (each step's is 0.8 times the last, as a schedule changes it per call).
#: The clip of ``clipped`` lies between the gradient norms of its steps, so that some are clipped.
TRAINING_CASES: dict[str, tuple[dict, OptimizerSettings, float]] = {
    "lr-1e-3": ({}, OptimizerSettings(), 1e-3),
    "lr-3e-2": ({}, OptimizerSettings(), 3e-2),
    "clipped": ({}, OptimizerSettings(clip=0.3), 1e-2),
    "adam-settings": ({"embedding": 0}, OptimizerSettings(beta1=0.8, beta2=0.99, epsilon=1e-6), 1e-2),
    "last-objective": ({"objective": "last"}, OptimizerSettings(), 1e-2),
}
TRAINING_STEPS = 6
LR_DECAY = 0.8

#: Steps of each dropout probe: 32 steps of 32 units measure the kept fraction to about 0.015.
PROBE_STEPS = 32
PROBE_RATE = 0.3


def largest_difference(got: Weights, expected: Weights, scale: float = 1.0) -> tuple[str, float]:
    """The name and size of the largest absolute difference between two sets of tensors, over ``scale``."""
    diffs = {
        name: float(np.max(np.abs(np.asarray(got[name], np.float64) - expected[name]), initial=0.0)) / scale
        for name in expected
    }
    name = max(diffs, key=lambda n: diffs[n])
    return name, diffs[name]


def trains(test):
    """Marks a kit test that trains: skipped, with the reason, for an inference-only backend."""
    test.seqpred_trains = True
    return test


def assert_float(value: object, what: str) -> None:
    assert isinstance(value, float), f"{what} must return a Python float, got {type(value).__name__}"
    assert np.isfinite(value), f"{what} returned {value}"


#: The sampling settings under which a fused generation loop must pick the core's tokens.
SAMPLING_CASES: dict[str, SamplingSettings] = {
    "plain": SamplingSettings(),
    "greedy": SamplingSettings(greedy=True),
    "cold": SamplingSettings(temperature=0.05),
    "hot": SamplingSettings(temperature=20.0),
    "temperature-0.7": SamplingSettings(temperature=0.7),
    "top-k-1": SamplingSettings(top_k=1),
    "top-k-5": SamplingSettings(top_k=5),
    "top-k-beyond-the-vocabulary": SamplingSettings(top_k=1000),
    "top-p-0.3": SamplingSettings(top_p=0.3),
    "top-p-0.9": SamplingSettings(top_p=0.9),
    "top-k-and-top-p": SamplingSettings(top_k=8, top_p=0.8),
    "all-three": SamplingSettings(temperature=1.3, top_k=10, top_p=0.95),
}


def tied_weights(spec: ModelSpec, seed: int = 1) -> Weights:
    """:func:`perturbed_weights` whose tokens 0 and 1, and 2 and 3, have the same dense column and
    bias: their logits tie (exactly, where the framework computes both columns alike)."""
    weights = perturbed_weights(spec, seed)
    for a, b in ((0, 1), (2, 3)):
        weights["dense.kernel"][:, b] = weights["dense.kernel"][:, a]
        weights["dense.bias"][b] = weights["dense.bias"][a]
    return weights


def check_fused_generation(
    model: Model,
    spec: ModelSpec,
    weights: Weights,
    settings: SamplingSettings,
    *,
    streams: int = 5,
    count: int = 40,
    seed: int = 0,
    tolerance: float = 1e-5,
) -> None:
    """``model.generate_tokens`` (holding ``weights``) picks, at every position of every stream,
    the token :func:`seqpred.sampling.pick` picks from the logits it reports and the same uniform;
    those logits and the state it returns are the reference model's for the tokens it picked."""
    rng = np.random.default_rng(seed)
    start = rng.normal(0.0, 0.5, (spec.layers, 2, streams, spec.hidden)).astype(np.float32)
    tokens = rng.integers(0, spec.vocab_size, streams).astype(np.int32)
    uniforms = rng.random((streams, count))
    uniforms[0, :3] = [0.0, np.nextafter(1.0, 0.0), 0.5]  # the ends of [0, 1)
    chosen, state, logits = model.generate_tokens(
        tokens, model.state_from_numpy(start), settings, uniforms, return_logits=True
    )
    assert isinstance(chosen, np.ndarray) and chosen.shape == (streams, count), "tokens [B, K]"
    assert chosen.dtype == np.int32, f"tokens must be int32, got {chosen.dtype}"
    assert logits is not None and np.shape(logits) == (streams, count, spec.vocab_size), "logits [B, K, V]"
    for k in range(count):
        expected = pick(logits[:, k], settings, uniforms[:, k])
        wrong = np.flatnonzero(chosen[:, k] != expected)
        assert not len(wrong), (
            f"{settings}: at position {k + 1} stream {wrong[0]} the fused loop picked token "
            f"{chosen[wrong[0], k]} where seqpred.sampling.pick picks {expected[wrong[0]]} from the "
            f"same logits and uniform {float(uniforms[wrong[0], k])!r}"
        )
    reference = ReferenceModel(spec, weights)
    expected_state = [(layer[0], layer[1]) for layer in start.astype(np.float64)]
    fed = np.concatenate([tokens[:, None], chosen[:, :-1]], axis=1)
    for k in range(count):
        expected_logits, expected_state = reference.step(fed[:, k], expected_state)
        np.testing.assert_allclose(
            logits[:, k], expected_logits, rtol=0, atol=tolerance, err_msg=f"the logits of position {k + 1}"
        )
    np.testing.assert_allclose(
        model.state_to_numpy(state),
        np.asarray([[h, c] for h, c in expected_state]),
        rtol=0,
        atol=tolerance,
        err_msg="the state after feeding all but the last token picked",
    )
    if not settings.greedy:
        check_picks_at_the_boundaries(model, spec, settings, start[:, :, :1], tokens[:1])


def boundary_uniforms(weights: np.ndarray, count: int) -> np.ndarray:
    """Pairs of uniforms that straddle the boundaries of the cumulative ``weights`` [V] (int64):
    for up to ``count`` tokens j of non-zero weight, the least u whose threshold ``u * total``
    reaches the cumulative weight up to j, and the float64 just below it, in that order."""
    cdf = np.cumsum(weights)
    total = float(cdf[-1])
    candidates = np.flatnonzero(weights[:-1])
    chosen = candidates[np.linspace(0, len(candidates) - 1, min(count, len(candidates))).astype(int)]
    pairs = []
    for j in np.unique(chosen):
        u = float(cdf[j]) / total
        while u * total < cdf[j]:
            u = float(np.nextafter(u, 1.0))
        while u > 0 and float(np.nextafter(u, 0.0)) * total >= cdf[j]:
            u = float(np.nextafter(u, 0.0))
        pairs += [u, float(np.nextafter(u, 0.0))]
    return np.asarray(pairs, dtype=np.float64)


def check_picks_at_the_boundaries(
    model: Model, spec: ModelSpec, settings: SamplingSettings, start: np.ndarray, token: np.ndarray
) -> None:
    """One position, one stream's start replicated, with uniforms on both sides of the boundaries
    between tokens (:func:`boundary_uniforms`): a fused sampler whose integer weights differ from
    the core's by one unit picks another token on one side of some boundary. Random uniforms
    almost never fall that close."""
    rows = 32

    def one_position(uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        state = model.state_from_numpy(np.repeat(start, rows, axis=2))
        chosen, _, logits = model.generate_tokens(
            np.repeat(token, rows), state, settings, uniforms[:, None], return_logits=True
        )
        return chosen[:, 0], np.asarray(logits)[:, 0]

    _, logits = one_position(np.zeros(rows))
    uniforms = boundary_uniforms(sampling_weights(logits[:1], settings)[0], rows // 2)
    uniforms = np.resize(uniforms, rows)  # the pairs repeated to fill the rows (one shape, one kernel)
    chosen, logits = one_position(uniforms)
    expected = pick(logits, settings, uniforms)
    wrong = np.flatnonzero(chosen != expected)
    assert not len(wrong), (
        f"{settings}: the fused loop picked token {chosen[wrong[0]]} where seqpred.sampling.pick picks "
        f"{expected[wrong[0]]} from the same logits and the uniform {float(uniforms[wrong[0]])!r}, which "
        f"lies at the boundary between two tokens' cumulative weights: are its integer weights the core's?"
    )


class BackendConformance:
    """The model contract of :mod:`seqpred.backend`, checked against the NumPy reference.

    Subclass it as ``Test<Something>`` and provide the ``backend_name`` fixture (see the module
    documentation for the fixture contract).
    """

    #: Largest absolute difference allowed between a backend's logits and the reference's.
    logit_tolerance: float = 1e-5
    #: Largest difference allowed between a backend's weights after training and the reference
    #: trainer's, in learning rates. Float32 rounding reaches a few thousandths where Adam divides
    #: a tiny gradient by its own size; a wrong epsilon, bias correction or clip gives 0.2 and more.
    weight_tolerance: float = 1e-2

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
        """A model holding ``weights`` (seeded ones by default), ready to train when ``settings``.

        In the trainer's order: :meth:`~seqpred.Model.configure_training` first, then
        :meth:`~seqpred.Model.set_weights`.
        """
        model = build_model(backend_name, spec, device, seed)
        if settings is not None:
            model.configure_training(settings)
        model.set_weights(weights if weights is not None else init_weights(spec, seed))
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
            losses.append(model.train_batch(batch.inputs, batch.targets, lr, step=step))
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
        assert_float(model.train_batch(batch.inputs, batch.targets, 1e-2, step=0), "train_batch")
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
        atol = self.logit_tolerance
        np.testing.assert_allclose(
            np.concatenate([first, second], axis=1), np.stack(stepped, axis=1), rtol=0, atol=atol
        )
        after_forward, _ = model.step(tokens[:, 0], state)
        after_steps, _ = model.step(tokens[:, 0], step_state)
        np.testing.assert_allclose(after_forward, after_steps, rtol=0, atol=atol, err_msg="the states differ")

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

    # -- training against the reference trainer ----------------------------------------------------
    @trains
    @pytest.mark.parametrize("case", list(TRAINING_CASES))
    def test_training_matches_the_reference_trainer(
        self, backend: Backend, backend_name: str, device: str, case: str
    ):
        """Same weights, batches and learning rates as :class:`ReferenceTrainer`, in the trainer's order.

        The trainer builds the model, calls ``configure_training``, then ``set_weights``, saves a
        checkpoint (``get_weights``, ``get_optimizer_state``) before the first step, trains with the
        step and learning rate of every batch, and validates between steps (``evaluate_batch`` and
        ``forward``). After every step the loss, and at the end the weights and Adam's moments, must
        be the reference's.
        """
        changes, settings, lr = TRAINING_CASES[case]
        spec = self.spec(**changes)
        self.require_objective(backend, spec.objective)
        weights = perturbed_weights(spec)
        batches = self.batches(spec)
        held_out = self.batches(spec, seed=99).batch(0)
        reference = ReferenceTrainer(spec, weights)
        reference.configure(settings)

        model = build_model(backend_name, spec, device, 0)
        model.configure_training(settings)
        model.set_weights(weights)
        self.check_optimizer_state(model.get_optimizer_state(), reference.optimizer_state(), 0, case)
        for step in range(TRAINING_STEPS):
            batch = batches.batch(step)
            rate = lr * LR_DECAY**step
            loss = model.train_batch(batch.inputs, batch.targets, rate, step=step)
            expected, _ = reference.train_batch(batch.inputs, batch.targets, rate)
            assert loss == pytest.approx(expected, rel=1e-4), (
                f"{case}: the loss of step {step + 1}, {loss}, differs from the reference trainer's by "
                f"{abs(loss - expected) / expected:.3g} of it (expected {expected})"
            )
            if step == TRAINING_STEPS // 2:  # validation, as the trainer runs it between steps
                self.check_inference(model, reference, held_out, case, step + 1)
        if settings.clip:
            norms = reference.norms
            assert min(norms) < settings.clip < max(norms), f"the case must clip some steps: {norms}"
        got = model.get_weights()
        name, difference = largest_difference(got, reference.weights, lr)
        assert difference <= self.weight_tolerance, (
            f"{case}: after {TRAINING_STEPS} steps {name} differs from the reference trainer's by "
            f"{difference:.3g} learning rates (at most {self.weight_tolerance:g}); check Adam's bias "
            f"correction and epsilon, and the gradient clipping, against seqpred.optim"
        )
        self.check_optimizer_state(
            model.get_optimizer_state(), reference.optimizer_state(), TRAINING_STEPS, case
        )

    @staticmethod
    def check_inference(model: Model, reference: ReferenceTrainer, batch, case: str, step: int) -> None:
        """Validation between training steps: no dropout, the current weights."""
        loss = model.evaluate_batch(batch.inputs, batch.targets)
        expected = reference.loss(batch.inputs, batch.targets)
        assert loss == pytest.approx(expected, rel=1e-4), (
            f"{case}: evaluate_batch after step {step} gives {loss}, the reference {expected}"
        )
        logits, _ = model.forward(batch.inputs, model.initial_state(len(batch.inputs)))
        expected_logits, _ = ReferenceModel(reference.spec, reference.weights).forward(batch.inputs)
        difference = float(np.max(np.abs(np.asarray(logits, np.float64) - expected_logits)))
        assert difference < 1e-3, f"{case}: forward after step {step} differs by {difference:.3g}"

    @staticmethod
    def check_optimizer_state(state: dict, expected: dict, steps: int, case: str) -> None:
        """``state`` holds ``expected``'s keys and shapes, its step count, and moments close to it."""
        assert set(state) == set(expected), (
            f"{case}: get_optimizer_state keys: missing {sorted(set(expected) - set(state))}, "
            f"unknown {sorted(set(state) - set(expected))}"
        )
        assert float(state["step"]) == steps, (
            f"{case}: optimizer step {float(state['step'])}, expected {steps}"
        )
        for key, value in expected.items():
            assert np.shape(state[key]) == value.shape, f"{case}: {key} has shape {np.shape(state[key])}"
            scale = float(np.max(np.abs(value), initial=0.0)) or 1.0
            difference = float(np.max(np.abs(np.asarray(state[key], np.float64) - value), initial=0.0))
            assert difference <= 1e-3 * scale, (
                f"{case}: Adam's {key} after {steps} steps differs from the reference's by {difference:.3g} "
                f"(largest value {scale:.3g})"
            )

    @trains
    def test_resumed_training_matches_the_reference_trainer(self, backend_name: str, device: str):
        """A model resumed from weights and optimizer state, in the trainer's order, trains on as the
        reference trainer does without stopping."""
        spec = self.spec()
        settings = OptimizerSettings(clip=1.0)
        batches = self.batches(spec)
        reference = ReferenceTrainer(spec, perturbed_weights(spec))
        reference.configure(settings)
        first = self.make_model(
            backend_name, spec, device, weights=perturbed_weights(spec), settings=settings
        )
        for step in range(3):
            batch = batches.batch(step)
            first.train_batch(batch.inputs, batch.targets, 1e-2, step=step)
            reference.train_batch(batch.inputs, batch.targets, 1e-2)
        weights, state = first.get_weights(), first.get_optimizer_state()
        resumed = build_model(backend_name, spec, device, 0)
        resumed.configure_training(settings)
        resumed.set_weights(weights)
        resumed.set_optimizer_state(state)
        for step in range(3, 6):
            batch = batches.batch(step)
            loss = resumed.train_batch(batch.inputs, batch.targets, 1e-2, step=step)
            expected, _ = reference.train_batch(batch.inputs, batch.targets, 1e-2)
            assert loss == pytest.approx(expected, rel=1e-4), (
                f"resumed: the loss of step {step + 1}, {loss}, differs from the reference trainer's by "
                f"{abs(loss - expected) / expected:.3g} of it (expected {expected})"
            )
        name, difference = largest_difference(resumed.get_weights(), reference.weights, 1e-2)
        assert difference <= self.weight_tolerance, (
            f"resumed: {name} differs from the reference trainer's by {difference:.3g} learning rates"
        )

    # -- dropout ---------------------------------------------------------------------------------
    @trains
    @pytest.mark.parametrize("placement", list(PLACEMENTS))
    def test_dropout_in_training_at_the_rate_asked(
        self, backend: Backend, backend_name: str, device: str, placement: str
    ):
        """Inverted dropout where the spec puts it, at its rate: measured by :mod:`seqpred.dropout_probe`.

        The learning rate is 0, so the weights stay those of the probe and only the masks change
        the loss; a validation between steps must not leave dropout off.
        """
        objective = "sequence" if "sequence" in backend.objectives else "last"
        spec = probe_spec(
            placement, vocab_size=len(VOCAB), hidden=32, dropout=PROBE_RATE, embedding=8, objective=objective
        )
        model = self.make_model(
            backend_name, spec, device, weights=probe_weights(spec, placement), settings=OptimizerSettings()
        )
        inputs, targets = probe_batch(spec)
        sums = []
        for step in range(PROBE_STEPS):
            sums.append(kept_sum(spec, placement, model.train_batch(inputs, targets, 0.0, step=step)))
            if step == PROBE_STEPS // 2:
                model.evaluate_batch(inputs, targets)
        problems = dropout_problems(sums, spec.hidden, PROBE_RATE)
        assert not problems, f"dropout {placement} (rate {PROBE_RATE}): " + "; ".join(problems)

    @trains
    def test_no_dropout_where_the_spec_has_none(self, backend: Backend, backend_name: str, device: str):
        """One layer without ``output_dropout``: nothing to drop, training losses are evaluation's."""
        spec = self.spec(layers=1, dropout=0.5, output_dropout=False)
        self.require_objective(backend, spec.objective)
        batch = self.batches(spec).batch(0)
        model = self.make_model(
            backend_name, spec, device, weights=perturbed_weights(spec), settings=OptimizerSettings()
        )
        expected = model.evaluate_batch(batch.inputs, batch.targets)
        losses = [model.train_batch(batch.inputs, batch.targets, 0.0, step=step) for step in range(3)]
        np.testing.assert_allclose(
            losses, expected, rtol=1e-5, err_msg="dropout after the only layer without output_dropout"
        )

    @trains
    def test_no_dropout_in_evaluation(self, backend: Backend, backend_name: str, device: str):
        """After training steps, evaluate_batch, forward and step see every unit, unscaled."""
        spec = self.spec(dropout=0.5, output_dropout=True)
        self.require_objective(backend, spec.objective)
        weights = perturbed_weights(spec)
        batch = self.batches(spec).batch(0)
        model = self.make_model(backend_name, spec, device, weights=weights, settings=OptimizerSettings())
        model.train_batch(batch.inputs, batch.targets, 0.0, step=0)
        reference = ReferenceModel(spec, weights)
        logits, _ = reference.forward(batch.inputs)
        expected = cross_entropy(logits, batch.targets)
        for attempt in range(2):
            loss = model.evaluate_batch(batch.inputs, batch.targets)
            assert loss == pytest.approx(expected, rel=1e-5), (
                f"evaluate_batch gives {loss} (call {attempt + 1}), the reference without dropout {expected}"
            )
        got, _ = model.forward(batch.inputs, model.initial_state(len(batch.inputs)))
        np.testing.assert_allclose(got, logits, rtol=0, atol=self.logit_tolerance, err_msg="forward's logits")
        stepped, _ = model.step(batch.inputs[:, 0], model.initial_state(len(batch.inputs)))
        np.testing.assert_allclose(stepped, logits[:, 0], rtol=0, atol=self.logit_tolerance, err_msg="step's")

    @trains
    def test_dropout_masks_are_a_function_of_seed_and_step(self, backend_name: str, device: str):
        """Same seed and step, same masks, whatever came before; another seed or step, other masks.

        With a learning rate of 0 the weights stay put, so the loss changes with the masks only.
        """
        spec = self.spec(dropout=0.5, output_dropout=True)
        batch = self.batches(spec).batch(0)
        weights = perturbed_weights(spec)

        def losses(seed: int, steps: list[int], history: int = 0) -> list[float]:
            model = self.make_model(
                backend_name, spec, device, seed=seed, weights=weights, settings=OptimizerSettings()
            )
            for step in range(history):  # another past: other steps taken, a validation between
                model.train_batch(batch.inputs, batch.targets, 0.0, step=step)
                model.evaluate_batch(batch.inputs, batch.targets)
            return [model.train_batch(batch.inputs, batch.targets, 0.0, step=step) for step in steps]

        fresh = losses(3, [5, 9])
        assert fresh[0] != fresh[1], (
            "steps 5 and 9 drew the same dropout masks: they must change with the step"
        )
        assert losses(3, [5, 9], history=3) == fresh, (
            "the masks of steps 5 and 9 changed with the steps taken before: they must depend on "
            "(seed, step) alone, the step being the one train_batch is given"
        )
        assert losses(4, [5, 9]) != fresh, "seeds 3 and 4 drew the same dropout masks: they must use the seed"

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
        if not implements(model, "train_batch_carried"):
            pytest.skip(f"backend {backend_name!r} does not implement train_batch_carried (--state carry)")
        reference = ReferenceModel(spec, weights)
        rng = np.random.default_rng(6)
        tokens = rng.integers(0, spec.vocab_size, (4, spec.seq_len + 1)).astype(np.int32)
        start = rng.normal(0.0, 0.5, (spec.layers, 2, 4, spec.hidden)).astype(np.float32)
        loss, final = model.train_batch_carried(tokens[:, :-1], tokens[:, 1:], 1e-3, start, step=0)
        logits, expected_state = reference.forward(tokens[:, :-1], [(h, c) for h, c in start])
        assert_float(loss, "train_batch_carried's loss")
        np.testing.assert_allclose(
            loss, cross_entropy(logits, tokens[:, 1:]), rtol=1e-4, err_msg="the loss before the update"
        )
        assert isinstance(final, np.ndarray) and final.shape == start.shape, "the final state's layout"
        np.testing.assert_allclose(
            final, np.asarray([[h, c] for h, c in expected_state]), rtol=0, atol=1e-4, err_msg="final state"
        )

    # -- fused generation (optional) ---------------------------------------------------------------
    @staticmethod
    def require_fused(model: Model, backend_name: str) -> None:
        if not implements(model, "generate_tokens"):
            pytest.skip(f"backend {backend_name!r} has no fused generation: the core's generic loop runs")

    @pytest.mark.parametrize("case", list(SAMPLING_CASES))
    def test_fused_generation_picks_the_core_samplers_tokens(self, backend_name: str, device: str, case: str):
        """For every sampling setting, the same tokens as seqpred.sampling.pick from the same logits
        and uniforms, logits that tie included; the logits and state are the reference's."""
        spec = self.spec()
        weights = tied_weights(spec)
        model = self.make_model(backend_name, spec, device, weights=weights)
        self.require_fused(model, backend_name)
        check_fused_generation(model, spec, weights, SAMPLING_CASES[case], tolerance=self.logit_tolerance)

    @pytest.mark.parametrize("case", ["temperature-0.7", "top-p-0.9"])
    def test_fused_generation_carries_on_across_calls(self, backend_name: str, device: str, case: str):
        """Two calls, the second fed the first's last token and state, give the tokens of one call;
        without ``return_logits`` the same tokens, and None for the logits."""
        spec = self.spec()
        model = self.make_model(backend_name, spec, device, weights=perturbed_weights(spec))
        self.require_fused(model, backend_name)
        settings = SAMPLING_CASES[case]
        uniforms = np.random.default_rng(7).random((3, 16))
        tokens = np.asarray([1, 2, 3], dtype=np.int32)
        whole, _, _ = model.generate_tokens(tokens, model.initial_state(3), settings, uniforms)
        first, state, none = model.generate_tokens(tokens, model.initial_state(3), settings, uniforms[:, :7])
        assert none is None, "generate_tokens without return_logits must return None for the logits"
        second, _, _ = model.generate_tokens(first[:, -1], state, settings, uniforms[:, 7:])
        np.testing.assert_array_equal(np.concatenate([first, second], axis=1), whole)

    @pytest.mark.parametrize("case", ["plain", "greedy", "all-three"])
    def test_fused_generation_equals_the_generic_loop(self, backend_name: str, device: str, case: str):
        """The fused loop and the core's loop over step give the same tokens from the same uniforms
        (without ``return_logits``, which a loop may compute another way)."""
        from .generate import stepped_tokens

        spec = self.spec()
        model = self.make_model(backend_name, spec, device, weights=perturbed_weights(spec))
        self.require_fused(model, backend_name)
        settings = SAMPLING_CASES[case]
        uniforms = np.random.default_rng(8).random((4, 60))
        tokens = np.asarray([0, 5, 9, 2], dtype=np.int32)
        fused, _, _ = model.generate_tokens(tokens, model.initial_state(4), settings, uniforms)
        stepped, _, _ = stepped_tokens(model, tokens, model.initial_state(4), settings, uniforms)
        np.testing.assert_array_equal(fused, stepped)

    # -- mixed precision and data parallelism (optional) -----------------------------------------
    def test_data_parallel_is_declared_with_what_it_needs(self, backend: Backend, backend_name: str):
        """``data_parallel`` is None, ``devices``, or ``processes`` with ``join`` and ``launch``."""
        kind = getattr(backend, "data_parallel", None)
        assert kind in (None, "processes", "devices"), f"unknown data_parallel {kind!r}"
        if kind == "processes":
            for method in ("join", "launch"):
                overridden = getattr(type(backend), method, None) is not getattr(Backend, method)
                assert overridden, f"backend {backend_name!r} runs replicas as processes but has no {method}"
        assert set(getattr(backend, "precisions", ("fp32",))) <= {"fp32", "bf16"}

    @trains
    def test_bf16_training_stays_near_the_reference_with_float32_weights(
        self, backend: Backend, backend_name: str, device: str
    ):
        """``precision="bf16"``: losses within 5% of the float32 reference trainer's for a few steps, the
        weights float32, the optimizer state finite, and evaluation afterwards within 5% too."""
        if "bf16" not in getattr(backend, "precisions", ("fp32",)):
            pytest.skip(f"backend {backend_name!r} does not declare bf16 training")
        spec = self.spec()
        weights = perturbed_weights(spec)
        settings = OptimizerSettings(clip=1.0)
        reference = ReferenceTrainer(spec, weights)
        reference.configure(settings)
        model = build_model(backend_name, spec, device, 0, precision="bf16")
        model.configure_training(settings)
        model.set_weights(weights)
        batches = self.batches(spec)
        for step in range(4):
            batch = batches.batch(step)
            loss = model.train_batch(batch.inputs, batch.targets, 1e-2, step=step)
            expected, _ = reference.train_batch(batch.inputs, batch.targets, 1e-2)
            assert loss == pytest.approx(expected, rel=5e-2), f"bf16 loss of step {step + 1}"
        got = model.get_weights()
        # Adam divides each gradient by its own size: bfloat16 rounding may turn a tiny one around,
        # so single weights may differ by a few learning rates; the losses above and below may not.
        assert all(value.dtype == np.float32 for value in got.values()), "bf16 weights must stay float32"
        state = model.get_optimizer_state()
        assert all(np.all(np.isfinite(np.asarray(v, np.float64))) for v in state.values())
        held_out = self.batches(spec, seed=99).batch(0)
        assert model.evaluate_batch(held_out.inputs, held_out.targets) == pytest.approx(
            reference.loss(held_out.inputs, held_out.targets), rel=5e-2
        )
