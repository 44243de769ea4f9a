"""Reading text: a UTF-8 file, a folder of ``.txt`` files, or ``-`` for standard input."""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import CorpusError
from .reading import MAX_READ_VARIABLE, max_read_bytes, read_limited


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


def _read_bytes(path: Path, what: str = "text") -> bytes:
    try:
        return read_limited(path, CorpusError, what)
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file or folder") from None
    except PermissionError:
        raise CorpusError(f"{path}: permission denied") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read ({exc.strerror or exc})") from None


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
