"""Keras and TensorFlow, imported so that the user's ``KERAS_BACKEND`` cannot change this backend.

Keras 3 picks its backend once, when it is first imported, from ``KERAS_BACKEND`` or
``~/.keras/keras.json``. This backend's graph code is TensorFlow (``tf.function``, ``tf.device``),
so Keras is pinned to TensorFlow here; a Keras that something else already imported on another
backend cannot be switched, and is reported instead of failing later with an obscure error.
"""

import contextlib
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _native_stderr_silenced():
    """Hide what TensorFlow's C++ start-up writes to file descriptor 2 (oneDNN and CUDA probing
    notices, printed before its log level applies), so that seqpred's one-line messages stay alone."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _native_stderr_silenced():
    import keras
    import tensorflow as tf

    tf.config.list_physical_devices()  # device probing prints too; do it now, silenced

if keras.config.backend() != "tensorflow":
    raise RuntimeError(
        f"keras is already imported in this process with the {keras.config.backend()!r} backend; the keras "
        f"backend of seqpred needs it on 'tensorflow' (set KERAS_BACKEND=tensorflow, or do not import keras "
        f"before seqpred builds the model)"
    )

# TensorFlow reserves all GPU memory by default; take it as needed so torch can share the device.
# A device TensorFlow has already initialised keeps its setting (RuntimeError).
for _gpu in tf.config.list_physical_devices("GPU"):
    with contextlib.suppress(RuntimeError):
        tf.config.experimental.set_memory_growth(_gpu, True)


def apply_threads() -> None:
    """Give TensorFlow the thread count seqpred chose for this process (``seqpred.threads``), if any.

    TensorFlow takes it only before its runtime starts; afterwards its pools stay as they are (the
    environment that ``use_threads`` set before the import has then already sized them)."""
    from seqpred.threads import chosen_threads, inter_op_threads

    threads = chosen_threads()
    if threads is None:
        return
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads(threads))


__all__ = ["apply_threads", "keras", "tf"]
