"""Bounded reads: every file seqpred reads (a corpus, a prime file, a run's JSON and safetensors
files) is a regular file of at most :func:`max_read_bytes`, read in one go.

A FIFO without a writer would block forever and a device such as ``/dev/zero`` never ends, so a
file that is not regular is refused. The file is opened without blocking and checked with
``fstat`` on the open descriptor, so a FIFO swapped in after a first look is refused as well.
The limit is 4 GiB unless ``SEQPRED_MAX_READ_BYTES`` says otherwise. Training corpora are read the
same way (:func:`open_limited`) but streamed, a few MB at a time, into the token cache: a corpus
larger than memory needs only the limit raised to its size.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import SeqpredError, UsageError

DEFAULT_MAX_READ_BYTES = 4 * 1024**3
MAX_READ_VARIABLE = "SEQPRED_MAX_READ_BYTES"


def max_read_bytes() -> int:
    """The largest file seqpred reads: ``SEQPRED_MAX_READ_BYTES`` or 4 GiB."""
    value = os.environ.get(MAX_READ_VARIABLE, "").strip().replace("_", "")
    if not value:
        return DEFAULT_MAX_READ_BYTES
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"{MAX_READ_VARIABLE} must be a whole number of bytes, at least 1, got {value!r}")
    return int(value)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


@contextlib.contextmanager
def open_limited(path: Path, error: type[SeqpredError] = SeqpredError, what: str = "") -> Iterator[BinaryIO]:
    """The regular file ``path`` open for reading, checked as :func:`read_limited` checks it; reads
    from it past the limit (a file that grows) are the caller's to refuse, with :func:`grew_error`.

    ``OSError`` (missing, permission denied) propagates: callers word those themselves.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            pipe = " (for a pipe, use - and standard input)" if what == "text" else ""
            raise error(
                f"{path}: is {_kind(info.st_mode)}, not a regular file; seqpred reads "
                f"{what or 'files'} only from regular files{pipe}"
            )
        limit = max_read_bytes()
        if info.st_size > limit:
            raise error(
                f"{path}: {info.st_size:,} bytes, over the read limit of {limit:,}; "
                f"raise it with {MAX_READ_VARIABLE}=BYTES if you have the memory"
            )
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb", buffering=0) as handle:
        yield handle


def grew_error(path: Path, error: type[SeqpredError] = SeqpredError) -> SeqpredError:
    """The error for a file that grew past the read limit while being read."""
    return error(f"{path}: grew past the read limit of {max_read_bytes():,} bytes while being read")


def read_limited(path: Path, error: type[SeqpredError] = SeqpredError, what: str = "") -> bytes:
    """The bytes of the regular file ``path``; ``error`` naming the problem for anything else.

    ``OSError`` (missing, permission denied) propagates: callers word those themselves.
    """
    with open_limited(path, error, what) as handle:
        limit = max_read_bytes()
        chunks = []
        total = 0
        while True:
            chunk = handle.read(min(1 << 24, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # the file grew while being read
                raise grew_error(path, error)
        return b"".join(chunks)
