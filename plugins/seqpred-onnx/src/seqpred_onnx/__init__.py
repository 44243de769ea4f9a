"""onnxruntime backend for seqpred: generation and scoring without PyTorch or TensorFlow.

Modules, in reading order:

* :mod:`.plugin`: the entry point; registers the backend (``trains = False``) without importing
  onnxruntime.
* :mod:`.model`: the :class:`seqpred.Model` contract's inference half over an onnxruntime session
  of the graph that :mod:`seqpred.export` writes from the canonical weights.
"""
