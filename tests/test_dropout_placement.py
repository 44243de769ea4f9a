"""Where dropout sits: between the LSTM layers always, after the last one only with ``output_dropout``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seqpred.backend import OptimizerSettings
from seqpred.spec import ModelSpec
from seqpred.weights import init_weights

from .backend_helpers import loaded, needs_keras, needs_torch

BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("torch", id="torch", marks=needs_torch),
    pytest.param("keras", id="keras", marks=needs_keras),
]


def _losses(backend: str, spec: ModelSpec, steps: int = 3) -> list[float]:
    model = loaded(backend, spec, init_weights(spec, 0))
    model.configure_training(OptimizerSettings())
    rng = np.random.default_rng(0)
    losses = []
    for step in range(steps):
        rows = rng.integers(0, spec.vocab_size, (4, spec.seq_len + 1)).astype(np.int32)
        losses.append(model.train_batch(rows[:, :-1], rows[:, 1:], 1e-2, step=step))
    return losses


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_layer_without_output_dropout_trains_as_without_dropout(backend):
    base = dict(vocab_size=12, hidden=8, layers=1, embedding=4, seq_len=6)
    plain = _losses(backend, ModelSpec(**base, dropout=0.0))
    unplaced = _losses(backend, ModelSpec(**base, dropout=0.5, output_dropout=False))
    placed = _losses(backend, ModelSpec(**base, dropout=0.5, output_dropout=True))
    np.testing.assert_allclose(unplaced, plain, rtol=1e-5)
    assert not np.allclose(placed[1:], plain[1:], rtol=1e-3), "output_dropout=True dropped nothing"


def test_layer_dropout_rates():
    spec = ModelSpec(vocab_size=5, layers=3, dropout=0.3, output_dropout=False)
    assert [spec.layer_dropout(k) for k in range(3)] == [0.3, 0.3, 0.0]
    assert ModelSpec(vocab_size=5, layers=3, dropout=0.3).layer_dropout(2) == 0.3


def test_the_default_preset_drops_between_layers_and_the_article_after_every_layer(cli, corpus, tmp_path):
    from .conftest import TINY

    for preset, expected in (("default", False), ("article", True)):
        out = tmp_path / preset
        result = cli(
            "train", corpus, "--preset", preset, "--backend", "numpy", "--out", out, "--max-steps", "1",
            "--quiet", *TINY,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert json.loads((out / "model.json").read_text())["output_dropout"] is expected


def test_a_model_file_without_the_field_keeps_dropout_after_every_layer():
    old = {"vocab_size": 5, "hidden": 8, "layers": 2, "embedding": 4, "dropout": 0.2}
    assert ModelSpec.from_dict(old).output_dropout is True
