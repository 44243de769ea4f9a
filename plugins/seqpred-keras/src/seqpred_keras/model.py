"""The Keras network and its translation of the seqpred model contract."""

from __future__ import annotations

import functools

import numpy as np

from seqpred import Model, ModelSpec, OptimizerSettings

from .adam import Adam
from .framework import apply_threads, keras, tf
from .mapping import canonical_variables, from_canonical, to_canonical


class LSTMNet(keras.Model):
    """Embedding (or scaled id) → stacked LSTM with dropout between layers (and after the last one
    when the spec says so) → dense logits.

    Keras runs its LSTM layers on cuDNN's fused kernel on a GPU when their settings allow it (tanh and
    sigmoid activations, a bias, no recurrent dropout, not unrolled, no mask): these are theirs.
    With ``precision="bf16"`` the LSTM layers compute in bfloat16 (``mixed_bfloat16``); their variables,
    the states they return and the logits stay float32.
    """

    def __init__(self, spec: ModelSpec, seed: int, precision: str = "fp32"):
        super().__init__(name="seqpred_lstm")
        self.spec = spec
        self.embed = (
            keras.layers.Embedding(spec.vocab_size, spec.embedding, name="embedding")
            if spec.embedding
            else None
        )
        self.lstms = [
            keras.layers.LSTM(
                spec.hidden,
                return_sequences=True,
                return_state=True,
                name=f"lstm_{k}",
                dtype="mixed_bfloat16" if precision == "bf16" else None,
            )
            for k in range(spec.layers)
        ]
        self.drops = [
            keras.layers.Dropout(spec.layer_dropout(k), seed=seed, name=f"dropout_{k}")
            for k in range(spec.layers)
        ]
        self.dense = keras.layers.Dense(spec.vocab_size, name="dense")
        self(tf.zeros((1, 1), dtype=tf.int32))  # creates the variables

    def features(self, tokens):
        """The first LSTM layer's input for token ids ``tokens`` [...]: [..., E] or [..., 1]."""
        if self.embed is not None:
            return self.embed(tokens)
        return (tf.cast(tokens, tf.float32) / self.spec.vocab_size)[..., None]

    def call(self, tokens, states=None, training=False, last_only=False, dropout_seeds=None):
        """Logits [B, T, V] (or [B, V] for ``last_only``) and the (h, c) state of every layer.

        ``dropout_seeds``: one stateless seed [2] per layer, for masks of a replica's own (distributed.py)
        instead of the layers' seed generators.
        """
        x = self.features(tokens)
        new_states = []
        for k, (lstm, drop) in enumerate(zip(self.lstms, self.drops, strict=True)):
            x, h, c = lstm(x, initial_state=None if states is None else list(states[k]), training=training)
            if dropout_seeds is not None and training and drop.rate > 0:
                x = tf.nn.experimental.stateless_dropout(x, rate=drop.rate, seed=dropout_seeds[k])
            else:
                x = drop(x, training=training)
            new_states.append((tf.cast(h, tf.float32), tf.cast(c, tf.float32)))
        if last_only:
            x = x[:, -1]
        return self.dense(x), tuple(new_states)

    def seed_dropout(self, seed: int, step) -> None:
        """Make the next training call's dropout masks a function of (seed, step, layer) alone."""
        for k, drop in enumerate(self.drops):
            if drop.rate > 0:
                state = tf.stack([tf.constant(seed, tf.int64), step * len(self.drops) + k])
                drop.seed_generator.state.assign(state)


def resolve_device(device: str) -> str:
    """The TensorFlow device for seqpred's ``cpu``, ``gpu`` or ``gpu:N`` (``cuda`` alike) or ``auto``."""
    kind, _, index = device.partition(":")
    if kind == "cpu" and not index:
        return "/CPU:0"
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "auto" and not index:
        return "/GPU:0" if gpus else "/CPU:0"
    if kind in ("gpu", "cuda") and (not index or index.isdigit()):
        number = int(index or 0)
        if number >= len(gpus):
            raise RuntimeError(
                f"{device} was asked for but TensorFlow sees {len(gpus)} GPU(s); use --device cpu"
            )
        return f"/GPU:{number}"
    raise ValueError(f"unknown device {device!r}; the keras backend runs on cpu, gpu, gpu:N or auto")


def on_device(method):
    """Run ``method`` under the model's ``tf.device``, so that variables and ops stay where asked."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with tf.device(self.device):
            return method(self, *args, **kwargs)

    return wrapper


def _lstm_cell(z, c):
    """Gates from pre-activations ``z`` [B, 4H] in the order i, f, c, o; returns (h', c')."""
    i, f, g, o = tf.split(z, 4, axis=1)
    c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(c), c


def _ids(array) -> np.ndarray:
    return np.asarray(array, dtype=np.int32)


class KerasModel(Model):
    """The seqpred model contract on :class:`LSTMNet`; every computation is a traced ``tf.function``.

    Signatures are fixed, so each function is traced once whatever the batch or sequence length.
    """

    def __init__(
        self, spec: ModelSpec, *, device: str = "cpu", seed: int = 0, replicas=None, precision: str = "fp32"
    ):
        apply_threads()
        self.spec = spec
        self.seed = seed
        self.replicas = replicas
        self.strategy = None  # tf.distribute.MirroredStrategy with replicas (distributed.py)
        if replicas is not None:
            from .distributed import mirrored_strategy

            self.strategy = mirrored_strategy(replicas)
            self.device = self.strategy.extended.worker_devices[0]
        else:
            self.device = resolve_device(device)
        with self._placed():
            self.net = LSTMNet(spec, seed, precision)
        self.variables = canonical_variables(self.net)
        self.optimizer: Adam | None = None
        self._table = None  # layer 0's input projection of every token, for step(); None when stale
        self._fused = None  # the fused generation loops (fused.py), traced on first use

        h = tf.TensorSpec([None, spec.hidden], tf.float32)
        states = tuple((h, h) for _ in range(spec.layers))
        self._tokens = tf.TensorSpec([None, None], tf.int32)
        self._targets = tf.TensorSpec([None, None] if spec.objective == "sequence" else [None], tf.int32)
        self._train_fn = None  # traced by configure_training, around that optimizer's variables
        self._loss_fn = tf.function(self._loss_graph, input_signature=[self._tokens, self._targets])
        self._forward_fn = tf.function(self._forward_graph, input_signature=[self._tokens, states])
        table = tf.TensorSpec([spec.vocab_size, 4 * spec.hidden], tf.float32)
        self._step_fn = tf.function(
            self._step_graph, input_signature=[table, tf.TensorSpec([None], tf.int32), states]
        )

    # -- weights ---------------------------------------------------------------------------
    def get_weights(self):
        return to_canonical(self.variables)

    @on_device
    def set_weights(self, weights):
        from_canonical(self.variables, weights)
        self._table = None

    # -- training --------------------------------------------------------------------------
    def _placed(self):
        """Where variables are made: on the model's device, or mirrored on every replica's."""
        return self.strategy.scope() if self.strategy is not None else tf.device(self.device)

    def configure_training(self, settings: OptimizerSettings) -> None:
        with self._placed():
            self.optimizer = Adam(self.variables, settings)
        lr, step = tf.TensorSpec([], tf.float64), tf.TensorSpec([], tf.int64)
        if self.strategy is not None:
            from .distributed import train_step

            self._train_fn = train_step(self)
        else:
            self._train_fn = tf.function(
                self._train_graph, input_signature=[self._tokens, self._targets, lr, step]
            )
        self._carried_train_fn = None  # traced on the first stateful batch

    def _loss(self, inputs, targets, training: bool, states=None, dropout_seeds=None):
        """The mean loss and the state of every layer after the last step."""
        last = self.spec.objective == "last"
        logits, states = self.net(
            inputs, states, training=training, last_only=last, dropout_seeds=dropout_seeds
        )
        losses = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
        return tf.reduce_mean(losses), states

    def _train_graph(self, inputs, targets, lr, step, states=None):
        self.net.seed_dropout(self.seed, step)  # the run's step: updates done before this one
        names = list(self.variables)
        with tf.GradientTape() as tape:
            loss, states = self._loss(inputs, targets, training=True, states=states)
        gradients = tape.gradient(loss, [self.variables[n] for n in names])
        # The embedding's gradient arrives as one slice per token occurrence; Adam must square their sum.
        self.optimizer.apply({n: tf.convert_to_tensor(g) for n, g in zip(names, gradients, strict=True)}, lr)
        return loss, tf.stack([tf.stack([h, c]) for h, c in states])

    def _loss_graph(self, inputs, targets):
        return self._loss(inputs, targets, training=False)[0]

    def train_batch(self, inputs, targets, lr, *, step):
        assert self._train_fn is not None, "configure_training first"
        self._table = None
        if self.strategy is not None:
            from .distributed import per_replica

            inputs, targets = (per_replica(self.strategy, self.replicas, _ids(a)) for a in (inputs, targets))
            return float(
                self._train_fn(inputs, targets, tf.constant(lr, tf.float64), tf.constant(step, tf.int64))
            )
        with tf.device(self.device):
            return float(self._train_fn(_ids(inputs), _ids(targets), float(lr), np.int64(step))[0])

    @on_device
    def train_batch_carried(self, inputs, targets, lr, state, *, step):
        assert self._train_fn is not None, "configure_training first"
        if self._carried_train_fn is None:
            lr_spec, step_spec = tf.TensorSpec([], tf.float64), tf.TensorSpec([], tf.int64)
            state_spec = tf.TensorSpec([self.spec.layers, 2, None, self.spec.hidden], tf.float32)

            def carried(inputs, targets, lr, step, state):
                states = tuple((state[k, 0], state[k, 1]) for k in range(self.spec.layers))
                return self._train_graph(inputs, targets, lr, step, states)

            signature = [self._tokens, self._targets, lr_spec, step_spec, state_spec]
            self._carried_train_fn = tf.function(carried, input_signature=signature)
        self._table = None
        state = np.asarray(state, dtype=np.float32)
        loss, final = self._carried_train_fn(_ids(inputs), _ids(targets), float(lr), np.int64(step), state)
        return float(loss), np.asarray(final.numpy(), dtype=np.float32)

    @on_device
    def evaluate_batch(self, inputs, targets):
        if self.strategy is not None and len(inputs) >= self.replicas.local:
            from .distributed import evaluate

            return evaluate(self, _ids(inputs), _ids(targets))
        return float(self._loss_fn(_ids(inputs), _ids(targets)))

    # -- optimizer state, canonical layout -------------------------------------------------
    def get_optimizer_state(self):
        assert self.optimizer is not None, "configure_training first"
        return self.optimizer.get_state()

    @on_device
    def set_optimizer_state(self, state):
        assert self.optimizer is not None, "configure_training first"
        self.optimizer.set_state(state)

    # -- state, canonical layout ------------------------------------------------------------
    def state_to_numpy(self, state):
        return np.asarray([[np.asarray(h), np.asarray(c)] for h, c in state], dtype=np.float32)

    @on_device
    def state_from_numpy(self, array):
        array = np.asarray(array, dtype=np.float32)
        return tuple((tf.constant(layer[0]), tf.constant(layer[1])) for layer in array)

    # -- inference -------------------------------------------------------------------------
    @on_device
    def initial_state(self, batch):
        zeros = tf.zeros((batch, self.spec.hidden))
        return tuple((zeros, zeros) for _ in range(self.spec.layers))

    def _forward_graph(self, tokens, states):
        return self.net(tokens, states, training=False)

    @on_device
    def forward(self, tokens, state):
        logits, state = self._forward_fn(_ids(tokens), state)
        return logits.numpy(), state

    def _step_table(self):
        """[V, 4H]: row v is layer 0's pre-activation from token v, bias included."""
        cell = self.net.lstms[0].cell
        return tf.matmul(self.net.features(tf.range(self.spec.vocab_size)), cell.kernel) + cell.bias

    def _step_graph(self, table, tokens, states):
        x = None
        new_states = []
        for k, (lstm, (h, c)) in enumerate(zip(self.net.lstms, states, strict=True)):
            cell = lstm.cell
            if k == 0:
                z = tf.gather(table, tokens) + tf.matmul(h, cell.recurrent_kernel)
            else:
                z = tf.matmul(x, cell.kernel) + tf.matmul(h, cell.recurrent_kernel) + cell.bias
            x, c = _lstm_cell(z, c)
            new_states.append((x, c))
        return self.net.dense(x), tuple(new_states)

    @on_device
    def step(self, tokens, state):
        if self._table is None:
            self._table = self._step_table()
        logits, state = self._step_fn(self._table, _ids(tokens), state)
        return logits.numpy(), state

    @on_device
    def generate_tokens(self, tokens, state, settings, uniforms, *, return_logits=False):
        """Many tokens per call: the step and the core's sampler in one in-graph loop (fused.py)."""
        if self._table is None:
            self._table = self._step_table()
        if self._fused is None:
            from .fused import FusedGeneration

            self._fused = FusedGeneration(self)
        return self._fused(self._table, tokens, state, settings, uniforms, return_logits)
