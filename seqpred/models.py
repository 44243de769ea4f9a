"""Building a backend's model for a spec and checking that it honours the contract.

Training, generation, evaluation and the conformance kit all build their models here.
"""

from __future__ import annotations

from .backend import MODEL_METHODS, Model, missing_methods
from .errors import BackendError
from .registry import get_registry
from .spec import ModelSpec


def build_model(backend_name: str, spec: ModelSpec, device: str, seed: int) -> Model:
    """Create a backend's model and check it honours the contract."""
    registry = get_registry()
    backend = registry.get(backend_name)
    if spec.objective not in getattr(backend, "objectives", ("sequence", "last")):
        raise BackendError(f"backend {backend_name!r} does not support the {spec.objective!r} objective")
    try:
        model = backend.create_model(spec, device=device, seed=seed)
    except (ImportError, RuntimeError, ValueError) as exc:  # the contract's way to report a user's problem
        raise BackendError(f"backend {backend_name!r} could not build the model: {exc}") from None
    except Exception as exc:  # anything else is the plugin's bug; still one line, naming who to ask
        dist = registry.distribution_of(backend_name).distribution
        raise BackendError(
            f"backend {backend_name!r} ({dist}) failed to build the model: {type(exc).__name__}: {exc}"
        ) from None
    missing = missing_methods(model, MODEL_METHODS)
    if missing:
        dist = registry.distribution_of(backend_name).distribution
        raise BackendError(f"backend {backend_name!r} ({dist}) returned a model without {', '.join(missing)}")
    return model
