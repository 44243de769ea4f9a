"""ONNX export (``seqpred export``) and generation from the exported graph.

The graph is written from the canonical weights; these tests check it with onnx's full checker,
check the gate-order mapping tensor by tensor, run it in onnxruntime against the float64 NumPy
reference over 200 steps with the state carried, and check that one seed gives one text on every
backend, from the run folder and from the file alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from seqpred import export
from seqpred.config import resolve
from seqpred.models import build_model
from seqpred.reference import ReferenceModel
from seqpred.runs import load_run
from seqpred.vocab import Vocab
from seqpred.weights import init_weights
from tests.backend_helpers import needs_torch, tiny_spec
from tests.conftest import TINY, make_text, one_line_error

TOLERANCE = 1e-5
STEPS = 200


def realistic_weights(spec, seed=0):
    """Initial weights with noise on every tensor (so that a wrong gate order or bias shows), at the
    scale of a trained model's: full-size random matrices would make the recurrence chaotic, where
    float32 rounding alone moves the logits by 1e-3 after 200 steps in any implementation."""
    rng = np.random.default_rng(seed + 1)
    return {
        name: (w + rng.normal(0.0, 0.02, w.shape)).astype(np.float32)
        for name, w in init_weights(spec, seed).items()
    }


def preset_spec(case: str):
    """The model of a real run: the default preset on characters, the article preset, the default on words."""
    if case == "word":
        vocab = Vocab.build(make_text(), "word")
        return resolve({"corpus": "c.txt", "level": "word"}).model_spec(len(vocab)), vocab
    vocab = Vocab.build(make_text().lower() if case == "article" else make_text())
    return resolve({"corpus": "c.txt", "preset": case}).model_spec(len(vocab)), vocab


@pytest.fixture
def numpy_run(cli, corpus, tmp_path):
    out = tmp_path / "numpy-run"
    result = cli("train", corpus, "--backend", "numpy", "--out", out, "--max-steps", "6", "--quiet", *TINY)
    assert result.exit_code == 0, result.output
    return out


# -- the graph ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["default", "article"])
def test_the_graph_passes_the_full_checker_with_a_stated_opset(case):
    spec, vocab = preset_spec(case)
    model = export.onnx_model(spec, realistic_weights(spec), vocab, {"lower": case == "article"})
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", export.OPSET)]
    assert model.ir_version == export.IR_VERSION
    graph = model.graph
    assert [i.name for i in graph.input] == list(export.INPUTS)
    assert [o.name for o in graph.output] == list(export.OUTPUTS)
    assert [node.op_type for node in graph.node].count("LSTM") == spec.layers
    assert ("Gather" in [n.op_type for n in graph.node]) == (case == "default")
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["seqpred.spec"]) == spec.to_dict()
    assert Vocab.from_json(props["seqpred.vocab"]) == vocab
    assert props["seqpred.version"] and props["seqpred.format"] == export.FORMAT


def test_the_lstm_tensors_map_the_canonical_gate_order_to_onnx():
    spec = tiny_spec(hidden=5, layers=1, embedding=3)
    weights = realistic_weights(spec)
    h = spec.hidden
    kernel, recurrent, bias = (weights[f"lstm.0.{n}"] for n in ("kernel", "recurrent_kernel", "bias"))
    tensors = export.lstm_tensors(spec, weights, 0)
    assert tensors["W"].shape == (1, 4 * h, 3) and tensors["R"].shape == (1, 4 * h, h)
    assert tensors["B"].shape == (1, 8 * h)
    # ONNX stacks i, o, f, c; the canonical layout i, f, c, o.
    for onnx_block, canonical_block in enumerate((0, 3, 1, 2)):
        rows, cols = (
            slice(onnx_block * h, (onnx_block + 1) * h),
            slice(canonical_block * h, (canonical_block + 1) * h),
        )
        np.testing.assert_array_equal(tensors["W"][0, rows], kernel[:, cols].T)
        np.testing.assert_array_equal(tensors["R"][0, rows], recurrent[:, cols].T)
        np.testing.assert_array_equal(tensors["B"][0, rows], bias[cols])
    np.testing.assert_array_equal(tensors["B"][0, 4 * h :], 0.0)
    back = export.canonical_lstm(spec, tensors["W"], tensors["R"], tensors["B"])
    for name, value in back.items():
        np.testing.assert_array_equal(value, weights[f"lstm.0.{name}"], err_msg=name)


# -- exactness -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["default", "article", "word"])
def test_logits_equal_the_reference_over_200_carried_steps(case):
    spec, vocab = preset_spec(case)
    weights = realistic_weights(spec)
    model = build_model("onnx", spec, "cpu", 0)
    model.set_weights(weights)
    reference = ReferenceModel(spec, weights)
    tokens = np.random.default_rng(0).integers(0, spec.vocab_size, (2, STEPS)).astype(np.int32)
    state, expected_state = model.initial_state(2), reference.initial_state(2)
    worst = 0.0
    for t in range(STEPS):
        logits, state = model.step(tokens[:, t], state)
        expected, expected_state = reference.step(tokens[:, t], expected_state)
        worst = max(worst, float(np.abs(logits - expected).max()))
    assert worst <= TOLERANCE, f"{case}: largest difference {worst:.2e} over {STEPS} steps"
    # The same graph scores the whole sequence in one call and ends in the same state.
    whole, whole_state = model.forward(tokens, model.initial_state(2))
    expected_whole, _ = reference.forward(tokens)
    assert np.abs(whole - expected_whole).max() <= TOLERANCE
    np.testing.assert_allclose(model.state_to_numpy(whole_state), model.state_to_numpy(state), atol=TOLERANCE)


def test_the_exported_file_runs_as_written_in_onnxruntime(tmp_path):
    """The deployed artefact itself, not a rebuilt graph: the file's own graph, stepped by
    onnxruntime with the state carried through its inputs and outputs, matches the reference."""
    spec, vocab = preset_spec("default")
    weights = realistic_weights(spec)
    path = tmp_path / "model.onnx"
    path.write_bytes(export.onnx_model(spec, weights, vocab).SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = ReferenceModel(spec, weights)
    tokens = np.random.default_rng(1).integers(0, spec.vocab_size, (3, STEPS))
    h = c = np.zeros((spec.layers, 3, spec.hidden), np.float32)
    expected_state = reference.initial_state(3)
    for t in range(STEPS):
        logits, h, c = session.run(None, {"tokens": tokens[:, t : t + 1], "initial_h": h, "initial_c": c})
        expected, expected_state = reference.step(tokens[:, t], expected_state)
        assert np.abs(logits[:, 0] - expected).max() <= TOLERANCE, f"step {t + 1}"
    np.testing.assert_allclose(h[-1], expected_state[-1][0], atol=TOLERANCE)


# -- seqpred export ------------------------------------------------------------------------------
def test_export_writes_a_file_that_loads_back_as_the_run(cli, numpy_run):
    result = cli("export", numpy_run)
    path = numpy_run.parent / "numpy-run.onnx"
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {path} (") and f"seqpred generate {path}" in result.stdout
    run, loaded = load_run(numpy_run), load_run(path)
    assert loaded.spec == run.spec and loaded.vocab == run.vocab
    assert loaded.backend == "onnx" and loaded.meta["trained_backend"] == "numpy"
    assert loaded.config == {k: run.config[k] for k in export.CONFIG_KEYS}
    for name, value in run.weights.items():
        np.testing.assert_array_equal(loaded.weights[name], value, err_msg=name)
    # What the backend builds in memory from those weights is the file's graph, byte for byte.
    in_memory = export.build_graph(loaded.spec, loaded.weights).graph.SerializeToString()
    assert onnx.load(str(path)).graph.SerializeToString() == in_memory


def test_export_options(cli, numpy_run, tmp_path):
    out = tmp_path / "deploy" / "m.onnx"
    out.parent.mkdir()
    assert cli("export", numpy_run, "--out", out, "--checkpoint", "latest", "--format", "onnx").exit_code == 0
    latest = load_run(numpy_run, "latest").weights
    np.testing.assert_array_equal(load_run(out).weights["dense.bias"], latest["dense.bias"])
    one_line_error(cli("export", numpy_run, "--format", "tflite"), 2, "--format must be onnx")
    one_line_error(cli("export", numpy_run, "--out", tmp_path / "nowhere" / "m.onnx"), 2, "no such folder")
    one_line_error(cli("export", tmp_path / "missing"), 1, "no such run folder")


def test_a_file_that_is_not_a_seqpred_export_is_one_line(cli, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a protobuf at all" * 10)
    one_line_error(cli("generate", garbage, "--length", "5"), 1, "not a valid ONNX file")
    spec = tiny_spec()
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(export.build_graph(spec, realistic_weights(spec)).SerializeToString())
    one_line_error(cli("generate", foreign), 1, "not a seqpred export")
    newer = export.onnx_model(spec, realistic_weights(spec), Vocab([chr(65 + i) for i in range(30)]))
    onnx.helper.set_model_props(newer, {"seqpred.format": export.FORMAT, "seqpred.format_version": "99"})
    (tmp_path / "newer.onnx").write_bytes(newer.SerializeToString())
    one_line_error(cli("evaluate", tmp_path / "newer.onnx", "c.txt"), 1, "newer than this seqpred")


# -- generation and scoring from the export ------------------------------------------------------
def generated(cli, run, *args):
    result = cli("generate", run, "--length", "150", "--prime", "The ", "--seed", "5", *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_same_seed_gives_the_same_text_from_the_folder_and_the_file(cli, numpy_run):
    expected = generated(cli, numpy_run, "--backend", "numpy")
    assert cli("export", numpy_run, "--out", numpy_run.parent / "m.onnx").exit_code == 0
    assert generated(cli, numpy_run, "--backend", "onnx") == expected
    assert generated(cli, numpy_run.parent / "m.onnx") == expected  # the file's default backend: onnx
    assert generated(cli, numpy_run.parent / "m.onnx", "--backend", "numpy") == expected


@needs_torch
def test_a_torch_run_gives_the_same_text_on_onnx_as_on_torch_and_numpy(cli, tiny_run):
    expected = generated(cli, tiny_run, "--backend", "torch")
    assert generated(cli, tiny_run, "--backend", "numpy") == expected
    assert generated(cli, tiny_run, "--backend", "onnx") == expected
    samples = [
        cli("generate", tiny_run, "--backend", b, "--num-samples", "4", "--seed", "2", "--json")
        for b in ("torch", "onnx")
    ]
    assert json.loads(samples[0].stdout)["samples"] == json.loads(samples[1].stdout)["samples"]


def test_a_word_level_run_gives_the_same_text(cli, corpus, tmp_path):
    out = tmp_path / "words"
    trained = cli(
        "train",
        corpus,
        "--backend",
        "numpy",
        "--level",
        "word",
        "--out",
        out,
        "--max-steps",
        "6",
        "--quiet",
        *TINY,
    )
    assert trained.exit_code == 0, trained.output
    assert cli("export", out).exit_code == 0
    expected = generated(cli, out, "--backend", "numpy")
    assert generated(cli, out, "--backend", "onnx") == expected
    assert generated(cli, tmp_path / "words.onnx") == expected


def test_evaluate_scores_the_file_as_the_run(cli, numpy_run, corpus):
    assert cli("export", numpy_run).exit_code == 0
    on_folder = json.loads(cli("evaluate", numpy_run, corpus, "--backend", "numpy", "--json").stdout)
    on_file = json.loads(cli("evaluate", numpy_run.parent / "numpy-run.onnx", corpus, "--json").stdout)
    assert on_file["backend"] == "onnx" and on_file["tokens"] == on_folder["tokens"]
    assert on_file["loss"] == pytest.approx(on_folder["loss"], rel=1e-5)


# -- what importing costs --------------------------------------------------------------------------
def test_seqpred_and_its_help_import_neither_onnx_nor_onnxruntime():
    probe = (
        "import sys, seqpred, seqpred.cli, seqpred.export\n"
        "from typer.testing import CliRunner\n"
        "assert CliRunner().invoke(seqpred.cli.app, ['--help']).exit_code == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime')))"
    )
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_the_readme_generates_with_onnxruntime_alone(cli, numpy_run, tmp_path):
    """The README's snippet, run on an export, writes the text of seqpred generate --greedy."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    snippet = (
        readme.split("## Deploying without a framework", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    )
    assert "import seqpred" not in snippet and "from seqpred" not in snippet
    model = tmp_path / "m.onnx"
    assert cli("export", numpy_run, "--out", model).exit_code == 0
    code = snippet.replace('"runs/demo.onnx"', repr(str(model))).replace('"Shall I "', '"The "')
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    expected = cli("generate", numpy_run, "--greedy", "--prime", "The ", "--length", "200").stdout
    assert "The " + printed == expected
