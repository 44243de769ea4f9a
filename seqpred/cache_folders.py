"""Where seqpred keeps what it can rebuild: one folder per kind under the user's cache folder."""

from __future__ import annotations

import os
from pathlib import Path


def cache_folder(variable: str, kind: str) -> Path:
    """``$variable`` when set, else ``seqpred/KIND`` under the XDG cache folder (``$XDG_CACHE_HOME``,
    ignored when relative as the spec says, else ``~/.cache``)."""
    override = os.environ.get(variable, "").strip()
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "seqpred" / kind
