"""The NumPy backend's own maths: gradients, Adam, clipping, dropout, agreement with torch, and the CLI.

The conformance kit (tests/test_conformance.py) checks the contract; these check what the kit cannot
see from outside: that the hand-written backward pass is the derivative of the forward pass, and
that training follows the torch backend step for step.
"""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from seqpred import ModelSpec, OptimizerSettings, bptt
from seqpred.batches import TrainBatches
from seqpred.cli import app
from seqpred.errors import UsageError
from seqpred.optim import Adam, clip_by_global_norm
from seqpred.train import build_model
from seqpred.vocab import build_char_vocab_and_ids
from seqpred.weights import init_weights


@pytest.fixture
def torch_one_thread():
    """The models compared with torch are tiny: one thread is faster, and far faster on a busy machine."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


TEXT = "the cat sat on the mat. the dog sat on the log. a bird sang in the tree.\n" * 30


def _case(embedding: int, objective: str, seed: int = 0):
    """A tiny float64 problem: spec, noisy weights, a batch and fixed dropout masks."""
    spec = ModelSpec(
        vocab_size=7, hidden=4, layers=2, embedding=embedding, dropout=0.3, objective=objective, seq_len=5
    )
    rng = np.random.default_rng(seed)
    weights = {
        n: w.astype(np.float64) + rng.normal(0, 0.3, w.shape) for n, w in init_weights(spec, 1).items()
    }
    inputs = rng.integers(0, spec.vocab_size, (3, 5))
    targets = rng.integers(0, spec.vocab_size, (3, 5) if objective == "sequence" else (3,))
    masks = bptt.dropout_masks(spec, rng, 3, 5, np.float64)
    return spec, weights, inputs, targets, masks


@pytest.mark.parametrize("objective", ["sequence", "last"])
@pytest.mark.parametrize("embedding", [5, 0], ids=["embedding", "scaled-input"])
def test_gradients_match_finite_differences(embedding, objective):
    spec, weights, inputs, targets, masks = _case(embedding, objective)
    _, grads, _ = bptt.loss_and_gradients(spec, weights, inputs, targets, masks)
    assert set(grads) == set(weights)
    h = 1e-6
    for name, tensor in weights.items():
        numeric = np.zeros_like(tensor)
        for index in np.ndindex(tensor.shape):
            saved = tensor[index]
            tensor[index] = saved + h
            plus, _, _ = bptt.loss_and_gradients(spec, weights, inputs, targets, masks)
            tensor[index] = saved - h
            minus, _, _ = bptt.loss_and_gradients(spec, weights, inputs, targets, masks)
            tensor[index] = saved
            numeric[index] = (plus - minus) / (2 * h)
        assert grads[name].dtype == np.float64
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-5, atol=1e-8, err_msg=name)


def test_dropout_masks_are_inverted_and_seeded():
    spec = ModelSpec(vocab_size=5, hidden=64, layers=2, dropout=0.25, seq_len=8)
    masks = bptt.dropout_masks(spec, np.random.default_rng([3, 7]), 16, 8, np.float32)
    again = bptt.dropout_masks(spec, np.random.default_rng([3, 7]), 16, 8, np.float32)
    other = bptt.dropout_masks(spec, np.random.default_rng([3, 8]), 16, 8, np.float32)
    assert len(masks) == spec.layers and masks[0].shape == (16, 8, 64) and masks[0].dtype == np.float32
    assert set(np.unique(masks[0])) == {0.0, np.float32(1 / 0.75)}
    assert abs(float(np.mean(masks[0])) - 1.0) < 0.05  # kept units are scaled up by 1 / (1 - p)
    assert all(np.array_equal(a, b) for a, b in zip(masks, again, strict=True))
    assert not np.array_equal(masks[0], other[0])
    no_dropout = ModelSpec(vocab_size=5, dropout=0.0)
    assert bptt.dropout_masks(no_dropout, np.random.default_rng(0), 2, 3, np.float32) is None


def test_adam_and_clipping_match_torch(torch_one_thread):
    torch = torch_one_thread
    rng = np.random.default_rng(0)
    start = rng.normal(size=(6, 5)).astype(np.float32)
    settings = OptimizerSettings(beta1=0.8, beta2=0.99, epsilon=1e-6, clip=0.5)
    ours = {"w": start.copy()}
    adam = Adam(ours, settings)
    theirs = torch.nn.Parameter(torch.from_numpy(start.copy()))
    optimizer = torch.optim.Adam([theirs], lr=1.0, betas=(0.8, 0.99), eps=1e-6, foreach=False)
    for step, lr in enumerate([1e-2, 5e-3, 2e-2, 1e-3, 1e-2], start=1):
        grad = (rng.normal(size=start.shape) * step).astype(np.float32)
        grads = {"w": grad.copy()}
        clip_by_global_norm(grads, settings.clip)
        adam.update(ours, grads, lr)
        theirs.grad = torch.from_numpy(grad.copy())
        torch.nn.utils.clip_grad_norm_([theirs], settings.clip)
        optimizer.param_groups[0]["lr"] = lr
        optimizer.step()
        np.testing.assert_allclose(grads["w"], theirs.grad.numpy(), rtol=1e-6)
        np.testing.assert_allclose(ours["w"], theirs.detach().numpy(), rtol=1e-6, atol=1e-7)
    torch_state = optimizer.state[theirs]
    np.testing.assert_allclose(adam.m["w"], torch_state["exp_avg"].numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(adam.v["w"], torch_state["exp_avg_sq"].numpy(), rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize(
    ("embedding", "objective", "clip", "batch_size"),
    [(8, "sequence", 1.0, 8), (0, "last", None, 64)],
    ids=["embedding", "article-like"],
)
@pytest.mark.slow
def test_training_follows_torch_for_100_steps(torch_one_thread, embedding, objective, clip, batch_size):
    """Same weights, batches and learning rates, no dropout: the losses agree to 1% at all 100 steps."""
    vocab, ids = build_char_vocab_and_ids(TEXT)
    spec = ModelSpec(
        vocab_size=len(vocab),
        hidden=32,
        layers=2,
        embedding=embedding,
        dropout=0.0,
        objective=objective,
        seq_len=16,
    )
    batches = TrainBatches(ids, spec.seq_len, batch_size, objective, seed=3)
    rates = [2e-2 * 0.99**step for step in range(100)]  # a decaying rate: lr is honoured per call
    losses = {}
    for name in ("numpy", "torch"):
        model = build_model(name, spec, "cpu", 0)
        model.set_weights(init_weights(spec, 0))
        model.configure_training(OptimizerSettings(clip=clip))
        losses[name] = np.array(
            [
                model.train_batch(b.inputs, b.targets, lr, step=s)
                for s, (b, lr) in enumerate(zip(map(batches.batch, range(100)), rates, strict=True))
            ]
        )
    assert losses["torch"][-1] < 0.9 * losses["torch"][0], "the comparison needs a run that learns"
    np.testing.assert_allclose(losses["numpy"], losses["torch"], rtol=0.01)


def test_the_backend_runs_on_the_cpu_only():
    spec = ModelSpec(vocab_size=5, hidden=4, layers=1, seq_len=4)
    assert build_model("numpy", spec, "auto", 0).spec == spec
    # The core refuses a device the backend does not declare, before the backend sees it.
    with pytest.raises(UsageError, match="does not run on 'cuda'; it offers: cpu, auto"):
        build_model("numpy", spec, "cuda", 0)


# -- command line -------------------------------------------------------------------------------

TINY = "--hidden 16 --embedding 8 --seq-len 16 --batch-size 8 --val-every 4 --max-steps 6 --quiet".split()


def _invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_cli_trains_and_generates_with_numpy(corpus, tmp_path):
    out = tmp_path / "run"
    _invoke("train", corpus, "--backend", "numpy", "--out", out, *TINY)
    meta = json.loads((out / "run.json").read_text())
    assert meta["backend"] == "numpy" and meta["step"] == 6
    text = _invoke("generate", out, "--length", "40", "--prime", "the ", "--seed", "1")
    assert text.startswith("the ") and len(text) == len("the ") + 40 + len("\n")
    samples = json.loads(
        _invoke("generate", out, "--length", "25", "--seed", "1", "--num-samples", "2", "--json")
    )
    assert samples["backend"] == "numpy" and [len(s) for s in samples["samples"]] == [25, 25]


def test_cli_generates_with_numpy_from_a_torch_run(torch_one_thread, corpus, tmp_path):
    out = tmp_path / "run"
    _invoke("train", corpus, "--backend", "torch", "--out", out, *TINY)
    args = ("generate", out, "--length", "60", "--prime", "the ", "--greedy", "--json")
    on_numpy = json.loads(_invoke(*args, "--backend", "numpy"))
    on_torch = json.loads(_invoke(*args, "--backend", "torch"))
    assert on_numpy["backend"] == "numpy" and len(on_numpy["samples"][0]) == 60
    # The same weights give the same logits, so greedy decoding picks the same characters.
    assert on_numpy["samples"] == on_torch["samples"]
