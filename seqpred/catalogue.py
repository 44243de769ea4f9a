"""Named corpora: a small catalogue of public texts that seqpred can fetch into a user cache folder.

A name such as ``tinyshakespeare`` is easier to share than a download recipe, and pinning each file's
size and SHA-256 means two people who train "on macbeth" train on the same bytes. Downloads are
explicit (``seqpred corpus download NAME``): :func:`resolve_corpus` only ever looks in the cache, so
training never reaches the network behind the user's back.

Only the standard library is used (``urllib``, ``hashlib``), so the catalogue costs no dependency.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ._version import __version__
from .cache_folders import cache_folder
from .errors import CorpusError, UsageError

CACHE_ENV = "SEQPRED_CACHE_DIR"
MIRROR_ENV = "SEQPRED_CORPUS_MIRROR"
DEFAULT_TIMEOUT = 60.0
_CHUNK = 1 << 16

Status = Literal["missing", "ok", "mismatch"]


class CorpusDownloadError(CorpusError):
    """A catalogue corpus could not be fetched, or what arrived is not the catalogued file."""


@dataclass(frozen=True)
class CatalogueEntry:
    """One named corpus: where it comes from and exactly which bytes it must be.

    ``filename`` names the file both in the cache folder and under a mirror, so a mirror is just a
    folder of these files served over HTTP.
    """

    name: str
    description: str
    url: str
    size: int
    sha256: str
    licence: str
    homepage: str

    @property
    def filename(self) -> str:
        return f"{self.name}.txt"

    def source_url(self) -> str:
        """The URL to fetch: the catalogue's own, or the same file name under ``$SEQPRED_CORPUS_MIRROR``."""
        mirror = os.environ.get(MIRROR_ENV, "").strip()
        if mirror:
            return f"{mirror.rstrip('/')}/{self.filename}"
        return self.url


CATALOGUE: dict[str, CatalogueEntry] = {
    entry.name: entry
    for entry in (
        CatalogueEntry(
            name="macbeth",
            description=(
                "Shakespeare's The Tragedie of Macbeth in First Folio spelling: the play text of Project "
                "Gutenberg ebook #2264 (https://www.gutenberg.org/ebooks/2264) without Gutenberg's header "
                "and licence, CRLF line endings. The corpus of the original LSTM article."
            ),
            url=(
                "https://raw.githubusercontent.com/sharmasaravanan/Machine_learning/"
                "795dbe22eb22dcb2415cdb37650b7741e27e99d8/macbeth.txt"
            ),
            size=103_603,
            sha256="f8dfedaf5848f011b51212b59ef6752f6c9295e30ce438fa9631596eb679901c",
            licence=(
                "Public domain (First Folio, 1623); the file carries no Project Gutenberg header or "
                "trademark, so Gutenberg's licence terms do not apply."
            ),
            homepage="https://www.gutenberg.org/ebooks/2264",
        ),
        CatalogueEntry(
            name="tinyshakespeare",
            description=(
                "About 40,000 lines from Shakespeare's plays, joined by Andrej Karpathy for char-rnn; "
                "the usual character-level benchmark."
            ),
            url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            size=1_115_394,
            sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            licence=(
                "Public domain text (Shakespeare); distributed in the MIT-licensed karpathy/char-rnn "
                "repository."
            ),
            homepage="https://github.com/karpathy/char-rnn",
        ),
    )
}


def cache_dir() -> Path:
    """The folder that holds downloaded corpora.

    ``$SEQPRED_CACHE_DIR`` wins so that tests and shared machines can point elsewhere; otherwise the XDG
    cache folder, whose spec says a relative ``$XDG_CACHE_HOME`` is to be ignored.
    """
    return cache_folder(CACHE_ENV, "corpora")


def get_entry(name: str) -> CatalogueEntry:
    """The catalogue entry called ``name``; a usage error listing the known names otherwise."""
    try:
        return CATALOGUE[name]
    except KeyError:
        known = ", ".join(sorted(CATALOGUE))
        raise UsageError(f"unknown corpus {name!r}; known corpora: {known}") from None


def cache_path(entry: CatalogueEntry) -> Path:
    """Where ``entry`` lives once downloaded (whether or not it is there now)."""
    return cache_dir() / entry.filename


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def status(entry: CatalogueEntry) -> Status:
    """Whether the cached copy is ``missing``, ``ok`` (right size and hash) or a ``mismatch``.

    The whole file is hashed, not just sized, because a cached corpus is trusted for training; the
    catalogued files are small enough for that to cost milliseconds.
    """
    path = cache_path(entry)
    try:
        if not path.is_file():
            return "missing"
        if path.stat().st_size != entry.size:
            return "mismatch"
        return "ok" if _sha256_of(path) == entry.sha256 else "mismatch"
    except OSError:
        return "mismatch"


@dataclass(frozen=True)
class DownloadResult:
    """Where the corpus is, and whether this call fetched it (False: a verified copy was already cached)."""

    path: Path
    downloaded: bool
    url: str | None = None


def _describe_network_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".strip()
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return "timed out"
        if isinstance(reason, OSError) and reason.strerror:
            return reason.strerror
        return str(reason)
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, http.client.HTTPException):
        return f"connection broken ({type(exc).__name__})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _fetch_into(url: str, target, expected_size: int, timeout: float) -> tuple[int, str, bool]:
    """Stream ``url`` into the open file ``target``, hashing as it goes.

    Returns (bytes received, sha256, overflowed). Reading stops once more than ``expected_size`` bytes
    have arrived, so a wrong URL serving something huge cannot fill the disk.
    """
    request = urllib.request.Request(url, headers={"User-Agent": f"seqpred/{__version__}"})
    digest = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(request, timeout=timeout) as response:
        while True:
            chunk = response.read(_CHUNK)
            if not chunk:
                return received, digest.hexdigest(), False
            received += len(chunk)
            if received > expected_size:
                return received, digest.hexdigest(), True
            digest.update(chunk)
            target.write(chunk)


def download(name: str, *, force: bool = False, timeout: float = DEFAULT_TIMEOUT) -> DownloadResult:
    """Fetch the catalogue corpus ``name`` into the cache folder and verify it.

    The bytes go to a temporary file in the cache folder and are renamed into place only after their
    size and SHA-256 match the catalogue, so the cache never holds a partial or wrong file, and a failed
    ``force`` download leaves a previously verified copy untouched. A verified copy already present is
    kept as it is unless ``force`` is given.
    """
    entry = get_entry(name)
    final = cache_path(entry)
    if not force and status(entry) == "ok":
        return DownloadResult(final, downloaded=False)

    url = entry.source_url()
    folder = final.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed and removed in the finally below
            dir=folder, prefix=f".{entry.filename}.", suffix=".part", delete=False
        )
    except OSError as exc:
        raise CorpusDownloadError(
            f"{name}: cannot write to the cache folder {folder} ({exc.strerror or exc}); "
            f"set {CACHE_ENV} to a writable folder"
        ) from None

    temp = Path(handle.name)
    try:
        try:
            with handle:
                received, actual, overflowed = _fetch_into(url, handle, entry.size, timeout)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            raise CorpusDownloadError(
                f"{name}: cannot download {url}: {_describe_network_error(exc)}"
            ) from None
        if overflowed:
            raise CorpusDownloadError(
                f"{name}: {url} sent more than the expected {entry.size:,} bytes (sha256 {entry.sha256}); "
                f"stopped reading and kept nothing"
            )
        if received != entry.size or actual != entry.sha256:
            raise CorpusDownloadError(
                f"{name}: {url} does not match the catalogue: expected {entry.size:,} bytes with sha256 "
                f"{entry.sha256}, got {received:,} bytes with sha256 {actual}; kept nothing"
            )
        try:
            os.replace(temp, final)
        except OSError as exc:
            raise CorpusDownloadError(
                f"{name}: cannot move the download into {final} ({exc.strerror or exc})"
            ) from None
    finally:
        temp.unlink(missing_ok=True)
    return DownloadResult(final, downloaded=True, url=url)


def resolve_corpus(name_or_path: str | os.PathLike[str]) -> Path:
    """The filesystem path to read for a corpus argument that may be a path or a catalogue name.

    An existing path wins over a catalogue name of the same spelling, and anything that is neither
    (including ``-`` for standard input) comes back unchanged for the reader to handle. A catalogue
    name resolves to its verified cached copy; it is never downloaded here, because training should
    not depend on the network without the user asking for it.
    """
    path = Path(name_or_path)
    text = os.fspath(name_or_path)
    if text == "-" or path.exists() or text not in CATALOGUE:
        return path
    entry = CATALOGUE[text]
    state = status(entry)
    if state == "ok":
        return cache_path(entry)
    if state == "missing":
        raise CorpusError(
            f"{text}: catalogue corpus not downloaded yet; run `seqpred corpus download {text}` first"
        )
    raise CorpusError(
        f"{text}: the cached copy at {cache_path(entry)} does not match the catalogue's sha256 "
        f"{entry.sha256}; run `seqpred corpus download {text} --force`"
    )
