"""The token cache: streamed text equals the text read whole, entries are found again by content,
damaged or planted entries are rebuilt, and batches read the mapped ids without copying them."""

from __future__ import annotations

import io
import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from seqpred import text_sources
from seqpred.batches import StripeBatches, TrainBatches, eval_batches, split_validation
from seqpred.errors import CorpusError, VocabError
from seqpred.text_sources import corpus_files, read_corpus, stream_text
from seqpred.token_cache import CACHE_VARIABLE, cache_folder, corpus_tokens
from seqpred.train import encode_corpus
from seqpred.vocab import Vocab

from .conftest import TINY, make_text

TRICKY = "Über ΣΑΣ said: “don’t”,\r\nthe king\rand\tqueen 日本語\n" * 40


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    """Chunks of 7 bytes after the first 4 KiB: every cut a multi-byte character, a CRLF, a word or
    a final sigma can straddle is met."""
    monkeypatch.setattr(text_sources, "CHUNK_BYTES", 7)
    monkeypatch.setattr(text_sources, "LONGEST_WORD", 64)


def _streamed(source, lower=False) -> str:
    with corpus_files(source) as files:
        return "".join(stream_text(files, lower=lower))


@pytest.mark.parametrize("lower", [False, True])
def test_a_streamed_file_is_the_text_read_whole(tmp_path, lower):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbf" + (TRICKY * 3).encode())
    assert _streamed(path, lower) == read_corpus(path, lower=lower)


def test_a_streamed_folder_joins_its_files_as_read_corpus_does(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_text(TRICKY + "no newline at the end")
    (tmp_path / "b" / "c.txt").write_text("")
    (tmp_path / "b" / "d.txt").write_bytes(b"crlf ends\r\n" * 500 + b"last\r")
    assert _streamed(tmp_path) == read_corpus(tmp_path)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("text".encode("utf-16"), "UTF-16 (little-endian, with a byte-order mark)"),
        (b"x" * 5000 + b"\x00rest", "a NUL byte at byte offset 5,000"),
        (b"y" * 5000 + "é".encode() + b"\xff", "not valid UTF-8 at byte offset 5002"),
        (b"z" * 5000 + "é".encode()[:1], "not valid UTF-8 at byte offset 5000"),
        (b" \n\t " * 2000, "the corpus is empty"),
    ],
)
def test_streaming_refuses_what_reading_refuses_with_the_same_message(tmp_path, data, fragment):
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(CorpusError) as whole:
        read_corpus(path)
    with pytest.raises(CorpusError) as streamed:
        _streamed(path)
    assert fragment in str(whole.value)
    assert str(streamed.value) == str(whole.value)


@pytest.mark.parametrize("level", ["char", "word"])
def test_the_cache_gives_the_ids_of_the_text_and_finds_them_again(tmp_path, level):
    path = tmp_path / "a.txt"
    path.write_text(TRICKY + make_text(3000))
    first = corpus_tokens(path, level, folder=tmp_path / "cache")
    vocab, ids = encode_corpus(read_corpus(path), level)
    assert first.built and first.vocab == vocab
    assert isinstance(first.ids, np.memmap) and np.array_equal(first.ids, ids)
    again = corpus_tokens(path, level, folder=tmp_path / "cache")
    assert not again.built and again.path == first.path and np.array_equal(again.ids, ids)
    # A run that brings the same vocabulary (a resume) finds the same entry.
    assert corpus_tokens(path, level, vocab=vocab, folder=tmp_path / "cache").path == first.path


def test_the_entry_follows_the_content_not_the_name(tmp_path):
    cache = tmp_path / "cache"
    (tmp_path / "a.txt").write_text("same words here\n")
    (tmp_path / "b.txt").write_text("same words here\n")
    first = corpus_tokens(tmp_path / "a.txt", folder=cache)
    assert corpus_tokens(tmp_path / "b.txt", folder=cache).path == first.path
    (tmp_path / "b.txt").write_text("other words here\n")
    assert corpus_tokens(tmp_path / "b.txt", folder=cache).path != first.path
    assert corpus_tokens(tmp_path / "a.txt", lower=True, folder=cache).path != first.path


def test_a_given_vocabulary_encodes_into_its_own_entry_and_refuses_unknown_symbols(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("abcab cab\n")
    wider = Vocab(list("\n abcdz"))
    tokens = corpus_tokens(path, vocab=wider, folder=tmp_path / "cache")
    assert tokens.vocab == wider and wider.decode(tokens.ids) == "abcab cab\n"
    with pytest.raises(VocabError, match="not in the vocabulary"):
        corpus_tokens(path, vocab=Vocab(list("ab")), folder=tmp_path / "cache")


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flipped id":
        data[2] ^= 1
    elif how == "truncated":
        del data[-30:]
    elif how == "trailer":
        data[-20] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flipped id", "truncated", "trailer"])
def test_a_damaged_entry_is_detected_and_rebuilt(tmp_path, how):
    path = tmp_path / "a.txt"
    path.write_text(make_text(2000))
    first = corpus_tokens(path, folder=tmp_path / "cache")
    expected = np.array(first.ids)
    del first
    entry = next((tmp_path / "cache").glob("*.tokens"))
    _damage(entry, how)
    again = corpus_tokens(path, folder=tmp_path / "cache")
    assert again.built and np.array_equal(again.ids, expected)
    assert corpus_tokens(path, folder=tmp_path / "cache").built is False


def test_a_link_at_an_entrys_name_is_replaced_never_followed(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(make_text(2000))
    cache = tmp_path / "cache"
    entry = corpus_tokens(path, folder=cache).path
    assert entry is not None
    victim = tmp_path / "victim"
    victim.write_bytes(entry.read_bytes())  # even a valid entry is not read through a link
    entry.unlink()
    entry.symlink_to(victim)
    tokens = corpus_tokens(path, folder=cache)
    assert tokens.built and not entry.is_symlink() and entry.is_file()
    assert victim.read_bytes() == entry.read_bytes()  # the link's target was left alone


def test_the_cache_folder_is_documented_and_movable(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder() == tmp_path / "xdg" / "seqpred" / "tokens"
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "elsewhere"))
    assert cache_folder() == tmp_path / "elsewhere"
    (tmp_path / "a.txt").write_text("some text\n")
    assert corpus_tokens(tmp_path / "a.txt").path.parent == tmp_path / "elsewhere"


def test_a_cache_folder_that_cannot_be_made_falls_back_to_a_temporary_file(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    (tmp_path / "a.txt").write_text("some text\n")
    tokens = corpus_tokens(tmp_path / "a.txt", folder=blocker / "cache")
    assert tokens.path is None and Vocab.decode(tokens.vocab, tokens.ids) == "some text\n"


def test_standard_input_is_spooled_and_streamed(monkeypatch, tmp_path):
    data = (TRICKY * 2).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    tokens = corpus_tokens("-", folder=tmp_path / "cache")
    assert tokens.vocab.decode(tokens.ids) == read_corpus_bytes(tmp_path, data)
    assert not list((tmp_path / "cache").glob(".stdin-*"))  # the spool is gone


def read_corpus_bytes(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "copy.txt"
    path.write_bytes(data)
    return read_corpus(path)


def test_batches_index_the_map_without_copying_it(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(make_text(20000))
    ids = corpus_tokens(path, folder=tmp_path / "cache").ids
    plain = np.array(ids)
    train, val = split_validation(ids, 0.1, 16)
    assert np.shares_memory(train, ids) and np.shares_memory(val, ids)
    mapped = TrainBatches(train, 16, 8, "sequence", seed=3)
    assert np.shares_memory(mapped.view, ids)
    copied = TrainBatches(plain[: len(train)], 16, 8, "sequence", seed=3)
    for a, b in itertools.islice(zip(mapped.iter_from(0), copied.iter_from(0), strict=True), 5):
        assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.targets, b.targets)
        assert a.inputs.dtype == np.int32
    stripes = StripeBatches(train, 16, 4, seed=1).batch(3)
    assert np.array_equal(stripes.inputs, StripeBatches(plain[: len(train)], 16, 4, seed=1).batch(3).inputs)
    assert sum(b.inputs.shape[0] for b in eval_batches(val, 16, "sequence")) > 0


def test_training_encodes_once_and_reuses_the_entry(cli, monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_VARIABLE, str(cache))
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "one.txt").write_text(make_text(3000, seed=1))
    (folder / "two.txt").write_text(make_text(3000, seed=2))
    args = ("--backend", "torch", "--max-steps", "2", "--log-format", "json", *TINY)
    first = cli("train", folder, "--out", tmp_path / "run1", *args)
    assert first.exit_code == 0, first.output
    (entry,) = cache.glob("*.tokens")
    stamp = os.stat(entry).st_mtime_ns
    second = cli("train", folder, "--out", tmp_path / "run2", *args)
    assert second.exit_code == 0, second.output
    assert list(cache.glob("*.tokens")) == [entry] and os.stat(entry).st_mtime_ns == stamp
    start = json.loads(second.stdout.splitlines()[0])
    assert start["train_tokens"] + start["val_tokens"] == len(read_corpus(folder))


def _mapped_file_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["RssFile"].split()[0])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc/self/status")
def test_random_batches_do_not_leave_the_map_resident(tmp_path):
    """The kernel may map a whole page-cache folio (megabytes) per row read; batches let go of it."""
    path = tmp_path / "ids"
    size = 64 * 2**20
    np.random.default_rng(0).integers(0, 50, size, dtype=np.uint8).tofile(path)
    ids = np.memmap(path, dtype=np.uint8, mode="r")
    batches = TrainBatches(ids, 100, 64, "sequence", seed=0)
    before = _mapped_file_kib()
    for batch in itertools.islice(batches.iter_from(0), 20):
        assert batch.inputs.shape == (64, 100)
    assert _mapped_file_kib() - before < 16 * 1024
