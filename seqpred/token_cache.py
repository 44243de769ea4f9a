"""The token cache: a corpus encoded once, streaming, into a file of token ids that training maps
into memory, so a corpus larger than memory trains in the memory of a small one.

An entry is found by a hash of the corpus's content (every file's bytes, in reading order), the
tokenisation (level, lower-casing) and, when a run brings its own, the vocabulary. Building one
streams the text twice, a few MB at a time: once for the vocabulary, once to write the ids.

Where: ``$SEQPRED_TOKEN_CACHE``, else ``$XDG_CACHE_HOME/seqpred/tokens``, else
``~/.cache/seqpred/tokens``. Entries may be deleted at any time; a folder that cannot be written
is replaced by a temporary file that lasts as long as the training.

An entry is one file, ``<hash>.tokens``: the ids (the smallest unsigned type that holds them),
then a JSON trailer (vocabulary, count, type, a BLAKE2 digest of the ids), its length and a magic
string. It is written under a temporary name and renamed into place, so a reader never sees half of
one; it is opened with ``O_NOFOLLOW``, so a link planted at its name is never followed (it is
replaced). An entry whose size, trailer or digest does not match is rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from . import cache_folders
from .errors import CorpusError
from .text_sources import CorpusFiles, corpus_files, raw_chunks, stream_text
from .vocab import Vocab, compact_dtype, tokenize

CACHE_VARIABLE = "SEQPRED_TOKEN_CACHE"
FORMAT = 1
MAGIC = b"seqpred-tokens-1"
_TRAILER = len(MAGIC) + 8
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_READ = 1 << 22

#: ``progress(description, total_bytes)``: a context manager giving a task whose ``advance(bytes)``
#: hears the bytes read (``seqpred.progress.task`` is one).
Progress = Callable[[str, int], contextlib.AbstractContextManager[Any]]


class _Quiet:
    def advance(self, amount: float = 1) -> None: ...


@contextlib.contextmanager
def _no_progress(description: str, total: int) -> Iterator[_Quiet]:
    yield _Quiet()


def cache_folder() -> Path:
    """Where token files are kept: ``$SEQPRED_TOKEN_CACHE``, else the XDG cache folder's
    ``seqpred/tokens`` (a relative ``$XDG_CACHE_HOME`` is ignored, as the spec says)."""
    return cache_folders.cache_folder(CACHE_VARIABLE, "tokens")


@dataclass
class CorpusTokens:
    """A corpus's vocabulary and its ids, mapped read-only from ``path`` (None: a temporary file)."""

    vocab: Vocab
    ids: np.ndarray
    path: Path | None
    built: bool  # encoded now, rather than found in the cache


def corpus_tokens(
    source: str | Path,
    level: str = "char",
    *,
    lower: bool = False,
    vocab: Vocab | None = None,
    progress: Progress | None = None,
    folder: Path | None = None,
) -> CorpusTokens:
    """The vocabulary (``vocab``, or built from the text) and the mapped ids of the corpus ``source``
    (a file, a folder of ``.txt`` files, or ``-``), from the cache or encoded into it now."""
    show = progress or _no_progress
    cache = folder if folder is not None else cache_folder()
    usable = _prepare(cache)
    with corpus_files(source, spool=cache if usable else None) as files:
        if not usable:
            return _build(files, level, lower, vocab, show, None, None)
        with show(f"hashing {files.name}", files.size) as work:
            content = _content_digest(files, work.advance)
        own = _key(content, level, lower, None)
        with _locked(cache / f"{own}.lock"):
            found = _load(cache / f"{own}.tokens")
            if found is not None and (vocab is None or found.vocab == vocab):
                return found
            if vocab is None:
                return _build(files, level, lower, None, show, cache, own)
        given = _key(content, level, lower, vocab)
        with _locked(cache / f"{given}.lock"):
            found = _load(cache / f"{given}.tokens")
            if found is not None and found.vocab == vocab:
                return found
            return _build(files, level, lower, vocab, show, cache, given)


def _prepare(cache: Path) -> bool:
    """Whether ``cache`` is a folder this process can write entries into (made if missing)."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        info = os.lstat(cache)
        return stat.S_ISDIR(info.st_mode) and os.access(cache, os.W_OK | os.X_OK)
    except OSError:
        return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``, so that processes encoding the same corpus at once (the
    replicas of one run) encode it once."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600)
    except OSError:  # a link at the lock's name, or no room: go without the lock
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _content_digest(files: CorpusFiles, advance: Callable[[int], None]) -> str:
    digest = hashlib.blake2b(digest_size=20)
    digest.update(b"folder" if files.folder else b"file")
    for path, label in zip(files.paths, files.labels, strict=True):
        digest.update(b"\0file\0")
        for data in raw_chunks(path, label):
            digest.update(data)
            advance(len(data))
    return digest.hexdigest()


def _key(content: str, level: str, lower: bool, vocab: Vocab | None) -> str:
    what: dict[str, Any] = {"format": FORMAT, "content": content, "level": level, "lower": lower}
    if vocab is not None:
        what["vocab"] = vocab.tokens
    text = json.dumps(what, ensure_ascii=False, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


# -- building ---------------------------------------------------------------------------------


def build_vocab(files: CorpusFiles, level: str, lower: bool, advance: Callable[[int], None]) -> Vocab:
    """The vocabulary of the corpus, in one streaming pass: what ``Vocab.build`` gives on its text."""
    if level != "char":
        words: set[str] = set()
        for piece in stream_text(files, lower=lower, advance=advance):
            words.update(tokenize(piece, "word"))
        return Vocab(sorted(words), "word")
    ascii_seen = np.zeros(128, dtype=bool)
    codes: set[int] = set()
    for piece in stream_text(files, lower=lower, advance=advance):
        if piece.isascii():
            ascii_seen |= np.bincount(np.frombuffer(piece.encode("ascii"), np.uint8), minlength=128) > 0
        else:
            codes.update(np.unique(np.frombuffer(piece.encode("utf-32-le"), np.uint32)).tolist())
    codes.update(np.flatnonzero(ascii_seen).tolist())
    return Vocab([chr(c) for c in sorted(codes)], "char")


def _build(
    files: CorpusFiles,
    level: str,
    lower: bool,
    vocab: Vocab | None,
    show: Progress,
    cache: Path | None,
    key: str | None,
) -> CorpusTokens:
    total = files.size
    if vocab is None:
        with show(f"vocabulary of {files.name}", total) as work:
            vocab = build_vocab(files, level, lower, work.advance)
    dtype = np.dtype(compact_dtype(len(vocab)))
    if cache is None or key is None:
        # Unlinked at once; the map keeps it alive as long as the ids are in use.
        with tempfile.TemporaryFile() as handle:
            count, _ = _write_ids(handle, files, vocab, lower, dtype, show)
            return CorpusTokens(vocab, _map(handle, dtype, count), None, built=True)
    final = cache / f"{key}.tokens"
    fd, name = tempfile.mkstemp(dir=cache, prefix=f".{key}.", suffix=".part")
    try:
        with os.fdopen(fd, "w+b") as out:
            count, digest = _write_ids(out, files, vocab, lower, dtype, show)
            trailer = json.dumps(
                {
                    "format": FORMAT,
                    "level": vocab.level,
                    "tokens": vocab.tokens,
                    "count": count,
                    "dtype": dtype.str,
                    "digest": digest,
                },
                ensure_ascii=False,
            ).encode()
            out.write(trailer + len(trailer).to_bytes(8, "little") + MAGIC)
            out.flush()
            os.fsync(out.fileno())
        os.replace(name, final)  # replaces a link at that name, never writes through it
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    found = _load(final, verify=False)
    if found is None:  # pragma: no cover - replaced between the rename and the open
        raise CorpusError(f"{final}: the token file just written cannot be read back")
    found.built = True
    return found


def _write_ids(
    out: IO[bytes], files: CorpusFiles, vocab: Vocab, lower: bool, dtype: np.dtype, show: Progress
) -> tuple[int, str]:
    """Encode the corpus into ``out``; (ids written, BLAKE2 digest of their bytes)."""
    digest = hashlib.blake2b(digest_size=20)
    count = 0
    with show(f"encoding {files.name}", files.size) as work:
        for piece in stream_text(files, lower=lower, advance=work.advance):
            ids = vocab.encode_corpus(piece) if vocab.level == "char" else vocab.encode(piece)
            data = np.ascontiguousarray(ids, dtype=dtype).tobytes()
            out.write(data)
            digest.update(data)
            count += len(ids)
    return count, digest.hexdigest()


def _map(handle: IO[bytes], dtype: np.dtype, count: int) -> np.ndarray:
    handle.flush()
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(handle, dtype=dtype, mode="r", shape=(count,))


# -- loading ----------------------------------------------------------------------------------


def _load(path: Path, *, verify: bool = True) -> CorpusTokens | None:
    """The entry at ``path``; None when there is none, or it is a link, damaged or of another format."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        try:
            return _read_entry(handle, path, verify)
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
            return None


def _read_entry(handle: IO[bytes], path: Path, verify: bool) -> CorpusTokens | None:
    info = os.fstat(handle.fileno())
    if not stat.S_ISREG(info.st_mode) or info.st_size < _TRAILER:
        return None
    handle.seek(info.st_size - _TRAILER)
    end = handle.read(_TRAILER)
    if end[8:] != MAGIC:
        return None
    length = int.from_bytes(end[:8], "little")
    body = info.st_size - _TRAILER - length
    if body < 0:
        return None
    handle.seek(body)
    meta = json.loads(handle.read(length).decode())
    dtype = np.dtype(meta["dtype"])
    count = int(meta["count"])
    vocab = Vocab(meta["tokens"], meta["level"])
    if meta["format"] != FORMAT or count * dtype.itemsize != body or dtype != compact_dtype(len(vocab)):
        return None
    if verify and _digest_of(handle, body) != meta["digest"]:
        return None
    ids = np.memmap(handle, dtype=dtype, mode="r", shape=(count,)) if count else np.zeros(0, dtype)
    return CorpusTokens(vocab, ids, path, built=False)


def _digest_of(handle: IO[bytes], size: int) -> str:
    """BLAKE2 of the first ``size`` bytes, read rather than mapped: a read leaves this process's
    resident memory as it was, a map of the whole file would count it all."""
    digest = hashlib.blake2b(digest_size=20)
    handle.seek(0)
    left = size
    while left > 0:
        data = handle.read(min(_READ, left))
        if not data:
            break
        digest.update(data)
        left -= len(data)
    return digest.hexdigest()
