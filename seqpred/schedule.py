"""Learning-rate schedules: constant, cosine with warm-up, and reduce-on-plateau.

The rate is a pure function of the step and a small state (the plateau's scale), which is saved
with each checkpoint so that a resumed run continues on the same curve.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .errors import UsageError

SCHEDULES = ("constant", "cosine", "plateau")


@dataclass
class Schedule:
    kind: str
    lr: float
    total_steps: int
    warmup: int = 0
    min_lr: float = 0.0
    factor: float = 0.5  # plateau: multiply the rate by this ...
    patience: int = 2  # ... after this many validations without improvement
    # plateau state
    scale: float = 1.0
    best: float = math.inf
    waited: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise UsageError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.kind!r}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be 0 or more steps, got {self.warmup}")
        if not 0 < self.factor < 1:
            raise UsageError(f"--plateau-factor must be in (0, 1), got {self.factor}")

    def rate(self, step: int) -> float:
        """Learning rate for 0-based ``step``."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup)
            progress = min(1.0, (step - self.warmup) / span)
            return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.kind == "plateau":
            return max(self.min_lr, self.lr * self.scale)
        return self.lr

    def observe(self, val_loss: float) -> None:
        """Tell the schedule a validation loss; the plateau schedule lowers the rate when stuck."""
        if self.kind != "plateau":
            return
        if val_loss < self.best:
            self.best, self.waited = val_loss, 0
        else:
            self.waited += 1
            if self.waited >= self.patience:
                self.scale *= self.factor
                self.waited = 0

    def state(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: data[k] for k in ("scale", "best", "waited")} | {
            "best": None if math.isinf(self.best) else self.best
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.scale = float(state.get("scale", 1.0))
        best = state.get("best")
        self.best = math.inf if best is None else float(best)
        self.waited = int(state.get("waited", 0))
