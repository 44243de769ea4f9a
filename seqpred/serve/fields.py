"""Checking the fields of a JSON request: types, ranges and unknown names, each error naming its field."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, TypeVar

#: The type of a field's default: the field's own type, or None for an optional field.
Default = TypeVar("Default", int, float, None)

_MISSING = object()


class BadRequest(Exception):
    """A request the server refuses: ``status`` (4xx), a message, and the field at fault if any."""

    def __init__(self, message: str, param: str | None = None, *, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


class Fields:
    """Typed access to a request body's fields; an unknown field is refused at once."""

    def __init__(self, body: dict[str, Any], known: Iterable[str]):
        self.body = body
        unknown = [name for name in body if name not in set(known)]
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r}", unknown[0], code="unknown_field")

    def _get(self, name: str) -> Any:
        value = self.body.get(name, _MISSING)
        return _MISSING if value is None else value

    def present(self, name: str) -> bool:
        return self._get(name) is not _MISSING

    def raw(self, name: str, default: Any = None) -> Any:
        value = self._get(name)
        return default if value is _MISSING else value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise BadRequest(f"{name} must be true or false, got {value!r}", name)
        return value

    def integer(
        self, name: str, default: Default, low: int | None = None, high: int | None = None
    ) -> int | Default:
        value = self._get(name)
        if value is _MISSING:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadRequest(f"{name} must be an integer, got {value!r}", name)
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise BadRequest(f"{name} must be {span}, got {value}", name)
        return value

    def number(
        self,
        name: str,
        default: Default,
        *,
        low: float,
        high: float,
        low_open: bool = False,
    ) -> float | Default:
        value = self._get(name)
        if value is _MISSING:
            return default
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise BadRequest(f"{name} must be a number, got {value!r}", name)
        if value < low or (low_open and value == low) or value > high:
            opening = "(" if low_open else "["
            raise BadRequest(f"{name} must be in {opening}{low:g}, {high:g}], got {value:g}", name)
        return float(value)

    def string(self, name: str, default: str, max_chars: int | None = None) -> str:
        value = self._get(name)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise BadRequest(f"{name} must be a string, got {type(value).__name__}", name)
        if max_chars is not None and len(value) > max_chars:
            raise BadRequest(
                f"{name} is {len(value):,} characters long, over the limit of {max_chars:,}", name
            )
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(name, default)
        if value not in choices:
            raise BadRequest(f"{name} must be one of {', '.join(choices)}, got {value!r}", name)
        return value

    def stop(self, name: str = "stop", max_items: int = 4, max_chars: int = 1000) -> list[str]:
        """A string or a list of up to ``max_items`` non-empty strings."""
        value = self._get(name)
        if value is _MISSING:
            return []
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise BadRequest(f"{name} must be a string or a list of strings", name)
        if len(items) > max_items:
            raise BadRequest(f"{name} holds {len(items)} strings, at most {max_items} are allowed", name)
        if any(s == "" or len(s) > max_chars for s in items):
            raise BadRequest(f"each {name} string must be 1 to {max_chars} characters long", name)
        return items
