"""Discovery of backends through entry points in the group ``seqpred``.

Built-in backends are distributions under ``plugins/`` and are found exactly like a third party's.
Each entry point is loaded and registered in its own guarded call, so that one broken plugin is
reported and every other keeps working.

Environment:

* ``SEQPRED_LOAD_PLUGINS``: when set, a comma-separated list of distributions to load besides the
  ones shipped with seqpred (empty: only those).
* ``SEQPRED_STRICT_PLUGINS=1``: a plugin that fails to load is an error, not a warning.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .backend import BACKEND_ATTRIBUTES, Backend, missing_methods
from .errors import BackendError, UsageError, first_line

ENTRY_POINT_GROUP = "seqpred"

#: Distributions shipped with seqpred: they load whatever SEQPRED_LOAD_PLUGINS says.
SHIPPED_DISTRIBUTIONS = frozenset({"seqpred-torch", "seqpred-keras", "seqpred-numpy", "seqpred-onnx"})


@dataclass
class PluginInfo:
    """One entry point in the group ``seqpred`` and what became of it."""

    entry_point: str
    distribution: str
    version: str
    status: str = "ok"  # ok | failed | disabled
    error: str = ""
    backends: list[str] = field(default_factory=list)
    module: Any = None


@dataclass
class BackendEntry:
    backend: Backend
    plugin: PluginInfo

    @property
    def name(self) -> str:
        return self.backend.name


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _describe(exc: BaseException) -> str:
    line = first_line(exc)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


class Registry:
    """The plugin manager plus the backends its plugins registered."""

    def __init__(self, entry_points: list[metadata.EntryPoint] | None = None, *, strict: bool | None = None):
        self.pm = pluggy.PluginManager("seqpred")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.backends: dict[str, BackendEntry] = {}
        self.warnings: list[str] = []
        self.strict = (
            os.environ.get("SEQPRED_STRICT_PLUGINS", "") not in ("", "0") if strict is None else strict
        )
        if entry_points is None:
            entry_points = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
        allowed = self._allowed_distributions()
        for ep in entry_points:
            self._load(ep, allowed)
        if allowed is not None:
            installed = {_normalise(info.distribution) for info in self.plugins}
            for name in sorted(allowed - installed - SHIPPED_DISTRIBUTIONS):
                self.warnings.append(
                    f"SEQPRED_LOAD_PLUGINS names {name!r}, but no installed distribution of that name "
                    f"has a seqpred plugin; check the spelling (see seqpred backends)"
                )

    @staticmethod
    def _allowed_distributions() -> frozenset[str] | None:
        value = os.environ.get("SEQPRED_LOAD_PLUGINS")
        if value is None:
            return None
        chosen = {_normalise(n.strip()) for n in value.split(",") if n.strip()}
        return frozenset(chosen | SHIPPED_DISTRIBUTIONS)

    def _fail(self, info: PluginInfo, message: str) -> None:
        info.status, info.error = "failed", message
        text = f"plugin {info.distribution} ({info.entry_point}) failed to load: {message}"
        if self.strict:
            raise BackendError(text + " (SEQPRED_STRICT_PLUGINS is set)")
        self.warnings.append(text)

    def _load(self, ep: metadata.EntryPoint, allowed: frozenset[str] | None) -> None:
        dist = getattr(ep, "dist", None)
        info = PluginInfo(
            entry_point=ep.name,
            distribution=dist.metadata["Name"] if dist is not None else ep.value.split(":")[0],
            version=dist.version if dist is not None else "",
        )
        self.plugins.append(info)
        if allowed is not None and _normalise(info.distribution) not in allowed:
            info.status = "disabled"
            info.error = "not named in SEQPRED_LOAD_PLUGINS"
            return
        try:
            module = ep.load()
            # pluggy checks each hook implementation against its spec here, and check_pending
            # catches implementations of hooks that do not exist (a misspelt name).
            self.pm.register(module, name=f"{info.distribution}:{ep.name}")
            info.module = module
            self.pm.check_pending()
        except Exception as exc:  # a broken plugin must not break the tool
            if info.module is not None:
                self.pm.unregister(info.module)
                info.module = None
            self._fail(info, _describe(exc))
            return
        added: list[Backend] = []
        try:
            self._only("seqpred_register_backends", module)(register=added.append)
            self._check_backends(info, added)
        except Exception as exc:
            self.pm.unregister(module)
            self._fail(info, _describe(exc))
            return
        for backend in added:
            clash = self.backends.get(backend.name)
            if clash is not None:
                raise BackendError(
                    f"backend name {backend.name!r} is claimed by both {clash.plugin.distribution} and "
                    f"{info.distribution}; uninstall one, or choose with "
                    f"SEQPRED_LOAD_PLUGINS=<distribution to keep>"
                )
            self.backends[backend.name] = BackendEntry(backend, info)
            info.backends.append(backend.name)

    @staticmethod
    def _check_backends(info: PluginInfo, added: list[Backend]) -> None:
        for backend in added:
            missing = missing_methods(backend, BACKEND_ATTRIBUTES)
            if missing:
                raise BackendError(f"registered object {backend!r} lacks {', '.join(missing)}")
            if not isinstance(backend.name, str) or not backend.name:
                raise BackendError(f"registered backend {backend!r} has no name")

    def get(self, name: str) -> Backend:
        """The backend called ``name``, or a :class:`BackendError` that lists the available ones."""
        entry = self.backends.get(name)
        if entry is not None:
            self._report_failures()
            return entry.backend
        for info in self.plugins:
            if info.status == "failed" and (name in (info.entry_point, _normalise(info.distribution))):
                raise BackendError(
                    f"backend {name!r} failed to load ({info.distribution}): {info.error}; reinstall or fix "
                    f"{info.distribution}, or choose another backend (see seqpred backends)"
                )
        available = ", ".join(sorted(self.backends)) or "none (install a backend, e.g. plugins/seqpred-torch)"
        raise BackendError(f"unknown backend {name!r}; available: {available}")

    def trainer(self, name: str) -> Backend:
        """The backend called ``name`` if it can train; a :class:`UsageError` naming those that can if
        it is inference-only (``trains = False``)."""
        backend = self.get(name)
        if getattr(backend, "trains", True):
            return backend
        able = sorted(n for n, entry in self.backends.items() if getattr(entry.backend, "trains", True))
        choices = f"one of {', '.join(able)}" if able else "a backend that trains, e.g. seqpred-torch"
        raise UsageError(
            f"backend {name!r} cannot train (inference only); train with {choices}, "
            f"then generate or evaluate with --backend {name}"
        )

    def _only(self, hook: str, module: Any):
        """A caller of ``hook`` that reaches ``module``'s implementation alone, so that what it adds is
        attributed to its distribution and its failure to it alone."""
        return self.pm.subset_hook_caller(
            hook, remove_plugins=[p for p in self.pm.get_plugins() if p is not module]
        )

    def plugin_commands(self) -> list[tuple[PluginInfo, Any]]:
        """(plugin, typer.Typer) for every loaded plugin that adds subcommands to the CLI."""
        import typer

        found = []
        for info in self.plugins:
            if info.status != "ok" or info.module is None:
                continue
            app = typer.Typer()
            try:
                self._only("seqpred_register_commands", info.module)(app=app)
            except Exception as exc:
                self.warnings.append(
                    f"plugin {info.distribution} failed to add its commands: {_describe(exc)}"
                )
                continue
            if app.registered_commands or app.registered_groups:
                found.append((info, app))
        return found

    def report_warnings(self) -> None:
        """Print the pending warnings (plugins that failed to load, unknown names) on stderr, once."""
        self._report_failures()

    def _report_failures(self) -> None:
        """Warn once, on stderr, about plugins that failed to load, when another backend is used."""
        for warning in self.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        self.warnings = []

    def distribution_of(self, name: str) -> PluginInfo:
        return self.backends[name].plugin


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use (not at import of seqpred)."""
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry


def reset_registry() -> None:
    """Forget the loaded plugins (for tests and for tools that change the environment)."""
    global _registry
    _registry = None
