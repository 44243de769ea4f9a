"""Training configuration: defaults, presets, a TOML file, then command-line flags, in that order."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import UsageError
from .schedule import Schedule
from .spec import ModelSpec

STATE_MODES: tuple[str, ...] = ("reset", "carry")


@dataclass
class TrainConfig:
    """Every training option, with the default preset's values."""

    corpus: str = ""
    backend: str = "torch"
    preset: str = "default"
    device: str = "cpu"
    seed: int = 0
    # data
    level: str = "char"
    lower: bool = False
    val_fraction: float = 0.1
    # model
    hidden: int = 256
    layers: int = 2
    embedding: int = 64
    dropout: float = 0.2
    output_dropout: bool = False  # dropout after the last LSTM layer too
    objective: str = "sequence"
    seq_len: int = 100
    # optimisation
    batch_size: int = 64
    lr: float = 2e-3
    clip: float | None = 5.0
    epochs: int = 10
    max_steps: int | None = None
    time_limit: float | None = None  # seconds
    schedule: str = "constant"
    warmup: int = 0
    min_lr: float = 0.0
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    patience: int | None = None  # validations without improvement before stopping early
    val_every: int = 200
    # reset: every window starts from a zero state; carry: stateful training over contiguous stripes
    state: str = "reset"
    # generation defaults recorded with the run
    greedy: bool = False
    temperature: float = 0.8

    def model_spec(self, vocab_size: int) -> ModelSpec:
        return ModelSpec(
            vocab_size=vocab_size,
            hidden=self.hidden,
            layers=self.layers,
            embedding=self.embedding,
            dropout=self.dropout,
            objective=self.objective,
            seq_len=self.seq_len,  # type: ignore[arg-type]
            output_dropout=self.output_dropout,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        positive = ("hidden", "layers", "seq_len", "batch_size", "epochs", "val_every", "plateau_patience")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError(f"--max-steps must be a positive integer, got {self.max_steps}")
        if self.embedding < 0:
            raise UsageError(f"--embedding must be 0 (scaled input) or positive, got {self.embedding}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be greater than 0, got {self.lr}")
        if self.clip is not None and not self.clip >= 0:
            raise UsageError(f"--clip must be 0 (none) or more, got {self.clip}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise UsageError(f"--time-limit must be greater than 0 seconds, got {self.time_limit}")
        if self.patience is not None and self.patience < 1:
            raise UsageError(f"--patience must be a positive integer, got {self.patience}")
        if self.min_lr < 0 or self.min_lr > self.lr:
            raise UsageError(f"--min-lr must be between 0 and --lr, got {self.min_lr}")
        if self.level not in ("char", "word"):
            raise UsageError(f"--level must be char or word, got {self.level!r}")
        if not 0 <= self.dropout < 1:
            raise UsageError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.state not in STATE_MODES:
            raise UsageError(f"--state must be one of {', '.join(STATE_MODES)}, got {self.state!r}")
        if self.state == "carry" and self.objective != "sequence":
            raise UsageError("--state carry needs --objective sequence: the last objective has no stripes")
        if not 0 <= self.val_fraction < 1:
            raise UsageError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        # The spec checks sizes against memory before anything is allocated.
        self.model_spec(vocab_size=1)


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # The tutorial's model exactly: lower-cased characters, ids scaled to [0, 1) as the only input
    # feature, 50-character windows predicting the 51st, 2 x LSTM(300) with dropout 0.2, Adam at
    # Keras' default rate, batch 40, 200 epochs, no clipping, greedy generation.
    "article": {
        "level": "char",
        "lower": True,
        "seq_len": 50,
        "hidden": 300,
        "layers": 2,
        "embedding": 0,
        "dropout": 0.2,
        "output_dropout": True,
        "objective": "last",
        "batch_size": 40,
        "lr": 1e-3,
        "clip": None,
        "epochs": 200,
        "greedy": True,
    },
}

FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def resolve(overrides: dict[str, Any], file_values: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults ← preset ← configuration file ← flags. ``None`` in ``overrides`` means 'not given'."""
    file_values = dict(file_values or {})
    unknown = sorted(set(file_values) - FIELDS)
    if unknown:
        raise UsageError(f"unknown option(s) in the configuration file: {', '.join(unknown)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    preset = given.get("preset", file_values.get("preset", "default"))
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    values: dict[str, Any] = {**PRESETS[preset], **file_values, **given, "preset": preset}
    config = TrainConfig(**values)
    if config.clip == 0:
        config.clip = None
    config.check()
    Schedule(config.schedule, config.lr, 1, config.warmup, config.min_lr, config.plateau_factor)
    return config


#: Options that may change when a run is resumed: how long and how it is watched, not what it is.
RESUMABLE = frozenset({"epochs", "max_steps", "time_limit", "patience", "val_every", "corpus", "device"})


def load_toml(path: str) -> dict[str, Any]:
    """Training options from a TOML file: top-level keys, or a ``[train]`` table."""
    import tomllib

    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"{path}: configuration file not found") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: not a valid TOML file ({exc})") from None
    data = data.get("train", data)
    return {key.replace("-", "_"): value for key, value in data.items()}
