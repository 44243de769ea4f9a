"""The device strings every command takes, one vocabulary for every backend.

==========  ==========================================================
``cpu``     the processor
``cuda``    the first GPU (NVIDIA CUDA; ROCm builds answer to it too)
``cuda:N``  GPU number N, counted from 0
``auto``    a GPU when the backend sees one, else the processor
==========  ==========================================================

A backend declares the kinds it runs on in ``Backend.devices`` (``("cpu",)`` or ``("cpu", "cuda")``).
The core checks a device against that list before it asks the backend for a model, so a backend
only ever receives one of the strings above, with a kind it declared (or ``auto``).
"""

from __future__ import annotations

import re

from .errors import UsageError

KINDS: tuple[str, ...] = ("cpu", "cuda")
_DEVICE = re.compile(r"(cpu|cuda)(?::(\d+))?|auto")


def parse_device(text: str) -> str:
    """``text`` normalised (lower case, no spaces), or a UsageError naming the vocabulary."""
    device = str(text).strip().lower()
    match = _DEVICE.fullmatch(device)
    if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
        raise UsageError(f"unknown device {text!r}; use cpu, cuda, cuda:N or auto")
    return device


def kind(device: str) -> str:
    """``cpu``, ``cuda`` or ``auto`` for a device string already parsed."""
    return device.partition(":")[0]


def check_device(backend_name: str, offered: tuple[str, ...], device: str) -> str:
    """The parsed ``device`` if the backend declares its kind; else a UsageError listing what it offers."""
    device = parse_device(device)
    if kind(device) != "auto" and kind(device) not in offered:
        shown = ", ".join([*offered, "auto"])
        raise UsageError(f"backend {backend_name!r} does not run on {device!r}; it offers: {shown}")
    return device
