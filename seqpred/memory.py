"""Up-front memory estimates: a request that cannot fit in memory is refused with the figure before
any of it is allocated, on every backend, rather than failing part-way with an allocator's error."""

from __future__ import annotations

import os

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


def check_fits(needed: float, what: str, advice: str) -> None:
    """Refuse ``what`` when its estimated ``needed`` bytes exceed the memory available now."""
    available = available_bytes()
    if needed > available:
        raise UsageError(
            f"{what} needs about {_size(needed)} of memory, more than the {_size(available)} "
            f"available; {advice}"
        )


def training_bytes(spec, batch_size: int, corpus_tokens: int) -> float:
    """Memory a training of ``spec`` needs at least, whatever the backend: the weights with their
    gradients and Adam's two moments, one batch's activations and logits, and the token ids."""
    from .weights import canonical_shapes

    parameters = sum(_product(shape) for shape in canonical_shapes(spec).values())
    positions = float(batch_size) * spec.seq_len
    activations = positions * spec.layers * spec.hidden * 10 * 4  # gates, cell and hidden state
    logits = positions * spec.vocab_size * 3 * 4  # logits, probabilities, their gradient
    return 4.0 * 4 * parameters + activations + logits + 8.0 * corpus_tokens


def _product(shape: tuple[int, ...]) -> float:
    result = 1.0
    for size in shape:
        result *= size
    return result
