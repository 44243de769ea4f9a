"""The run folder: everything a trained model needs, in plain JSON and safetensors.

=======================  ==========================================================
file                     content
=======================  ==========================================================
``run.json``             format version, backend, progress (step, epoch), best score
``model.json``           the :class:`~seqpred.spec.ModelSpec`
``train.json``           the resolved training configuration
``vocab.json``           the vocabulary
``weights.safetensors``  the latest weights, canonical layout
``best.safetensors``     the weights with the lowest validation loss so far
``optimizer.safetensors``  Adam's moments in the canonical layout, for resuming
``history.jsonl``        one JSON object per logged event (train, validation)
=======================  ==========================================================

Every file is written to a hidden temporary file (``.NAME.*.tmp``), synced and renamed into place. A
checkpoint writes all its files first and renames them only once every write has succeeded,
``run.json`` last as the commit point: a failed write (a full disk) leaves the previous checkpoint
untouched.
Nothing is ever unpickled: weights are safetensors, everything else JSON.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .errors import RunError, SeqpredError, UsageError, VocabError
from .reading import read_limited
from .spec import ModelSpec
from .vocab import Vocab
from .weights import Weights, check_weights

FORMAT_VERSION = 1
#: The oldest seqpred version that writes each format version (for the message on newer runs).
FORMAT_INTRODUCED = {1: "0.1.0"}

RUN_FILE = "run.json"
MODEL_FILE = "model.json"
TRAIN_FILE = "train.json"
VOCAB_FILE = "vocab.json"
LATEST_FILE = "weights.safetensors"
BEST_FILE = "best.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
#: Stateful training (--state carry): the state carried into the next batch, canonical [L, 2, B, H].
CARRIED_STATE_FILE = "state.safetensors"
HISTORY_FILE = "history.jsonl"
CHECKPOINTS = {"latest": LATEST_FILE, "best": BEST_FILE}

_DAMAGED = "restore the file from a copy or train again"


def _one_line(text: object) -> str:
    """``text`` with line breaks escaped: names and values read from a file may hold them."""
    return str(text).replace("\r", "\\r").replace("\n", "\\n")


_UMASK = os.umask(0)
os.umask(_UMASK)


def _write_temporary(path: Path, data: bytes) -> Path:
    """``data`` in a new, synced, hidden temporary file next to ``path``; removed again on failure."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the user's usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    tmp = _write_temporary(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def open_for_append(path: Path) -> Any:
    """``path`` opened to append text, never through a symbolic link (``O_NOFOLLOW``): a link
    planted there is an error, not a way to write elsewhere."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError:
        if path.is_symlink():
            raise RunError(
                f"{path}: is a symbolic link; seqpred never writes through one: remove it"
            ) from None
        raise
    return os.fdopen(fd, "a", encoding="utf-8")


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def tensor_bytes(tensors: Mapping[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.numpy import save

    arrays = {name: np.asarray(value, order="C") for name, value in tensors.items()}  # keeps 0-d shapes
    return save(arrays, metadata=metadata)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, json_bytes(data))


def save_tensors(
    path: Path, tensors: Mapping[str, np.ndarray], metadata: dict[str, str] | None = None
) -> None:
    atomic_write_bytes(path, tensor_bytes(tensors, metadata))


class Commit:
    """Files that replace their targets together: each is written to a temporary file at once, and
    all are renamed into place, in the order given, when the ``with`` block ends without an error.

    An error in the block (a full disk, say) removes the temporary files and leaves every target as
    it was, so a checkpoint that cannot be written completely is not written at all.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def write_bytes(self, path: Path, data: bytes) -> None:
        self._pending.append((_write_temporary(path, data), path))

    def write_json(self, path: Path, data: Any) -> None:
        self.write_bytes(path, json_bytes(data))

    def write_tensors(
        self, path: Path, tensors: Mapping[str, np.ndarray], metadata: dict[str, str] | None = None
    ) -> None:
        self.write_bytes(path, tensor_bytes(tensors, metadata))

    def __enter__(self) -> Commit:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            while exc_type is None and self._pending:
                tmp, path = self._pending[0]
                os.replace(tmp, path)
                self._pending.pop(0)
        finally:
            for tmp, _ in self._pending:
                tmp.unlink(missing_ok=True)
            self._pending.clear()


_PICKLE_PROTOCOLS = {bytes([0x80, n]) for n in range(2, 6)}


def _foreign_format(data: bytes) -> str | None:
    """What a file that is not safetensors looks like, when it is recognisable."""
    if data[:2] in _PICKLE_PROTOCOLS:
        return "a Python pickle"
    if data[:4] == b"PK\x03\x04":
        return "a zip archive (a torch.save checkpoint?)"
    if data[:8] == b"\x89HDF\r\n\x1a\n":
        return "an HDF5 file (a Keras .h5 checkpoint?)"
    if data[:6] == b"\x93NUMPY":
        return "a NumPy .npy file"
    return None


def load_tensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a safetensors file; any other content (a pickle, a truncated file) is refused."""
    from safetensors.numpy import load

    try:
        data = read_limited(path, RunError, "weights")
    except FileNotFoundError:
        raise RunError(f"{path}: missing; {_DAMAGED}") from None
    except OSError as exc:
        raise RunError(f"{path}: cannot read ({exc.strerror or exc})") from None
    header_size = int.from_bytes(data[:8], "little")
    if len(data) < 8:
        problem = f"not a safetensors file (only {len(data)} bytes)"
    elif header_size > len(data) - 8:
        # The announced size is not shown: for a file that is not safetensors it is the file's
        # first eight bytes, which are none of the message's business.
        problem = (
            f"not a safetensors file, or truncated (its header announces more than the "
            f"{len(data):,} bytes the file holds)"
        )
    else:
        try:
            return load(data)
        except BaseException as exc:  # safetensors raises its own error types, and a Rust panic
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            problem = f"not a valid safetensors file ({_one_line(str(exc).strip())})"
    foreign = _foreign_format(data)
    if foreign is not None:
        raise RunError(
            f"{path}: looks like {foreign}, not safetensors; seqpred reads weights only from "
            f"safetensors and never unpickles: convert them, e.g. with safetensors.numpy.save_file"
        )
    raise RunError(f"{path}: {problem}; {_DAMAGED}")


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(read_limited(path, RunError, "JSON").decode("utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path.parent}: not a seqpred run ({path.name} is missing)") from None
    except OSError as exc:
        raise RunError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = str(exc).splitlines()[0] if str(exc) else "nested too deeply"
        raise RunError(f"{path}: {what} is not valid JSON ({reason}); {_DAMAGED}") from None


@dataclass
class Run:
    """A loaded run folder."""

    path: Path
    spec: ModelSpec
    vocab: Vocab
    weights: Weights
    meta: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return str(self.meta.get("backend", ""))


def _release(text: str) -> tuple[int, ...]:
    """The leading numbers of a version string: ``"1.2.0rc1"`` → ``(1, 2, 0)``."""
    numbers: list[int] = []
    for part in text.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, part))
        if not digits or len(digits) > 9:
            break
        numbers.append(int(digits))
    return tuple(numbers)


def check_format(meta: Any, path: Path) -> dict[str, Any]:
    if not isinstance(meta, dict) or meta.get("format") != "seqpred-run":
        raise RunError(f"{path}: not a seqpred run ({RUN_FILE} does not describe one)")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RunError(f"{path}: {RUN_FILE} has no valid format_version; restore the file from a copy")
    if version > FORMAT_VERSION:
        writer = meta.get("seqpred_version")
        newer = isinstance(writer, str) and _release(writer) > _release(__version__)
        needed = f"seqpred {writer} or later" if newer else "a newer seqpred"
        raise RunError(
            f"{path}: run format version {version} is newer than this seqpred ({__version__}) reads "
            f"(up to {FORMAT_VERSION}); upgrade to {needed}, e.g. pip install -U seqpred"
        )
    for key, kind in (("backend", str), ("step", int), ("schedule", dict)):
        value = meta.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise RunError(
                f"{path / RUN_FILE}: {key} must be a JSON {kind.__name__}, not {type(value).__name__}; "
                f"{_DAMAGED}"
            )
    if isinstance(meta.get("step"), int) and meta["step"] < 0:
        raise RunError(f"{path / RUN_FILE}: step must not be negative, got {meta['step']}; {_DAMAGED}")
    return meta


#: More stacked layers than any real model; refused before the spec is checked, which costs a loop
#: over the layers.
MAX_LAYERS = 100_000


def load_run(path: str | Path, checkpoint: str = "best") -> Run:
    """Load and check a run folder; ``checkpoint`` is ``best`` (falls back to latest) or ``latest``.

    An ``.onnx`` file written by ``seqpred export`` loads too, as the run it was exported from.
    """
    path = Path(path)
    if checkpoint not in CHECKPOINTS:
        raise UsageError(f"unknown checkpoint {checkpoint!r}; choose best or latest")
    if path.suffix == ".onnx" and path.is_file():
        from .export import load_onnx_run

        return load_onnx_run(path)
    if not path.exists():
        raise RunError(f"{path}: no such run folder")
    if not path.is_dir():
        raise RunError(f"{path}: not a folder; give the run folder that train --out wrote")
    meta = check_format(read_json(path / RUN_FILE, "run metadata"), path)
    spec_data = read_json(path / MODEL_FILE, "model spec")
    if not isinstance(spec_data, dict):
        raise RunError(f"{path / MODEL_FILE}: the model spec must be a JSON object; {_DAMAGED}")
    layers = spec_data.get("layers")
    if isinstance(layers, int) and layers > MAX_LAYERS:
        raise RunError(f"{path / MODEL_FILE}: invalid model spec ({layers:,} layers); {_DAMAGED}")
    try:
        spec = ModelSpec.from_dict(spec_data)
    except (SeqpredError, TypeError) as exc:
        raise RunError(f"{path / MODEL_FILE}: invalid model spec ({_one_line(exc)}); {_DAMAGED}") from None
    try:
        vocab = Vocab.from_json(read_limited(path / VOCAB_FILE, RunError, "a vocabulary").decode("utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: not a seqpred run ({VOCAB_FILE} is missing)") from None
    except OSError as exc:
        raise RunError(f"{path / VOCAB_FILE}: cannot read ({exc.strerror or exc})") from None
    except (VocabError, UnicodeDecodeError) as exc:
        raise RunError(
            f"{path / VOCAB_FILE}: {_one_line(exc)}; restore the vocabulary this run was trained with"
        ) from None
    if len(vocab) != spec.vocab_size:
        raise RunError(
            f"{path / VOCAB_FILE}: holds {len(vocab)} tokens but the model was built for {spec.vocab_size}; "
            f"restore the vocabulary this run was trained with"
        )
    weights_path = path / CHECKPOINTS[checkpoint]
    if checkpoint == "best" and not weights_path.exists():
        weights_path = path / LATEST_FILE
    tensors = load_tensors(weights_path)
    try:
        weights = check_weights(spec, tensors, str(weights_path))
    except RunError as exc:
        raise RunError(f"{_one_line(exc)}; {_DAMAGED}") from None
    config_path = path / TRAIN_FILE
    config = read_json(config_path, "training configuration") if config_path.exists() else {}
    if not isinstance(config, dict):
        raise RunError(f"{config_path}: the training configuration must be a JSON object; {_DAMAGED}")
    return Run(path=path, spec=spec, vocab=vocab, weights=weights, meta=meta, config=config)


def history_until(path: Path, step: int) -> bytes:
    """The lines of ``history.jsonl`` up to ``step``: records of later steps, which will be trained
    again, and a last line cut short by a killed process are dropped."""
    try:
        lines = read_limited(path, RunError, "a history").decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise RunError(f"{path}: cannot read ({exc.strerror or exc})") from None
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if (
            isinstance(record, dict)
            and isinstance(record.get("step", 0), int)
            and record.get("step", 0) <= step
        ):
            kept.append(line + "\n")
    return "".join(kept).encode("utf-8")


@dataclass
class RunRecord:
    """``run.json``: the format, who trains the run, and its progress at the last checkpoint."""

    backend: str
    device: str = "cpu"
    status: str = "training"  # training, finished, early-stopped, time-limit, interrupted
    step: int = 0
    tokens: int = 0
    seconds: float = 0.0
    best_val_loss: float | None = None
    best_step: int | None = None
    waited: int = 0  # validations since the best one
    schedule: dict[str, Any] = field(default_factory=dict)  # the learning-rate schedule's state
    format: str = "seqpred-run"
    format_version: int = FORMAT_VERSION
    seqpred_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path) -> RunRecord:
        """The record of ``data`` (checked by :func:`check_format`); a RunError naming what is wrong."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        kinds: dict[str, Any] = {"step": int, "tokens": int, "waited": int, "seconds": (int, float)}
        kinds["backend"] = str
        for name, kind in kinds.items():
            if name in values and (not isinstance(values[name], kind) or isinstance(values[name], bool)):
                raise RunError(f"{path / RUN_FILE}: {name} has the wrong type; {_DAMAGED}")
        if not isinstance(values.get("schedule", {}) or {}, dict):
            raise RunError(f"{path / RUN_FILE}: schedule must be an object; {_DAMAGED}")
        values["schedule"] = values.get("schedule") or {}
        return cls(**values)


def is_run(path: Path) -> bool:
    return (path / RUN_FILE).exists()
