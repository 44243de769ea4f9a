"""Plain PyTorch loops over canonical weights, written as a user would without seqpred."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from seqpred.spec import ModelSpec
from seqpred_torch.mapping import from_canonical


class Net(nn.Module):
    def __init__(self, spec: ModelSpec, weights: dict[str, np.ndarray]):
        super().__init__()
        if spec.embedding:
            self.embed = nn.Embedding(spec.vocab_size, spec.embedding)
        self.lstm = nn.LSTM(spec.input_size, spec.hidden, spec.layers, batch_first=True)
        self.dense = nn.Linear(spec.hidden, spec.vocab_size)
        self.load_state_dict({k: torch.from_numpy(v) for k, v in from_canonical(spec, weights).items()})
        self.eval()


def tutorial_loop(spec: ModelSpec, weights, window: np.ndarray):
    """The article's generation: re-run the model on the whole window for every character, argmax."""
    net = Net(spec, weights)
    pattern = list(window)

    @torch.inference_mode()
    def run(chars: int = 5) -> int:
        for _ in range(chars):
            x = torch.tensor(pattern[-len(window) :], dtype=torch.float32).reshape(1, -1, 1) / spec.vocab_size
            out, _ = net.lstm(x)
            pattern.append(int(net.dense(out[:, -1]).argmax()))
        return chars

    return run


def stateful_loop(spec: ModelSpec, weights, streams: int):
    """The usual hand-written sampler: nn.LSTM one step at a time with carried state, multinomial."""
    net = Net(spec, weights)
    torch.manual_seed(0)

    @torch.inference_mode()
    def run(chars: int = 100) -> int:
        token = torch.zeros(streams, 1, dtype=torch.long)
        state = None
        for _ in range(chars):
            out, state = net.lstm(net.embed(token), state)
            probs = torch.softmax(net.dense(out[:, -1]), dim=-1)
            token = torch.multinomial(probs, 1)
        return chars * streams

    return run


def train_loop(spec: ModelSpec, weights, batches, clip: float = 5.0):
    """The usual hand-written training step: forward, cross-entropy, backward, clip, Adam."""
    net = Net(spec, weights)
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    stream = batches.iter_from(0)

    def run(steps: int = 2) -> int:
        done = 0
        for _ in range(steps):
            batch = next(stream)
            x = torch.from_numpy(batch.inputs).long()
            y = torch.from_numpy(batch.targets).long()
            out, _ = net.lstm(net.embed(x))
            loss = loss_fn(net.dense(out).reshape(-1, spec.vocab_size), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), clip)
            optimizer.step()
            loss.item()
            done += batch.predicted_tokens
        return done

    return run
