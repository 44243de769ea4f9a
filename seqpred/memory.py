"""Up-front memory estimates: a request that cannot fit in memory is refused with the figure before
any of it is allocated, on every backend, rather than failing part-way with an allocator's error."""

from __future__ import annotations

import os
import shutil
import subprocess

from .devices import kind
from .errors import UsageError


def available_bytes() -> int:
    """Memory this process can still take: MemAvailable where Linux reports it, else all of RAM."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - every POSIX system has these
        return 2**63 - 1


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def gpu_free_bytes(device: str) -> int | None:
    """Free memory of the GPU ``device`` (``cuda`` or ``cuda:N``) as ``nvidia-smi`` reports it, or
    None where it cannot tell (no NVIDIA driver, another vendor, a timeout): then the framework's own
    allocator is the judge. Framework-free, so the check costs no import and works for every backend."""
    program = shutil.which("nvidia-smi")
    if program is None:
        return None
    _, _, index = device.partition(":")
    try:
        answer = subprocess.run(
            [program, "--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i", index or "0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return int(answer.stdout.split()[0]) * 1024 * 1024  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def memory_device(device: str, offered: tuple[str, ...]) -> str:
    """Where a model for ``device`` will hold its tensors, as far as the core can tell: ``cpu`` or
    the GPU's device string. ``auto`` counts as the first GPU when the backend offers GPUs and one is
    reported, the processor otherwise."""
    if kind(device) == "auto":
        return "cuda" if "cuda" in offered and gpu_free_bytes("cuda") is not None else "cpu"
    return device


def check_fits(needed: float, what: str, advice: str, device: str = "cpu") -> None:
    """Refuse ``what`` when its estimated ``needed`` bytes exceed the memory available now: the
    machine's memory, or for a GPU ``device`` (``cuda``, ``cuda:N``) that GPU's free memory."""
    if kind(device) == "cuda":
        free = gpu_free_bytes(device)
        if free is not None and needed > free:
            raise UsageError(
                f"{what} needs about {_size(needed)} of GPU memory, more than the {_size(free)} free "
                f"on {device}; {advice}"
            )
        return
    available = available_bytes()
    if needed > available:
        raise UsageError(
            f"{what} needs about {_size(needed)} of memory, more than the {_size(available)} "
            f"available; {advice}"
        )


def training_bytes(spec, batch_size: int, corpus_tokens: int) -> float:
    """Memory a training of ``spec`` needs at least, whatever the backend: the weights with their
    gradients and Adam's two moments, one batch's activations and logits (on the model's device),
    and the token ids (in the machine's memory; pass 0 for the device's share alone)."""
    from .weights import canonical_shapes

    parameters = sum(_product(shape) for shape in canonical_shapes(spec).values())
    positions = float(batch_size) * spec.seq_len
    activations = positions * spec.layers * spec.hidden * 10 * 4  # gates, cell and hidden state
    logits = positions * spec.vocab_size * 3 * 4  # logits, probabilities, their gradient
    return 4.0 * 4 * parameters + activations + logits + corpus_bytes(corpus_tokens)


def corpus_bytes(tokens: int) -> float:
    """The token ids of a corpus, as training holds them (int64, in the machine's memory)."""
    return 8.0 * tokens


def _product(shape: tuple[int, ...]) -> float:
    result = 1.0
    for size in shape:
        result *= size
    return result
