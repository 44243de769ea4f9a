"""The model specification: everything needed to build the same network in any backend.

A spec is saved as ``model.json`` in each run folder. Backends build their network from it and
exchange weights in the canonical layout of :mod:`seqpred.weights`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from .errors import UsageError

Objective = Literal["sequence", "last"]
OBJECTIVES: tuple[str, ...] = ("sequence", "last")

# Refuse sizes whose parameters alone would not fit in memory before anything is allocated.
MAX_PARAMETERS = 2_000_000_000


@dataclass(frozen=True)
class ModelSpec:
    """A stacked LSTM language model.

    ``embedding`` > 0 gives a learned embedding of that width as the first layer's input;
    ``embedding`` == 0 gives the tutorial's input: the token id divided by the vocabulary size,
    a single feature per step.

    ``objective`` is ``sequence`` (predict the next token at every position of the window) or
    ``last`` (predict only the token after the window). Dropout sits after every LSTM layer but the
    last, and after the last one too (before the dense layer) when ``output_dropout`` is true; it is
    active only in training.
    """

    vocab_size: int
    hidden: int = 256
    layers: int = 2
    embedding: int = 64
    dropout: float = 0.1
    objective: Objective = "sequence"
    seq_len: int = 100
    # True for runs written before this field existed: they had dropout after every layer.
    output_dropout: bool = True

    def layer_dropout(self, layer: int) -> float:
        """The dropout rate after LSTM layer ``layer`` (0-based)."""
        last = layer == self.layers - 1
        return self.dropout if (not last or self.output_dropout) else 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden", "layers", "seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not isinstance(self.embedding, int) or self.embedding < 0:
            raise UsageError(
                f"embedding must be 0 (scaled input) or a positive integer, got {self.embedding!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.output_dropout, bool):
            raise UsageError(f"output_dropout must be true or false, got {self.output_dropout!r}")
        if self.objective not in OBJECTIVES:
            raise UsageError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        count = self.parameter_count()
        if count > MAX_PARAMETERS:
            raise UsageError(
                f"the model would have {count:,} parameters "
                f"({count * 4 / 2**30:,.1f} GiB for the weights alone); "
                f"choose a smaller --hidden, --embedding or --layers"
            )

    @property
    def input_size(self) -> int:
        """Width of the first LSTM layer's input: the embedding, or 1 for scaled integer input."""
        return self.embedding if self.embedding else 1

    def layer_input_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.hidden

    def parameter_count(self) -> int:
        """Number of canonical parameters (one bias per LSTM layer)."""
        v, h = self.vocab_size, self.hidden
        recurrent_and_bias = self.layers * (h * 4 * h + 4 * h)
        kernels = (self.input_size + (self.layers - 1) * h) * 4 * h  # closed form: any --layers is instant
        return v * self.embedding + kernels + recurrent_and_bias + h * v + v

    def flops_per_token(self) -> int:
        """Multiply-adds times two for one forward step of one stream."""
        h = self.hidden
        macs = (self.input_size + (2 * self.layers - 1) * h) * 4 * h + h * self.vocab_size
        return 2 * macs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown model field(s): {', '.join(unknown)}")
        return cls(**data)
