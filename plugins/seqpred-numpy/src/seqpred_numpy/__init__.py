"""NumPy backend for seqpred: the smallest complete backend, meant to be read and copied.

Modules, in reading order:

* :mod:`.plugin`: the entry point; registers the backend without importing anything heavy.
* :mod:`.model`: the :class:`seqpred.Model` contract, a thin translation over the core's reference
  maths (:mod:`seqpred.bptt` for the gradients, :mod:`seqpred.optim` for Adam and clipping).
"""
