"""Building a backend's model for a spec: the checks before, and the guard around it after.

Training, generation, evaluation, serving and the conformance kit all build their models here.

Before the backend is asked for a model, the core checks what it can check without it: the
objective and the device against what the backend declares, and that the modules it requires are
installed. The model it returns is wrapped (:class:`GuardedModel`) so that an exception from inside
the backend reaches the user as one line naming the backend's distribution, with ``--debug`` for
the traceback, whatever command made the call.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from typing import Any

from .backend import MODEL_METHODS, Backend, Model, missing_methods
from .devices import check_device
from .errors import BackendError, SeqpredError, UsageError, first_line
from .registry import get_registry
from .spec import ModelSpec


def missing_requirements(backend: Backend) -> list[str]:
    """The modules of ``backend.requires`` that are not installed, found without importing them."""
    missing = []
    for module in getattr(backend, "requires", ()):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing


def build_model(
    backend_name: str,
    spec: ModelSpec,
    device: str,
    seed: int,
    *,
    replicas: Any = None,
    precision: str = "fp32",
) -> Model:
    """Create a backend's model, checked against the contract and guarded (:class:`GuardedModel`).

    ``replicas`` (a :class:`seqpred.distributed.Replicas`) and ``precision`` other than ``fp32`` are
    passed on only to a backend that declares them, and refused in one line by one that does not.
    """
    registry = get_registry()
    backend = registry.get(backend_name)
    extra: dict[str, Any] = {}
    if replicas is not None:
        if getattr(backend, "data_parallel", None) is None:
            raise BackendError(f"backend {backend_name!r} cannot train on several replicas")
        extra["replicas"] = replicas
    if precision != "fp32":
        check_precision(backend_name, backend, precision)
        extra["precision"] = precision
    if spec.objective not in getattr(backend, "objectives", ("sequence", "last")):
        raise BackendError(f"backend {backend_name!r} does not support the {spec.objective!r} objective")
    device = check_device(backend_name, tuple(getattr(backend, "devices", ("cpu",))), device)
    missing = missing_requirements(backend)
    if missing:
        how = getattr(backend, "install", "") or f"pip install {' '.join(missing)}"
        raise BackendError(f"backend {backend_name!r} needs {', '.join(missing)}, not installed: {how}")
    dist = registry.distribution_of(backend_name).distribution
    try:
        model = backend.create_model(spec, device=device, seed=seed, **extra)
    except (ImportError, RuntimeError, ValueError) as exc:  # the contract's way to report a user's problem
        raise BackendError(f"backend {backend_name!r} could not build the model: {_said(exc)}") from exc
    except MemoryError as exc:
        raise BackendError(
            f"backend {backend_name!r} ran out of memory building a model of {spec.parameter_count():,} "
            f"parameters; choose a smaller --hidden, --layers or --embedding"
        ) from exc
    except SeqpredError:
        raise
    except Exception as exc:  # anything else is the plugin's bug; still one line, naming who to ask
        raise BackendError(
            f"backend {backend_name!r} ({dist}) failed to build the model: {type(exc).__name__}: {_said(exc)}"
        ) from exc
    missing_names = missing_methods(model, MODEL_METHODS)
    if missing_names:
        raise BackendError(
            f"backend {backend_name!r} ({dist}) returned a model without {', '.join(missing_names)}"
        )
    return GuardedModel(model, backend_name, dist)  # type: ignore[return-value]


def check_precision(backend_name: str, backend: Backend, precision: str) -> None:
    """Refuse, in one line, a training precision the backend does not declare."""
    offered = tuple(getattr(backend, "precisions", ("fp32",)))
    if precision not in offered:
        raise UsageError(
            f"backend {backend_name!r} does not train in --precision {precision}; "
            f"it offers: {', '.join(offered)}"
        )


def implements(model: Any, method: str) -> bool:
    """Whether the backend's model overrides the contract's optional ``method``."""
    inner = getattr(model, "wrapped", model)
    return getattr(type(inner), method, None) is not getattr(Model, method, None)


def _said(exc: BaseException) -> str:
    return first_line(exc) or type(exc).__name__


class GuardedModel:
    """A backend's model whose calls turn an unexpected exception into one :class:`BackendError`.

    Attributes pass through; ``wrapped`` is the backend's own model. ``NotImplementedError`` (an
    optional method) and seqpred's own errors pass unchanged.
    """

    def __init__(self, model: Model, backend: str, distribution: str):
        self.wrapped = model
        self._backend = backend
        self._distribution = distribution

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.wrapped, name)
        if name.startswith("_") or not inspect.ismethod(value):
            return value  # attributes, the framework's own objects (a torch module is callable)

        @functools.wraps(value)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return value(*args, **kwargs)
            except (SeqpredError, NotImplementedError, KeyboardInterrupt):
                raise
            except MemoryError as exc:
                raise BackendError(
                    f"backend {self._backend!r} ran out of memory in {name}; try a smaller batch, "
                    f"model or --num-samples"
                ) from exc
            except Exception as exc:
                raise BackendError(
                    f"backend {self._backend!r} ({self._distribution}) failed in {name}: "
                    f"{type(exc).__name__}: {_said(exc)}"
                ) from exc

        self.__dict__[name] = guarded  # looked up directly from now on
        return guarded
