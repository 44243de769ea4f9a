"""Training configuration: defaults, presets, a TOML file, then command-line flags, in that order.

Every training option is defined once, as a field of :class:`TrainConfig` made by :func:`option`:
its default, its help text, how it is checked and whether a resumed run may change it. The
command line (``seqpred train``), the TOML file and the Python API all read that one definition:
adding an option is one field here (and its test).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .devices import parse_device
from .errors import UsageError
from .sampling import MAX_SEED
from .schedule import SCHEDULES, Schedule
from .spec import OBJECTIVES, ModelSpec

STATE_MODES: tuple[str, ...] = ("reset", "carry")
LEVELS: tuple[str, ...] = ("char", "word")
#: Training arithmetic: float32 throughout, or bfloat16 compute with float32 weights (mixed precision).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")

Check = Callable[[str, Any], None]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# -- checks: each takes the option's name and value and raises UsageError naming the flag ---------


def _number(name: str, value: Any, kind: type) -> None:
    if kind is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise UsageError(f"{_flag(name)} must be a number, got {value!r}")
    elif not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"{_flag(name)} must be a whole number, got {value!r}")


def positive_int(name: str, value: Any) -> None:
    _number(name, value, int)
    if value < 1:
        raise UsageError(f"{_flag(name)} must be a positive integer, got {value}")


def count(name: str, value: Any) -> None:
    _number(name, value, int)
    if value < 0:
        raise UsageError(f"{_flag(name)} must be 0 or more, got {value}")


def width(name: str, value: Any) -> None:
    _number(name, value, int)
    if value < 0:
        raise UsageError(f"{_flag(name)} must be 0 (scaled input) or positive, got {value}")


def seed_value(name: str, value: Any) -> None:
    _number(name, value, int)
    if not 0 <= value <= MAX_SEED:
        raise UsageError(f"{_flag(name)} must be between 0 and 2**63 - 1, got {value}")


def positive(name: str, value: Any) -> None:
    _number(name, value, float)
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{_flag(name)} must be a finite number greater than 0, got {value}")


def non_negative(name: str, value: Any) -> None:
    _number(name, value, float)
    if not (value >= 0 and math.isfinite(value)):
        raise UsageError(f"{_flag(name)} must be a finite number, 0 or more, got {value}")


def fraction(name: str, value: Any) -> None:
    _number(name, value, float)
    if not 0 <= value < 1:
        raise UsageError(f"{_flag(name)} must be in [0, 1), got {value}")


def open_fraction(name: str, value: Any) -> None:
    _number(name, value, float)
    if not 0 < value < 1:
        raise UsageError(f"{_flag(name)} must be in (0, 1), got {value}")


def boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise UsageError(f"{_flag(name)} must be true or false, got {value!r}")


def text(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise UsageError(f"{_flag(name)} must be a string, got {value!r}")


def device(name: str, value: Any) -> None:
    text(name, value)
    parse_device(value)


def choice(*allowed: str) -> Check:
    def check(name: str, value: Any) -> None:
        if value not in allowed:
            raise UsageError(f"{_flag(name)} must be one of {', '.join(allowed)}, got {value!r}")

    check.choices = allowed  # type: ignore[attr-defined]  # the command line shows them
    return check


def optional(check: Check) -> Check:
    """``check``, or nothing when the value is None (the option is off)."""

    def optional_check(name: str, value: Any) -> None:
        if value is not None:
            check(name, value)

    return optional_check


def option(
    default: Any,
    help: str,
    *,
    check: Check,
    resumable: bool = False,
    metavar: str | None = None,
    flags: Sequence[str] = (),
    parse: Callable[[str], Any] | None = None,
    cli: bool = True,
) -> Any:
    """A training option: a :class:`TrainConfig` field whose metadata the CLI, TOML and API read.

    ``resumable``: ``--resume`` may change it. ``flags``: the command line's names (``--name`` by
    default; ``--x/--no-x`` for a switch). ``parse``: turns the command line's text into the value
    (for example a duration). ``cli=False``: not a flag of ``seqpred train`` (the corpus is its
    argument).
    """
    meta = {
        "help": help,
        "check": check,
        "resumable": resumable,
        "metavar": metavar,
        "flags": tuple(flags),
        "parse": parse,
        "cli": cli,
    }
    return dataclasses.field(default=default, metadata=meta)


_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*")


def parse_duration(value: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m`` or ``2h``."""
    match = _DURATION.fullmatch(value)
    if not match:
        raise UsageError(f"--time-limit must be a duration such as 90s, 15m or 2h, got {value!r}")
    number, unit = match.groups()
    return float(number) * {"": 1, "s": 1, "m": 60, "h": 3600}[unit]


@dataclass
class TrainConfig:
    """Every training option, with the default preset's values."""

    corpus: str = option(
        "", "Text file, folder of .txt files, - for standard input, or a corpus name.", check=text,
        resumable=True, cli=False,
    )  # fmt: skip
    backend: str = option(
        "torch", "Backend (see seqpred backends).", check=text, flags=("--backend", "-b"), metavar="NAME"
    )
    preset: str = option(
        "default", "default, or article (the tutorial's exact model).", check=text, metavar="PRESET"
    )
    device: str = option("cpu", "cpu, cuda, cuda:N or auto.", check=device, resumable=True, metavar="DEVICE")
    threads: int | None = option(
        None, "Intra-op threads of torch, TensorFlow and BLAS, all processes together (or SEQPRED_THREADS); "
        "off: as many as cores are free when training starts.", check=optional(positive_int), resumable=True,
        metavar="N",
    )  # fmt: skip
    seed: int = option(0, "Seed for weights, batch order and dropout.", check=seed_value, metavar="N")
    replicas: int = option(
        1, "Data-parallel replicas, each training its share of every batch (--batch-size must divide by "
        "it): processes on torch, devices on keras; under torchrun, as many as it starts.",
        check=positive_int, resumable=True, metavar="N",
    )  # fmt: skip
    precision: str = option(
        "fp32", "fp32, or bf16: mixed precision (bfloat16 compute, float32 weights).",
        check=choice(*PRECISIONS), resumable=True,
    )  # fmt: skip
    # data
    level: str = option("char", "Tokens: char or word.", check=choice(*LEVELS))
    lower: bool = option(False, "Lower-case the text.", check=boolean, flags=("--lower/--no-lower",))
    val_fraction: float = option(
        0.1, "Share of the text kept as validation tail.", check=fraction, metavar="FRACTION"
    )
    # model
    hidden: int = option(256, "LSTM units per layer.", check=positive_int, metavar="N")
    layers: int = option(2, "Stacked LSTM layers.", check=positive_int, metavar="N")
    embedding: int = option(64, "Embedding width; 0 feeds scaled token ids.", check=width, metavar="N")
    dropout: float = option(0.3, "Dropout between the LSTM layers.", check=fraction, metavar="P")
    output_dropout: bool = option(
        False, "Dropout after the last LSTM layer too (the article preset has it).", check=boolean,
        flags=("--output-dropout/--no-output-dropout",),
    )  # fmt: skip
    objective: str = option(
        "sequence", "sequence (every position) or last (after the window).", check=choice(*OBJECTIVES)
    )
    seq_len: int = option(100, "Tokens per window.", check=positive_int, metavar="N")
    state: str = option(
        "reset",
        "reset: each window starts from a zero state; carry: stateful training, each batch row reads "
        "its own stripe of the text and the state flows from batch to batch.",
        check=choice(*STATE_MODES),
    )
    # optimisation
    batch_size: int = option(64, "Windows per batch.", check=positive_int, metavar="N")
    lr: float = option(
        5e-3, "Adam learning rate (the peak, with a schedule).", check=positive, metavar="RATE"
    )
    clip: float | None = option(
        5.0, "Gradient global-norm limit; 0 for none.", check=optional(non_negative), metavar="NORM"
    )
    epochs: int = option(
        10, "Passes over the training text.", check=positive_int, resumable=True, metavar="N"
    )
    max_steps: int | None = option(
        None, "Stop after this many batches.", check=optional(positive_int), resumable=True, metavar="N"
    )
    time_limit: float | None = option(
        None, "Stop after this long: 90s, 15m, 2h.", check=optional(positive), resumable=True,
        metavar="DURATION", parse=parse_duration,
    )  # fmt: skip
    schedule: str = option(
        "cosine", "Learning rate: cosine (to --min-lr at the last step), constant or plateau.",
        check=choice(*SCHEDULES),
    )  # fmt: skip
    warmup: int = option(0, "Steps of linear warm-up.", check=count, metavar="STEPS")
    min_lr: float = option(
        0.0, "Floor of the cosine and plateau schedules.", check=non_negative, metavar="RATE"
    )
    plateau_factor: float = option(
        0.5, "Plateau: multiply the rate by this.", check=open_fraction, metavar="FACTOR"
    )
    plateau_patience: int = option(
        2, "Plateau: validations without improvement before lowering.", check=positive_int, metavar="N"
    )
    patience: int | None = option(
        None, "Stop after this many validations without improvement.", check=optional(positive_int),
        resumable=True, metavar="N",
    )  # fmt: skip
    val_every: int = option(
        200, "Validate every N steps (and each epoch end).", check=positive_int, resumable=True, metavar="N"
    )
    sample_every: int | None = option(
        None, "Show a sample of generated text at the first validation after every N steps.",
        check=optional(positive_int), resumable=True, metavar="N",
    )  # fmt: skip
    # generation defaults recorded with the run
    greedy: bool = option(False, "Generate greedily by default.", check=boolean, cli=False)
    temperature: float = option(0.8, "Default sampling temperature.", check=positive, cli=False)

    def model_spec(self, vocab_size: int) -> ModelSpec:
        return ModelSpec(
            vocab_size=vocab_size,
            hidden=self.hidden,
            layers=self.layers,
            embedding=self.embedding,
            dropout=self.dropout,
            objective=self.objective,  # type: ignore[arg-type]
            seq_len=self.seq_len,
            output_dropout=self.output_dropout,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Check every option, then the ones that depend on each other; raise UsageError naming the flag."""
        for item in dataclasses.fields(self):
            item.metadata["check"](item.name, getattr(self, item.name))
        if self.preset not in PRESETS:
            raise UsageError(f"unknown preset {self.preset!r}; available: {', '.join(PRESETS)}")
        if self.min_lr > self.lr:
            raise UsageError(f"--min-lr must be between 0 and --lr, got {self.min_lr}")
        if self.state == "carry" and self.objective != "sequence":
            raise UsageError("--state carry needs --objective sequence: the last objective has no stripes")
        # The spec checks sizes against memory before anything is allocated.
        self.model_spec(vocab_size=1)
        Schedule(self.schedule, self.lr, 1, self.warmup, self.min_lr, self.plateau_factor)


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # The tutorial's model exactly: lower-cased characters, ids scaled to [0, 1) as the only input
    # feature, 50-character windows predicting the 51st, 2 x LSTM(300) with dropout 0.2 after each,
    # Adam at Keras' default rate held constant, batch 40, 200 epochs, no clipping, greedy generation.
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
        "schedule": "constant",
        "clip": None,
        "epochs": 200,
        "greedy": True,
    },
}

OPTIONS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
FIELDS = frozenset(OPTIONS)
#: Options that may change when a run is resumed: how long and how it is watched, not what it is.
RESUMABLE = frozenset(name for name, f in OPTIONS.items() if f.metadata["resumable"])


def resolve(overrides: dict[str, Any], file_values: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults ← preset ← configuration file ← flags. ``None`` in ``overrides`` means 'not given'."""
    file_values = dict(file_values or {})
    unknown = sorted(set(file_values) - FIELDS)
    if unknown:
        raise UsageError(f"unknown option(s) in the configuration file: {', '.join(unknown)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    preset = given.get("preset", file_values.get("preset", "default"))
    if not isinstance(preset, str) or preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    values: dict[str, Any] = {**PRESETS[preset], **file_values, **given, "preset": preset}
    config = TrainConfig(**values)
    if config.clip == 0:
        config.clip = None
    config.check()
    return config


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
    if not isinstance(data, dict):
        raise UsageError(f"{path}: [train] must be a table of options")
    values = {key.replace("-", "_"): value for key, value in data.items()}
    for name, value in values.items():
        if name in OPTIONS and isinstance(value, str) and OPTIONS[name].metadata["parse"] is not None:
            values[name] = OPTIONS[name].metadata["parse"](value)  # time_limit = "15m"
    return values
