"""Data-parallel training on ``tf.distribute.MirroredStrategy``: the core's replicas in TensorFlow's terms.

One process drives every replica, one device each: GPUs, or on a machine without them logical CPU
devices (TensorFlow can split the processor only before its runtime starts, so the first model of
the process must be the one with replicas). The model's variables are mirrored on every device;
each replica computes the gradients of its block of rows, ``all_reduce`` averages them, and the
update is applied once, to every copy. Keras 3 does not support ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585): several machines are the torch backend's.
"""

from __future__ import annotations

import contextlib

import numpy as np

from seqpred.distributed import Replicas, dropout_seed

from .framework import keras, tf


def replica_devices(replicas: Replicas) -> list[str]:
    """The devices of the replicas: ``count`` GPUs (from the one ``--device cuda:N`` names), or as many
    logical CPU devices."""
    count = replicas.local
    kind, _, index = replicas.device.partition(":")
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "cuda" or (kind == "auto" and gpus):
        first = int(index or 0)
        if first + count > len(gpus):
            raise RuntimeError(
                f"{count} replicas from GPU {first} need {first + count} GPUs; TensorFlow sees {len(gpus)}"
            )
        return [f"/GPU:{first + k}" for k in range(count)]
    cpus = tf.config.list_physical_devices("CPU")
    with contextlib.suppress(RuntimeError):  # the runtime has started: its devices are what they are
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) < count:
        raise RuntimeError(
            f"TensorFlow already started in this process with {len(logical)} CPU device(s); "
            f"{count} replicas on the processor need a new process"
        )
    return [f"/CPU:{k}" for k in range(count)]


def mirrored_strategy(replicas: Replicas) -> tf.distribute.MirroredStrategy:
    """The strategy that mirrors the model on the replicas' devices."""
    devices = replica_devices(replicas)
    # On the processor there is no NCCL: reduce through one device, as TensorFlow does by default there.
    ops = None if devices[0].startswith("/GPU") else tf.distribute.ReductionToOneDevice(devices[0])
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=ops)


def per_replica(strategy, replicas: Replicas, array: np.ndarray, blocks: list[slice] | None = None):
    """``array``'s rows as per-replica values: replica ``k`` gets the core's block ``k`` (of
    :meth:`~seqpred.distributed.Replicas.device_blocks` unless ``blocks`` are given)."""
    blocks = blocks or replicas.device_blocks(len(array))
    return strategy.experimental_distribute_values_from_function(
        lambda context: array[blocks[context.replica_id_in_sync_group]]
    )


def evaluate(model, inputs: np.ndarray, targets: np.ndarray) -> float:
    """Validation shared out between the replicas: each scores its share of the rows (shares differ by
    at most one row), and the mean is taken over every predicted token."""
    if getattr(model, "_evaluate_fn", None) is None:
        strategy = model.strategy

        def step(inputs, targets):
            def replica(inputs, targets):
                last = model.spec.objective == "last"
                logits, _ = model.net(inputs, training=False, last_only=last)
                losses = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
                return tf.reduce_sum(losses), tf.cast(tf.size(losses), tf.float32)

            total, count = strategy.run(replica, args=(inputs, targets))
            add = tf.distribute.ReduceOp.SUM
            return strategy.reduce(add, total, axis=None) / strategy.reduce(add, count, axis=None)

        model._evaluate_fn = tf.function(step)
    shares = model.replicas.device_shares(len(inputs))
    inputs, targets = (per_replica(model.strategy, model.replicas, a, shares) for a in (inputs, targets))
    return float(model._evaluate_fn(inputs, targets))


def train_step(model):
    """The body of one data-parallel training step of ``model`` (a :class:`KerasModel` with a strategy):
    each replica's gradients, averaged over all of them, then Adam once on the mirrored variables."""
    strategy, names = model.strategy, list(model.variables)
    # Each replica draws its own dropout masks, from its own seed (the core's), the step and the layer.
    seeds = tf.constant([dropout_seed(model.seed, r) for r in range(model.replicas.local)], tf.int64)
    layers = len(model.net.drops)

    def step(inputs, targets, lr, step):
        def replica(inputs, targets):
            base = tf.gather(seeds, tf.distribute.get_replica_context().replica_id_in_sync_group)
            masks = [tf.stack([base, step * layers + k]) for k in range(layers)]
            with tf.GradientTape() as tape:
                loss, _ = model._loss(inputs, targets, training=True, dropout_seeds=masks)
            gradients = tape.gradient(loss, [model.variables[n] for n in names])
            # Dense, so that Adam squares the sum of an embedding's slices (see adam.py).
            dense = [tf.convert_to_tensor(g) for g in gradients]
            return loss, tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, dense)

        losses, gradients = strategy.run(replica, args=(inputs, targets))
        # Every replica holds the same mean; the update is computed once and written to every copy.
        first = [strategy.experimental_local_results(g)[0] for g in gradients]
        model.optimizer.apply(dict(zip(names, first, strict=True)), lr)
        # Equal blocks of rows: the mean of the replicas' means is the mean over every row.
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, losses, axis=None)

    return tf.function(step)
