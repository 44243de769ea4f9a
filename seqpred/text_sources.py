"""Reading text: a UTF-8 file, a folder of ``.txt`` files, or ``-`` for standard input.

:func:`read_corpus` reads a corpus whole; :func:`stream_text` gives the same text in pieces of a few
MB, for corpora larger than memory (the token cache encodes them this way).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import CorpusError
from .reading import MAX_READ_VARIABLE, grew_error, max_read_bytes, open_limited, read_limited

#: Bytes read at a time when streaming a corpus.
CHUNK_BYTES = 1 << 22
#: Characters without a space, tab or newline after which a streamed piece is cut all the same.
LONGEST_WORD = 1 << 20


def normalise_newlines(text: str) -> str:
    """CRLF and lone CR become LF, so a corpus reads the same on every platform."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian, with a byte-order mark)", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian, with a byte-order mark)", "UTF-32"),
    (b"\xff\xfe", "UTF-16 (little-endian, with a byte-order mark)", "UTF-16"),
    (b"\xfe\xff", "UTF-16 (big-endian, with a byte-order mark)", "UTF-16"),
)


def _wide_encoding(data: bytes) -> tuple[str, str] | None:
    """(description, iconv name) when ``data`` looks like UTF-16 or UTF-32 text."""
    for bom, described, name in _BOMS:
        if data.startswith(bom):
            return described, name
    sample = data[:4096]
    sample = sample[: len(sample) // 4 * 4]
    if len(sample) < 4:
        return None
    zeros = [sample[i::4].count(0) / (len(sample) // 4) for i in range(4)]
    if zeros[0] < 0.1 and min(zeros[1:]) > 0.9:
        return "UTF-32 (little-endian, without a byte-order mark)", "UTF-32LE"
    if zeros[3] < 0.1 and min(zeros[:3]) > 0.9:
        return "UTF-32 (big-endian, without a byte-order mark)", "UTF-32BE"
    if max(zeros[0], zeros[2]) < 0.1 and min(zeros[1], zeros[3]) > 0.7:
        return "UTF-16 (little-endian, without a byte-order mark)", "UTF-16LE"
    if max(zeros[1], zeros[3]) < 0.1 and min(zeros[0], zeros[2]) > 0.7:
        return "UTF-16 (big-endian, without a byte-order mark)", "UTF-16BE"
    return None


def decode(data: bytes, source: str) -> str:
    """UTF-8 text of ``data`` without a leading byte-order mark; a clear error naming ``source``
    otherwise: UTF-16 and UTF-32 text is named as such, and a NUL byte anywhere makes the data
    binary, wherever it occurs."""
    wide = _wide_encoding(data)
    if wide is not None:
        described, name = wide
        raise CorpusError(
            f"{source}: looks like {described} text, not UTF-8; convert it first, "
            f"e.g. iconv -f {name} -t UTF-8"
        )
    nul = data.find(b"\x00")
    if nul >= 0:
        raise CorpusError(
            f"{source}: looks like a binary file (a NUL byte at byte offset {nul:,}), not text; "
            f"give a UTF-8 text file"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{source}: not valid UTF-8 at byte offset {exc.start}; convert it first, "
            f"e.g. iconv -f latin1 -t utf-8"
        ) from None
    return text.removeprefix("\ufeff")


def read_text_file(path: Path, what: str = "text") -> str:
    """The decoded text of the regular file ``path``, read within the size limit."""
    return normalise_newlines(decode(_read_bytes(path, what), str(path)))


@contextlib.contextmanager
def _reading(label: object) -> Iterator[None]:
    """The operating system's refusals while reading ``label``, as one-line corpus errors."""
    try:
        yield
    except FileNotFoundError:
        raise CorpusError(f"{label}: no such file or folder") from None
    except PermissionError:
        raise CorpusError(f"{label}: permission denied") from None
    except OSError as exc:
        raise CorpusError(f"{label}: cannot read ({exc.strerror or exc})") from None


def _read_bytes(path: Path, what: str = "text") -> bytes:
    with _reading(path):
        return read_limited(path, CorpusError, what)


def _read_standard_input() -> bytes:
    limit = max_read_bytes()
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise CorpusError(
            f"standard input: more than the read limit of {limit:,} bytes; "
            f"raise it with {MAX_READ_VARIABLE}=BYTES if you have the memory"
        )
    return data


def text_files(folder: Path) -> list[Path]:
    """The ``.txt`` files below ``folder``, in a stable order."""
    return sorted(p for p in folder.rglob("*.txt") if p.is_file())


def read_corpus(source: str | Path, *, lower: bool = False) -> str:
    """The text of ``source`` with newlines normalised and, optionally, lower-cased.

    A folder's ``.txt`` files are joined in sorted path order, each ending in a newline.
    """
    if str(source) == "-":
        text = normalise_newlines(decode(_read_standard_input(), "standard input"))
        name = "standard input"
    else:
        if not str(source).strip():
            raise CorpusError(
                "the corpus path is empty (an unset variable?); "
                "give a text file, a folder, - or a corpus name"
            )
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise CorpusError(f"{path}: no such file or folder")
        if path.is_dir():
            files = text_files(path)
            if not files:
                raise CorpusError(
                    f"{path}: folder holds no .txt files; put the text in .txt files or give a file"
                )
            total, limit = sum(f.stat().st_size for f in files), max_read_bytes()
            if total > limit:
                raise CorpusError(
                    f"{path}: its .txt files hold {total:,} bytes, over the read limit of {limit:,}; "
                    f"raise it with {MAX_READ_VARIABLE}=BYTES if you have the memory"
                )
            parts = [read_text_file(f) for f in files]
            text = "".join(p if p.endswith("\n") else p + "\n" for p in parts if p)
        else:
            text = read_text_file(path)
    if not text.strip():
        raise CorpusError(f"{name}: the corpus is empty; give a text to learn from")
    return text.lower() if lower else text


# -- streaming --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusFiles:
    """The files of a corpus, in reading order, and how messages name them."""

    name: str  # the corpus as the user gave it
    paths: tuple[Path, ...]
    labels: tuple[str, ...]  # each file's name in messages
    folder: bool  # a folder's files are joined each ending in a newline

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.paths)


@contextlib.contextmanager
def corpus_files(source: str | Path, spool: Path | None = None) -> Iterator[CorpusFiles]:
    """The files of ``source`` (a file, a folder of ``.txt`` files, or ``-``), checked as
    :func:`read_corpus` checks them. Standard input is copied, within the read limit, to a temporary
    file in ``spool`` (or the system's temporary folder), removed afterwards."""
    if str(source) == "-":
        with tempfile.TemporaryDirectory(dir=spool, prefix=".stdin-") as tmp:
            path = Path(tmp) / "stdin.txt"
            _spool_standard_input(path)
            yield CorpusFiles("standard input", (path,), ("standard input",), folder=False)
        return
    if not str(source).strip():
        raise CorpusError(
            "the corpus path is empty (an unset variable?); give a text file, a folder, - or a corpus name"
        )
    path = Path(source)
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder")
    if not path.is_dir():
        yield CorpusFiles(str(path), (path,), (str(path),), folder=False)
        return
    files = text_files(path)
    if not files:
        raise CorpusError(f"{path}: folder holds no .txt files; put the text in .txt files or give a file")
    total, limit = sum(f.stat().st_size for f in files), max_read_bytes()
    if total > limit:
        raise CorpusError(
            f"{path}: its .txt files hold {total:,} bytes, over the read limit of {limit:,}; "
            f"raise it with {MAX_READ_VARIABLE}=BYTES if you have the memory"
        )
    yield CorpusFiles(str(path), tuple(files), tuple(str(f) for f in files), folder=True)


def _spool_standard_input(path: Path) -> None:
    limit = max_read_bytes()
    with path.open("xb") as out:
        total = 0
        while True:
            chunk = sys.stdin.buffer.read(min(CHUNK_BYTES, limit + 1 - total))
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise CorpusError(
                    f"standard input: more than the read limit of {limit:,} bytes; "
                    f"raise it with {MAX_READ_VARIABLE}=BYTES if you have the disk"
                )
            out.write(chunk)


def raw_chunks(path: Path, label: str) -> Iterator[bytes]:
    """The bytes of the regular file ``path`` in chunks of :data:`CHUNK_BYTES` (the first at least
    4 KiB, what telling UTF-16 from UTF-8 needs), within the read limit."""
    with _reading(label), open_limited(path, CorpusError, "text") as handle:
        limit = max_read_bytes()
        total = 0
        while True:
            data = handle.read(CHUNK_BYTES if total else max(CHUNK_BYTES, 4096))
            if not data:
                return
            total += len(data)
            if total > limit:
                raise grew_error(path, CorpusError)
            yield data


def _file_text(path: Path, label: str, advance: Callable[[int], None]) -> Iterator[str]:
    """Decoded, newline-normalised text of one file, in pieces, checked as :func:`decode` checks a
    whole file (a UTF-16 or UTF-32 file, a NUL byte, invalid UTF-8, each with its byte offset)."""
    offset = 0  # of ``pending`` in the file
    pending = b""  # the start of a character cut by a chunk's end
    cr = ""  # a CR at a piece's end, which may start a CRLF
    first = True
    for data in raw_chunks(path, label):
        if first:
            wide = _wide_encoding(data)
            if wide is not None:
                decode(data[:4096], label)  # raises, naming the encoding
        nul = data.find(b"\x00")
        if nul >= 0:
            at = offset + len(pending) + nul
            raise CorpusError(
                f"{label}: looks like a binary file (a NUL byte at byte offset {at:,}), not text; "
                f"give a UTF-8 text file"
            )
        data = pending + data
        try:
            text, pending = data.decode("utf-8"), b""
        except UnicodeDecodeError as exc:
            if exc.end != len(data) or exc.reason != "unexpected end of data":
                raise CorpusError(
                    f"{label}: not valid UTF-8 at byte offset {offset + exc.start}; convert it first, "
                    f"e.g. iconv -f latin1 -t utf-8"
                ) from None
            text, pending = data[: exc.start].decode("utf-8"), data[exc.start :]
        offset += len(data) - len(pending)
        advance(len(data) - len(pending))
        if first:
            text = text.removeprefix("\ufeff")
            first = False
        text = cr + text
        cr = "\r" if text.endswith("\r") else ""
        yield normalise_newlines(text[: len(text) - len(cr)])
    if pending:
        raise CorpusError(
            f"{label}: not valid UTF-8 at byte offset {offset}; convert it first, "
            f"e.g. iconv -f latin1 -t utf-8"
        )
    if cr:
        yield "\n"


def _whitespace_cut(text: str) -> int:
    """Where ``text`` may be cut so no token, lower-casing context or CRLF straddles the cut."""
    return max(text.rfind(" "), text.rfind("\n"), text.rfind("\t")) + 1


def stream_text(
    files: CorpusFiles, *, lower: bool = False, advance: Callable[[int], None] | None = None
) -> Iterator[str]:
    """The text :func:`read_corpus` gives for ``files``, in pieces of about :data:`CHUNK_BYTES` that
    end at a space, tab or newline (unless :data:`LONGEST_WORD` characters hold none), so that tokenising or
    lower-casing piece by piece gives what it gives on the whole text. ``advance`` hears the bytes
    read. The empty-corpus error comes once every piece has been given."""
    step = advance or (lambda n: None)
    seen_text = False
    for path, label in zip(files.paths, files.labels, strict=True):
        carry = ""
        last = ""
        for piece in _file_text(path, label, step):
            text = carry + piece
            cut = _whitespace_cut(text) or (len(text) if len(text) > LONGEST_WORD else 0)
            carry = text[cut:]
            if cut:
                last = text[cut - 1]
                seen_text = seen_text or not text[:cut].isspace()
                yield text[:cut].lower() if lower else text[:cut]
        if carry:
            last = carry[-1]
            seen_text = seen_text or not carry.isspace()
            yield carry.lower() if lower else carry
        if files.folder and last and last != "\n":
            yield "\n"
    if not seen_text:
        raise CorpusError(f"{files.name}: the corpus is empty; give a text to learn from")
