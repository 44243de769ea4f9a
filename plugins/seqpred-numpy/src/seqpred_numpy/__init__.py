"""NumPy backend for seqpred: the smallest complete backend, meant to be read and copied.

Modules, in reading order:

* :mod:`.plugin`: the entry point; registers the backend without importing anything heavy.
* :mod:`.model`: the :class:`seqpred.Model` contract, mostly delegating to the two below.
* :mod:`.bptt`: the loss and its gradients by backpropagation through time.
* :mod:`.adam`: Adam and gradient clipping, exactly as PyTorch computes them.
"""
