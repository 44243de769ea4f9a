"""The backend contract: what a plugin registers and what the core asks of it.

A backend translates this contract into one framework and does nothing else: the core makes the
batches, initialises the weights, schedules the learning rate, samples, and saves checkpoints.

A plugin registers a :class:`Backend` (cheap to construct: it must not import its framework) in the
``seqpred_register_backends`` hook. The core calls :meth:`Backend.create_model`, which may import
the framework, and talks to the returned :class:`Model` in NumPy arrays only:

* token ids are integer arrays, ``inputs`` [B, T];
* ``targets`` are [B, T] for the ``sequence`` objective (the next token at every position) and
  [B] for ``last`` (the token after the window);
* logits are float arrays [B, V] (one step) or [B, T, V] (a sequence);
* weights are dictionaries in the canonical layout of :mod:`seqpred.weights`;
* a recurrent ``state`` is the backend's own object: the core hands back what the model returned, and
  converts it with :meth:`Model.state_to_numpy` and :meth:`Model.state_from_numpy` where it must
  store, split or join states (checkpoints of stateful training, batches whose streams come and go).
  The canonical layout is a float32 array [layers, 2, B, H]: for every layer, h then c.

Generation may be fused: a backend that implements :meth:`Model.generate_tokens` generates many
tokens per call with the core's sampling transform (:mod:`seqpred.sampling`), translated exactly;
one that does not is stepped by the core, one token per call.

Losses are the mean cross-entropy in nats over all predicted tokens of the batch. Training uses
Adam with the :class:`OptimizerSettings` given, the learning rate and the step of each batch
passed in by the core, and gradient clipping by global norm when ``clip`` is set: the maths of
:mod:`seqpred.reference_trainer`, which the conformance kit trains beside every backend.

Data-parallel training is optional (:attr:`Backend.data_parallel`, :mod:`seqpred.distributed`): the
core gives :meth:`Backend.create_model` a ``replicas`` layout, hands each process its rows of every
batch, and combines losses itself; the model averages the gradients over every replica with its
framework's collective. So is mixed precision (:attr:`Backend.precisions`, ``precision="bf16"``):
bfloat16 compute for training, with the weights, the optimizer state and every result float32.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from .sampling import SamplingSettings
from .spec import ModelSpec
from .weights import Weights

#: Methods every model returned by :meth:`Backend.create_model` must have.
MODEL_METHODS: tuple[str, ...] = (
    "get_weights",
    "set_weights",
    "configure_training",
    "train_batch",
    "evaluate_batch",
    "initial_state",
    "step",
    "forward",
    "get_optimizer_state",
    "set_optimizer_state",
    "state_to_numpy",
    "state_from_numpy",
)

#: Attributes and methods every registered backend object must have.
BACKEND_ATTRIBUTES: tuple[str, ...] = ("name", "create_model")


@dataclass(frozen=True)
class OptimizerSettings:
    """Adam's settings, identical on every backend; the learning rate is given per step."""

    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    clip: float | None = None  # global gradient-norm limit, None for none


class Model(ABC):
    """One network built by a backend from a :class:`ModelSpec`."""

    spec: ModelSpec

    @abstractmethod
    def get_weights(self) -> Weights:
        """The weights in the canonical layout, as float32 NumPy arrays."""

    @abstractmethod
    def set_weights(self, weights: Weights) -> None:
        """Load canonical weights (already checked by the core against the spec)."""

    @abstractmethod
    def configure_training(self, settings: OptimizerSettings) -> None:
        """Create the optimizer; called once, before :meth:`set_weights` and the first :meth:`train_batch`."""

    @abstractmethod
    def train_batch(self, inputs: np.ndarray, targets: np.ndarray, lr: float, *, step: int) -> float:
        """One optimizer step with dropout active; returns the batch's loss before the update.

        ``step`` is the number of updates the run has done before this one (0 for its first
        batch, ``s`` for the first batch after resuming at step ``s``). The dropout masks of the
        batch must be a function of the model's seed and ``step`` alone.
        """

    @abstractmethod
    def evaluate_batch(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        """The batch's loss without dropout and without changing any weight."""

    @abstractmethod
    def initial_state(self, batch: int) -> Any:
        """The zero state for ``batch`` independent streams."""

    @abstractmethod
    def step(self, tokens: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        """Feed one token per stream, tokens [B]; return logits [B, V] and the new state."""

    def forward(self, tokens: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        """Feed tokens [B, T]; return logits [B, T, V] and the state after the last step.

        Backends should override this with one sequence pass; this default steps through time.
        """
        logits = []
        for t in range(tokens.shape[1]):
            step_logits, state = self.step(tokens[:, t], state)
            logits.append(step_logits)
        return np.stack(logits, axis=1), state

    def train_batch_carried(
        self, inputs: np.ndarray, targets: np.ndarray, lr: float, state: np.ndarray, *, step: int
    ) -> tuple[float, np.ndarray]:
        """:meth:`train_batch` starting from ``state`` instead of zeros (stateful training).

        ``state`` and the returned final state are canonical arrays [layers, 2, B, H]; gradients do
        not flow into ``state`` (truncated back-propagation through time). Only the ``sequence``
        objective trains this way. Optional: a backend without it cannot train with ``--state carry``.
        """
        raise NotImplementedError

    def generate_tokens(
        self,
        tokens: np.ndarray,
        state: Any,
        settings: SamplingSettings,
        uniforms: np.ndarray,
        *,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, Any, np.ndarray | None]:
        """Fused generation (optional): K tokens for each of B streams in one call.

        Feed ``tokens`` [B], pick a token per stream from the logits with
        :func:`seqpred.sampling.pick` (or an exact translation of it) and ``uniforms[:, k]``, feed it,
        and so on for the K columns of ``uniforms`` [B, K] (float64, drawn by the core). Returns the
        tokens picked, int32 [B, K], the state after feeding all but the last of them (the next call
        feeds that one), and, with ``return_logits``, the logits each was picked from, [B, K, V].
        Where a backend does not override it, the core steps :meth:`step` and samples itself.
        """
        raise NotImplementedError

    @abstractmethod
    def state_to_numpy(self, state: Any) -> np.ndarray:
        """``state`` as a canonical float32 array [layers, 2, B, H] (h then c for every layer)."""

    @abstractmethod
    def state_from_numpy(self, array: np.ndarray) -> Any:
        """The model's own state object for a canonical array [layers, 2, B, H]."""

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        """Adam's moments in the canonical layout: ``m/NAME``, ``v/NAME`` and ``step`` (shape []).

        Required of a backend that trains (the core saves it with every checkpoint, so that a run
        resumes exactly); :func:`seqpred.optim.pack_optimizer_state` builds it.
        """
        raise NotImplementedError

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`get_optimizer_state` returned, after :meth:`configure_training`.

        Required of a backend that trains. Check ``state`` with
        :func:`seqpred.optim.unpack_optimizer_state`, which reports bad keys or shapes.
        """
        raise NotImplementedError


class Backend(ABC):
    """What a plugin registers: a name, what it supports, and a factory for models.

    Constructing a backend must be cheap: import the framework inside :meth:`create_model`.

    ``trains`` declares whether its models train. An inference-only backend (``trains = False``)
    implements the inference half of :class:`Model` (weights, states, ``step``, ``forward``,
    ``evaluate_batch``) and may raise :class:`NotImplementedError` from the training methods
    (``configure_training``, ``train_batch`` and the optimizer state):
    ``seqpred train`` refuses it, and the conformance kit skips its training checks.
    """

    name: str = ""
    description: str = ""
    #: Device kinds the backend runs on, from :data:`seqpred.devices.KINDS` (``cpu``, ``cuda``); the
    #: core checks the user's device against them and passes ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    devices: tuple[str, ...] = ("cpu",)
    #: Modules the backend imports in :meth:`create_model` (its framework), found without importing
    #: them: a backend whose framework is missing is listed as unusable, with ``install``.
    requires: tuple[str, ...] = ()
    #: The command that installs what ``requires`` names, shown when something is missing.
    install: str = ""
    objectives: tuple[str, ...] = ("sequence", "last")
    trains: bool = True
    #: How its models train on several replicas, if they do (:mod:`seqpred.distributed`): ``processes``
    #: (one process per replica: implement :meth:`join` and :meth:`launch`) or ``devices`` (one
    #: process driving several devices). None: ``--replicas`` and torchrun are refused.
    data_parallel: str | None = None
    #: Training precisions it offers; ``bf16`` is passed to :meth:`create_model` as ``precision``.
    precisions: tuple[str, ...] = ("fp32",)

    @abstractmethod
    def create_model(self, spec: ModelSpec, *, device: str = "cpu", seed: int = 0) -> Model:
        """Build the network for ``spec`` on ``device``; ``seed`` seeds the framework's dropout.

        The core adds two keywords only where the backend declares them: ``replicas`` (a
        :class:`seqpred.distributed.Replicas`, when training on more than one) and ``precision``
        (``"bf16"``). With ``replicas``, :meth:`Model.train_batch` receives this process's rows of
        the batch (all of them for ``devices``, which hands each device its
        :meth:`~seqpred.distributed.Replicas.device_blocks`), averages the gradients over every
        replica, and returns the mean loss of the rows it received.
        """

    def join(self, replicas: Any) -> Any:
        """``processes`` backends: join this process to the run's group (``replicas`` says which rank
        it is) and return its :class:`seqpred.distributed.Collective`; called before anything else."""
        raise NotImplementedError

    def launch(self, count: int, worker: Any, args: tuple[Any, ...]) -> None:
        """``processes`` backends: start ``count`` processes on this machine with the framework's own
        launcher, each calling ``worker(*args)`` with the launcher's environment (``RANK``,
        ``WORLD_SIZE``, ``LOCAL_RANK``) set; return when all have finished, raise if one failed."""
        raise NotImplementedError


def missing_methods(obj: object, names: tuple[str, ...]) -> list[str]:
    """Names of ``names`` that ``obj`` lacks or that are still abstract."""
    abstract: frozenset[str] = getattr(type(obj), "__abstractmethods__", frozenset())
    return [n for n in names if not hasattr(obj, n) or n in abstract]
