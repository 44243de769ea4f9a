"""Property-based tests of the loaders: whatever the bytes, the answer is a valid object or a clean
seqpred error with a one-line message, never another exception."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from seqpred.config import TrainConfig
from seqpred.errors import SeqpredError
from seqpred.runs import (
    LATEST_FILE,
    MODEL_FILE,
    RUN_FILE,
    TRAIN_FILE,
    VOCAB_FILE,
    Run,
    RunRecord,
    json_bytes,
    load_run,
    tensor_bytes,
)
from seqpred.spec import ModelSpec
from seqpred.text_sources import read_corpus
from seqpred.vocab import Vocab
from seqpred.weights import canonical_shapes, init_weights

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SPEC = ModelSpec(vocab_size=5, hidden=4, layers=2, embedding=3, dropout=0.0, seq_len=8)
VOCAB = Vocab(["\n", " ", "a", "b", "c"], "char")
JSON_FILES = (RUN_FILE, MODEL_FILE, VOCAB_FILE, TRAIN_FILE)
FILES = (*JSON_FILES, LATEST_FILE)


def valid_files() -> dict[str, bytes]:
    meta = RunRecord("torch").to_dict()
    return {
        RUN_FILE: json_bytes(meta),
        MODEL_FILE: json_bytes(SPEC.to_dict()),
        VOCAB_FILE: VOCAB.to_json().encode("utf-8"),
        TRAIN_FILE: json_bytes(TrainConfig(corpus="c.txt").to_dict()),
        LATEST_FILE: tensor_bytes(init_weights(SPEC, 0), {"step": "0"}),
    }


VALID = valid_files()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def check_outcome(folder: Path, checkpoint: str = "best") -> None:
    """load_run gives a consistent Run or raises a SeqpredError with a one-line message."""
    try:
        run = load_run(folder, checkpoint)
    except SeqpredError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        return
    assert isinstance(run, Run)
    assert len(run.vocab) == run.spec.vocab_size
    shapes = canonical_shapes(run.spec)
    assert {name: w.shape for name, w in run.weights.items()} == shapes
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in run.weights.values())
    assert isinstance(run.meta, dict) and isinstance(run.config, dict)


def load_files(files: dict[str, bytes], checkpoint: str = "best") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        check_outcome(folder, checkpoint)


def test_the_unmutated_run_loads():
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in VALID.items():
            (Path(tmp) / name).write_bytes(data)
        assert load_run(tmp).spec == SPEC


# -- the run folder ---------------------------------------------------------------------------


@FUZZ
@given(name=st.sampled_from(FILES), data=st.binary(max_size=600))
def test_any_bytes_in_one_file(name, data):
    load_files({**VALID, name: data})


@FUZZ
@given(name=st.sampled_from(FILES), missing=st.booleans(), data=st.data())
def test_truncated_or_missing_file(name, missing, data):
    files = dict(VALID)
    if missing:
        del files[name]
    else:
        files[name] = files[name][: data.draw(st.integers(0, len(files[name])))]
    load_files(files)


@FUZZ
@given(
    name=st.sampled_from(FILES),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.booleans(),
)
def test_mutated_bytes(name, edits, cut):
    data = bytearray(VALID[name])
    for position, value in edits:
        i = position % len(data)
        if cut:
            del data[i]
        else:
            data[i] = value
    load_files({**VALID, name: bytes(data)})


@FUZZ
@given(name=st.sampled_from(JSON_FILES), key=st.data(), value=json_values, delete=st.booleans())
@example(name=MODEL_FILE, key=None, value=10**18, delete=False)  # a stack too deep to count
@example(name=RUN_FILE, key=None, value=True, delete=False)
def test_mutated_json_field(name, key, value, delete):
    document = json.loads(VALID[name])
    keys = sorted(document)
    chosen = key.draw(st.sampled_from(keys) | st.text(max_size=8)) if key is not None else None
    if chosen is None:  # the explicit examples: layers, format_version
        chosen = "layers" if name == MODEL_FILE else "format_version"
    if delete:
        document.pop(chosen, None)
    else:
        document[chosen] = value
    load_files({**VALID, name: json.dumps(document).encode("utf-8")})


@FUZZ
@given(name=st.sampled_from(JSON_FILES), value=json_values)
def test_any_json_document(name, value):
    load_files({**VALID, name: json.dumps(value).encode("utf-8")})


@pytest.mark.parametrize("name", JSON_FILES)
@pytest.mark.parametrize("depth", [200, 5000, 100_000])
def test_deeply_nested_json(name, depth):
    load_files({**VALID, name: b"[" * depth + b"]" * depth})
    field = {RUN_FILE: "backend", MODEL_FILE: "hidden", VOCAB_FILE: "level", TRAIN_FILE: "seed"}[name]
    document = json.loads(VALID[name])
    nested = "[" * depth + "]" * depth
    text = json.dumps(document)[:-1] + f', "{field}": {nested}' + "}"
    load_files({**VALID, name: text.encode("utf-8")})


dtypes = st.sampled_from(["float32", "float64", "float16", "int32", "uint8", "bool"])


@st.composite
def tensor_sets(draw):
    """Canonical tensors with some names dropped, renamed, reshaped, retyped or filled with NaN."""
    tensors = dict(init_weights(SPEC, 0))
    for name in draw(st.lists(st.sampled_from(sorted(tensors)), max_size=3, unique=True)):
        action = draw(st.sampled_from(["drop", "rename", "shape", "dtype", "nan", "scalar"]))
        array = tensors.pop(name, None)
        if array is None:
            continue
        if action == "rename":
            tensors[draw(st.text(min_size=1, max_size=12))] = array
        elif action == "shape":
            shape = draw(st.lists(st.integers(0, 6), max_size=3))
            tensors[name] = np.zeros(shape, dtype=np.float32)
        elif action == "dtype":
            tensors[name] = array.astype(draw(dtypes))
        elif action == "nan":
            array = array.copy()
            array.flat[draw(st.integers(0, array.size - 1))] = draw(
                st.sampled_from([np.nan, np.inf, -np.inf])
            )
            tensors[name] = array
        elif action == "scalar":
            tensors[name] = np.asarray(1.0, dtype=np.float32)
    return tensors


@FUZZ
@given(tensors=tensor_sets(), checkpoint=st.sampled_from(["best", "latest"]))
def test_tensors_that_may_not_fit_the_model(tensors, checkpoint):
    load_files({**VALID, LATEST_FILE: tensor_bytes(tensors)}, checkpoint)


def _split_safetensors(data: bytes) -> tuple[dict, bytes]:
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]), data[8 + size :]


@FUZZ
@given(
    tensor=st.sampled_from(sorted(canonical_shapes(SPEC))),
    field=st.sampled_from(["dtype", "shape", "data_offsets"]),
    value=json_values
    | st.lists(st.integers(-(2**70), 2**70), max_size=3)
    | st.sampled_from(["F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "C64"]),
)
def test_mutated_safetensors_header(tensor, field, value):
    header, body = _split_safetensors(VALID[LATEST_FILE])
    header[tensor][field] = value
    raw = json.dumps(header).encode("utf-8")
    load_files({**VALID, LATEST_FILE: len(raw).to_bytes(8, "little") + raw + body})


# -- the vocabulary ---------------------------------------------------------------------------


def check_vocab(text: str) -> None:
    try:
        vocab = Vocab.from_json(text)
    except SeqpredError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert len(vocab) >= 1 and len(set(vocab.tokens)) == len(vocab.tokens)
    assert all(isinstance(t, str) and t for t in vocab.tokens)
    assert vocab.level in ("char", "word")
    assert Vocab.from_json(vocab.to_json()) == vocab


@FUZZ
@given(text=st.text(max_size=200))
@example(text="[" * 100_000)
@example(text='{"tokens": ["a"], "level": ' + "[" * 5000 + "]" * 5000 + "}")
@example(text='{"tokens": [' + "1" * 5000 + "]}")
def test_vocabulary_from_any_text(text):
    check_vocab(text)


@FUZZ
@given(value=json_values)
def test_vocabulary_from_any_json_value(value):
    check_vocab(json.dumps(value))


@FUZZ
@given(
    tokens=st.lists(st.text(max_size=3) | json_values, max_size=8),
    level=st.sampled_from(["char", "word"]) | json_values,
)
def test_vocabulary_from_any_tokens_and_level(tokens, level):
    check_vocab(json.dumps({"level": level, "tokens": tokens}))


# -- the corpus -------------------------------------------------------------------------------


@FUZZ
@given(
    data=st.binary(max_size=400) | st.text(max_size=200).map(lambda t: t.encode("utf-8")), lower=st.booleans()
)
@example(data=b"\xef\xbb\xbf", lower=False)  # a byte-order mark alone
@example(data=b"\r\n\r", lower=False)
def test_corpus_from_any_bytes(data, lower):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.txt"
        path.write_bytes(data)
        try:
            text = read_corpus(path, lower=lower)
        except SeqpredError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
        assert isinstance(text, str) and text.strip() and "\r" not in text and not text.startswith("\ufeff")


@FUZZ
@given(
    parts=st.dictionaries(st.sampled_from(["a.txt", "b.txt", "sub/c.txt", "d.md"]), st.binary(max_size=100))
)
def test_corpus_folder_from_any_files(parts):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, data in parts.items():
            (folder / name).parent.mkdir(exist_ok=True)
            (folder / name).write_bytes(data)
        try:
            text = read_corpus(folder)
        except SeqpredError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
        assert text.strip() and text.endswith("\n") and "\r" not in text
