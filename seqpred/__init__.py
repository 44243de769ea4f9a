"""seqpred: train sequence-prediction models on text and generate from them.

The core speaks NumPy; backends (torch, keras, numpy, or a third party's) are plugins found
through entry points in the group ``seqpred``.
"""

from ._version import __version__
from .backend import Backend, Model, OptimizerSettings
from .errors import SeqpredError
from .hookspecs import hookimpl
from .spec import ModelSpec

__all__ = [
    "Backend",
    "Model",
    "ModelSpec",
    "OptimizerSettings",
    "SeqpredError",
    "__version__",
    "hookimpl",
]
