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

Every file is written to a temporary name and renamed into place, and ``run.json`` is written
last: a run folder is either the previous checkpoint or the new one, never a broken mix.
Nothing is ever unpickled: weights are safetensors, everything else JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .errors import RunError, SeqpredError, VocabError
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
HISTORY_FILE = "history.jsonl"
CHECKPOINTS = {"latest": LATEST_FILE, "best": BEST_FILE}

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the user's usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def save_tensors(
    path: Path, tensors: Mapping[str, np.ndarray], metadata: dict[str, str] | None = None
) -> None:
    from safetensors.numpy import save

    arrays = {name: np.asarray(value, order="C") for name, value in tensors.items()}  # keeps 0-d shapes
    atomic_write_bytes(path, save(arrays, metadata=metadata))


def load_tensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a safetensors file; any other content (a pickle, a truncated file) is refused."""
    from safetensors.numpy import load

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except OSError as exc:
        raise RunError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) < 8:
        raise RunError(f"{path}: not a safetensors file (only {len(data)} bytes)")
    header_size = int.from_bytes(data[:8], "little")
    if header_size > len(data) - 8:
        raise RunError(f"{path}: not a safetensors file, or truncated (header says {header_size:,} bytes)")
    try:
        return load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise RunError(f"{path}: not a valid safetensors file ({str(exc).splitlines()[0]})") from None


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path.parent}: not a seqpred run ({path.name} is missing)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: {what} is not valid JSON ({exc})") from None


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


def check_format(meta: Any, path: Path) -> dict[str, Any]:
    if not isinstance(meta, dict) or meta.get("format") != "seqpred-run":
        raise RunError(f"{path}: not a seqpred run ({RUN_FILE} does not describe one)")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise RunError(f"{path}: {RUN_FILE} has no valid format_version")
    if version > FORMAT_VERSION:
        needed = meta.get("seqpred_version", "a newer release")
        raise RunError(
            f"{path}: run format version {version} is newer than this seqpred ({__version__}) reads "
            f"(up to {FORMAT_VERSION}); upgrade to seqpred {needed} or later"
        )
    return meta


def load_run(path: str | Path, checkpoint: str = "best") -> Run:
    """Load and check a run folder; ``checkpoint`` is ``best`` (falls back to latest) or ``latest``."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: no such run folder")
    if not path.is_dir():
        raise RunError(f"{path}: not a folder; give the run folder that train --out wrote")
    meta = check_format(read_json(path / RUN_FILE, "run metadata"), path)
    spec_data = read_json(path / MODEL_FILE, "model spec")
    try:
        spec = ModelSpec.from_dict(spec_data) if isinstance(spec_data, dict) else None
    except (SeqpredError, TypeError) as exc:
        raise RunError(f"{path / MODEL_FILE}: invalid model spec ({exc})") from None
    if spec is None:
        raise RunError(f"{path / MODEL_FILE}: the model spec must be a JSON object")
    try:
        vocab = Vocab.from_json((path / VOCAB_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: not a seqpred run ({VOCAB_FILE} is missing)") from None
    except (VocabError, UnicodeDecodeError) as exc:
        raise RunError(f"{path / VOCAB_FILE}: {exc}") from None
    if len(vocab) != spec.vocab_size:
        raise RunError(
            f"{path / VOCAB_FILE}: holds {len(vocab)} tokens but the model was built for {spec.vocab_size}"
        )
    if checkpoint not in CHECKPOINTS:
        raise RunError(f"unknown checkpoint {checkpoint!r}; choose best or latest")
    weights_path = path / CHECKPOINTS[checkpoint]
    if checkpoint == "best" and not weights_path.exists():
        weights_path = path / LATEST_FILE
    weights = check_weights(spec, load_tensors(weights_path), str(weights_path))
    config_path = path / TRAIN_FILE
    config = read_json(config_path, "training configuration") if config_path.exists() else {}
    return Run(path=path, spec=spec, vocab=vocab, weights=weights, meta=meta, config=config)


def new_meta(backend: str) -> dict[str, Any]:
    return {
        "format": "seqpred-run",
        "format_version": FORMAT_VERSION,
        "seqpred_version": __version__,
        "backend": backend,
    }


def is_run(path: Path) -> bool:
    return (path / RUN_FILE).exists()
