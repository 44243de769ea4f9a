"""Reading text: a UTF-8 file, a folder of ``.txt`` files, or ``-`` for standard input."""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import CorpusError


def normalise_newlines(text: str) -> str:
    """CRLF and lone CR become LF, so a corpus reads the same on every platform."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def decode(data: bytes, source: str) -> str:
    """UTF-8 text of ``data``; a clear error naming ``source`` and the byte offset otherwise."""
    if b"\x00" in data[:65536]:
        raise CorpusError(
            f"{source}: looks like a binary file (it holds NUL bytes), not text; give a UTF-8 text file"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{source}: not valid UTF-8 at byte offset {exc.start}; convert it first, "
            f"e.g. iconv -f latin1 -t utf-8"
        ) from None
    return text.removeprefix("\ufeff")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except PermissionError:
        raise CorpusError(f"{path}: permission denied") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read ({exc.strerror or exc})") from None


def text_files(folder: Path) -> list[Path]:
    """The ``.txt`` files below ``folder``, in a stable order."""
    return sorted(p for p in folder.rglob("*.txt") if p.is_file())


def read_corpus(source: str | Path, *, lower: bool = False) -> str:
    """The text of ``source`` with newlines normalised and, optionally, lower-cased.

    A folder's ``.txt`` files are joined in sorted path order, each ending in a newline.
    """
    if str(source) == "-":
        text = normalise_newlines(decode(sys.stdin.buffer.read(), "standard input"))
        name = "standard input"
    else:
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
            parts = [normalise_newlines(decode(_read_bytes(f), str(f))) for f in files]
            text = "".join(p if p.endswith("\n") else p + "\n" for p in parts if p)
        else:
            text = normalise_newlines(decode(_read_bytes(path), name))
    if not text.strip():
        raise CorpusError(f"{name}: the corpus is empty; give a text to learn from")
    return text.lower() if lower else text
