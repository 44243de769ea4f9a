"""Named corpora: the catalogue, verified downloads from a local HTTP mirror, the cache, and resolve_corpus.

Every test runs with the cache in a temporary folder and the mirror pointed at 127.0.0.1, so nothing
here can reach the internet or touch the user's real cache.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import socket
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from seqpred import catalogue
from seqpred.catalogue import CATALOGUE, CorpusDownloadError, cache_dir, download, resolve_corpus
from seqpred.errors import CorpusError, UsageError
from tests.conftest import make_text, one_line_error

NAME = "tinyshakespeare"


def closed_port() -> int:
    """A local port with nothing listening, so connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mirror:
    """A folder served over HTTP on 127.0.0.1, counting the requests it answers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        mirror = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):
                mirror.requests.append(self.path)
                super().do_GET()

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/corpora"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def serve(self, name: str, data: bytes) -> None:
        folder = self.root / "corpora"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.txt").write_bytes(data)


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    """A private cache folder and a mirror that refuses connections, unless a test serves one."""
    monkeypatch.setenv("SEQPRED_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SEQPRED_CORPUS_MIRROR", f"http://127.0.0.1:{closed_port()}/corpora")


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    server = Mirror(tmp_path / "www")
    server.thread.start()
    monkeypatch.setenv("SEQPRED_CORPUS_MIRROR", server.url)
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def payload(monkeypatch) -> bytes:
    """A small generated text that the catalogue entry is made to expect instead of the real file."""
    data = make_text(3000, seed=7).replace("\n", "\r\n").encode("utf-8")
    entry = dataclasses.replace(CATALOGUE[NAME], size=len(data), sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(CATALOGUE, NAME, entry)
    return data


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- the catalogue ---------------------------------------------------------------------------


def test_catalogue_entries_are_complete():
    assert {"macbeth", "tinyshakespeare"} <= set(CATALOGUE)
    for name, entry in CATALOGUE.items():
        assert entry.name == name
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256), name
        assert entry.size > 0 and entry.url.startswith("https://") and entry.description and entry.licence
    tiny = CATALOGUE["tinyshakespeare"]
    assert (
        tiny.url
        == "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
    )
    assert (tiny.size, tiny.sha256) == (
        1_115_394,
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    )
    macbeth = CATALOGUE["macbeth"]
    assert (macbeth.size, macbeth.sha256) == (
        103_603,
        "f8dfedaf5848f011b51212b59ef6752f6c9295e30ce438fa9631596eb679901c",
    )
    assert "https://www.gutenberg.org/ebooks/2264" in macbeth.description


def test_mirror_replaces_the_base_url(monkeypatch):
    entry = CATALOGUE["macbeth"]
    monkeypatch.delenv("SEQPRED_CORPUS_MIRROR")
    assert entry.source_url() == entry.url
    monkeypatch.setenv("SEQPRED_CORPUS_MIRROR", "http://mirror.example/data/")
    assert entry.source_url() == "http://mirror.example/data/macbeth.txt"


def test_cache_dir_precedence(tmp_path, monkeypatch):
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("SEQPRED_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "seqpred" / "corpora"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "seqpred" / "corpora"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "seqpred" / "corpora"


def test_corpus_cli_imports_on_its_own():
    code = "import seqpred.cli.corpora, seqpred.cli; print(seqpred.cli.app.registered_groups[0].name)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "corpus"


# -- list ------------------------------------------------------------------------------------


def test_list_shows_size_cache_state_and_description(cli, mirror, payload, cache):
    result = cli("corpus", "list")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if line.startswith("macbeth "))
    assert "103,603 bytes" in row and " no " in row and "Tragedie of Macbeth" in row
    assert f"cache folder: {cache}" in result.stdout

    mirror.serve(NAME, payload)
    assert cli("corpus", "download", NAME).exit_code == 0
    lines = cli("corpus", "list").stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{NAME} "))
    assert f"{len(payload):,} bytes" in lines[at] and " yes " in lines[at]
    assert lines[at + 1].strip() == f"cached at {cache / f'{NAME}.txt'}"

    rows = {r["name"]: r for r in json.loads(cli("corpus", "list", "--json").stdout)["corpora"]}
    assert rows[NAME]["status"] == "ok" and rows["macbeth"]["status"] == "missing"
    assert rows["macbeth"]["sha256"] == CATALOGUE["macbeth"].sha256


def test_list_flags_a_corrupt_cached_copy(cli, payload, cache):
    cache.mkdir()
    (cache / f"{NAME}.txt").write_bytes(payload[:-1] + b"!")
    result = cli("corpus", "list")
    row = next(line for line in result.stdout.splitlines() if line.startswith(f"{NAME} "))
    assert " corrupt " in row and "--force" in result.stdout


# -- download --------------------------------------------------------------------------------


def test_download_verifies_and_stores(cli, mirror, payload, cache):
    mirror.serve(NAME, payload)
    result = cli("corpus", "download", NAME)
    assert result.exit_code == 0, result.output
    target = cache / f"{NAME}.txt"
    assert result.stdout.strip() == str(target)
    assert target.read_bytes() == payload
    assert f"{mirror.url}/{NAME}.txt" in result.stderr and "verified" in result.stderr
    assert files_in(cache) == [f"{NAME}.txt"]
    assert mirror.requests == [f"/corpora/{NAME}.txt"]


def test_second_download_reports_cached_unless_forced(cli, mirror, payload, cache):
    mirror.serve(NAME, payload)
    assert cli("corpus", "download", NAME).exit_code == 0
    again = cli("corpus", "download", NAME)
    assert again.exit_code == 0
    assert "already cached" in again.stderr and again.stdout.strip() == str(cache / f"{NAME}.txt")
    assert len(mirror.requests) == 1

    forced = cli("corpus", "download", NAME, "--force")
    assert forced.exit_code == 0 and "verified" in forced.stderr
    assert len(mirror.requests) == 2
    assert files_in(cache) == [f"{NAME}.txt"]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda data: data[:-1] + b"?", id="same-size"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: data + b"more", id="too-long"),
    ],
)
def test_a_file_with_the_wrong_hash_is_refused_and_nothing_is_kept(cli, mirror, payload, cache, tamper):
    served = tamper(payload)
    mirror.serve(NAME, served)
    result = cli("corpus", "download", NAME)
    line = one_line_error(result, 1, NAME, CATALOGUE[NAME].sha256)
    if len(served) <= len(payload):
        assert hashlib.sha256(served).hexdigest() in line
    assert result.stdout == ""
    assert files_in(cache) == []


def test_a_failed_forced_download_keeps_the_verified_copy(cli, mirror, payload, cache):
    mirror.serve(NAME, payload)
    assert cli("corpus", "download", NAME).exit_code == 0
    mirror.serve(NAME, payload.upper())
    one_line_error(cli("corpus", "download", NAME, "--force"), 1, "does not match")
    assert (cache / f"{NAME}.txt").read_bytes() == payload
    assert files_in(cache) == [f"{NAME}.txt"]


def test_a_corrupt_cached_copy_is_replaced(cli, mirror, payload, cache):
    cache.mkdir()
    (cache / f"{NAME}.txt").write_bytes(b"not the corpus")
    mirror.serve(NAME, payload)
    result = cli("corpus", "download", NAME)
    assert result.exit_code == 0 and "verified" in result.stderr
    assert (cache / f"{NAME}.txt").read_bytes() == payload


def test_unknown_name_lists_the_known_ones(cli):
    one_line_error(cli("corpus", "download", "hamlet"), 2, "'hamlet'", "macbeth", "tinyshakespeare")


def test_unreachable_server_is_one_line(cli, payload, cache):
    line = one_line_error(cli("corpus", "download", NAME), 1, "cannot download", "127.0.0.1")
    assert "refused" in line.lower()
    assert files_in(cache) == []


def test_missing_file_on_the_server_is_one_line(cli, mirror, payload, cache):
    one_line_error(cli("corpus", "download", NAME), 1, "cannot download", "HTTP 404")
    assert files_in(cache) == []


def test_a_silent_server_times_out(monkeypatch, payload, cache):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        monkeypatch.setenv("SEQPRED_CORPUS_MIRROR", f"http://127.0.0.1:{listener.getsockname()[1]}")
        with pytest.raises(CorpusDownloadError, match="timed out"):
            download(NAME, timeout=0.3)
    assert files_in(cache) == []


def test_unwritable_cache_folder_is_a_clear_error(tmp_path, monkeypatch, payload):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("SEQPRED_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(CorpusDownloadError, match="cannot write to the cache folder"):
        download(NAME)


def test_download_function_reports_what_it_did(mirror, payload, cache):
    mirror.serve(NAME, payload)
    first = download(NAME)
    assert first.downloaded and first.path == cache / f"{NAME}.txt"
    assert first.url == f"{mirror.url}/{NAME}.txt"
    second = download(NAME)
    assert not second.downloaded and second.path == first.path and len(mirror.requests) == 1
    with pytest.raises(UsageError, match="known corpora: macbeth, tinyshakespeare"):
        download("nope")


# -- resolve_corpus --------------------------------------------------------------------------


def test_resolve_corpus_returns_the_cached_path_for_a_name(mirror, payload, cache):
    mirror.serve(NAME, payload)
    download(NAME)
    assert resolve_corpus(NAME) == cache / f"{NAME}.txt"


def test_resolve_corpus_keeps_paths_and_stdin(tmp_path, corpus, monkeypatch):
    assert resolve_corpus(corpus) == corpus
    assert resolve_corpus(str(corpus)) == corpus
    assert resolve_corpus("-") == Path("-")
    missing = tmp_path / "missing.txt"
    assert resolve_corpus(str(missing)) == missing
    monkeypatch.chdir(tmp_path)
    Path("macbeth").write_text("a local file that shadows the catalogue name\n")
    assert resolve_corpus("macbeth") == Path("macbeth")


def test_resolve_corpus_never_downloads(mirror, payload, cache):
    mirror.serve(NAME, payload)
    with pytest.raises(CorpusError, match=f"run `seqpred corpus download {NAME}`"):
        resolve_corpus(NAME)
    assert mirror.requests == [] and files_in(cache) == []


def test_resolve_corpus_refuses_a_corrupt_copy(payload, cache):
    cache.mkdir()
    (cache / f"{NAME}.txt").write_bytes(payload + b"tampered")
    with pytest.raises(CorpusError, match="--force"):
        resolve_corpus(NAME)


def test_status_is_read_from_the_live_catalogue(payload, cache):
    entry = CATALOGUE[NAME]
    assert catalogue.status(entry) == "missing"
    cache.mkdir()
    (cache / f"{NAME}.txt").write_bytes(payload)
    assert catalogue.status(entry) == "ok"
