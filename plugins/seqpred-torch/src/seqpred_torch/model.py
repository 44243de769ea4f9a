"""The torch network and its translation of the seqpred model contract."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from seqpred import Model, ModelSpec, OptimizerSettings
from seqpred.optim import pack_optimizer_state, unpack_optimizer_state
from seqpred.threads import chosen_threads, inter_op_threads
from seqpred.weights import canonical_shapes

from .mapping import from_canonical, parameter_map, to_canonical


class LSTMNet(nn.Module):
    """Embedding (or scaled id) → stacked LSTM with dropout between layers (and after the last one
    when the spec says so) → dense logits."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        if spec.embedding:
            self.embed = nn.Embedding(spec.vocab_size, spec.embedding)
        self.lstm = nn.LSTM(
            spec.input_size,
            spec.hidden,
            num_layers=spec.layers,
            batch_first=True,
            dropout=spec.dropout if spec.layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(spec.layer_dropout(spec.layers - 1))
        self.dense = nn.Linear(spec.hidden, spec.vocab_size)

    def inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.spec.embedding:
            return self.embed(tokens)
        return (tokens.to(torch.float32) / self.spec.vocab_size).unsqueeze(-1)

    def forward(self, tokens: torch.Tensor, state=None, last_only: bool = False):
        out, state = self.lstm(self.inputs(tokens), state)
        if last_only:
            out = out[:, -1]
        return self.dense(self.drop(out)), state


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("CUDA was asked for but torch sees no GPU; use --device cpu")
    return torch.device(device)


def apply_threads() -> None:
    """Give torch the thread count seqpred chose for this process (``seqpred.threads``), if any."""
    threads = chosen_threads()
    if threads is None:
        return
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # settable once, before any inter-op work
        torch.set_num_interop_threads(inter_op_threads(threads))


class TorchModel(Model):
    """Training runs ``nn.LSTM`` over whole windows: on a GPU, cuDNN's fused kernel."""

    def __init__(
        self, spec: ModelSpec, *, device: str = "cpu", seed: int = 0, replicas=None, precision="fp32"
    ):
        apply_threads()
        self.spec = spec
        self.replicas = replicas
        if replicas is not None:
            from .distributed import replica_device

            self.device = replica_device(replicas)
        else:
            self.device = resolve_device(device)
        self.seed = seed
        # bf16: autocast during training's forward pass; parameters and Adam's moments stay float32.
        self.autocast = precision == "bf16"
        torch.manual_seed(seed)
        self.net = LSTMNet(spec).to(self.device)
        for k in range(spec.layers):
            getattr(self.net.lstm, f"bias_hh_l{k}").requires_grad_(False)
        self.train_net: nn.Module = self.net  # what a training step runs: DDP's wrapper with replicas
        if replicas is not None and replicas.processes > 1:
            from .distributed import data_parallel

            self.train_net = data_parallel(self.net, self.device)
        self.optimizer: torch.optim.Optimizer | None = None
        self.clip: float | None = None
        self._step_weights = None

    # -- weights ---------------------------------------------------------------------------
    def get_weights(self):
        # .numpy() of a CPU tensor shares its memory; callers get arrays of their own.
        params = {n: p.detach().cpu().numpy().copy() for n, p in self.net.named_parameters()}
        return to_canonical(self.spec, params)

    @torch.no_grad()
    def set_weights(self, weights):
        params = dict(self.net.named_parameters())
        for name, value in from_canonical(self.spec, weights).items():
            params[name].copy_(torch.from_numpy(value))
        self._step_weights = None

    # -- training --------------------------------------------------------------------------
    def configure_training(self, settings: OptimizerSettings) -> None:
        trainable = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(
            trainable,
            lr=1e-3,
            betas=(settings.beta1, settings.beta2),
            eps=settings.epsilon,
            foreach=False,
        )
        self.clip = settings.clip

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(array, dtype=np.int64)).to(self.device)

    def _loss(self, inputs: np.ndarray, targets: np.ndarray, state=None, net: nn.Module | None = None):
        """The mean loss and the state after the last step."""
        last = self.spec.objective == "last"
        logits, state = (net or self.net)(self._tensor(inputs), state, last_only=last)
        logits = logits.float()  # the loss in float32 under bf16 autocast too
        loss = F.cross_entropy(logits.reshape(-1, self.spec.vocab_size), self._tensor(targets).reshape(-1))
        return loss, state

    def train_batch(self, inputs, targets, lr, *, step):
        return self._train(inputs, targets, lr, step, None)[0]

    def train_batch_carried(self, inputs, targets, lr, state, *, step):
        loss, (h, c) = self._train(inputs, targets, lr, step, self.state_from_numpy(state))
        return loss, self.state_to_numpy((h.detach(), c.detach()))

    def _train(self, inputs, targets, lr, step, state):
        assert self.optimizer is not None, "configure_training first"
        self._step_weights = None
        # Dropout masks depend on (seed, step) only, so a resumed run draws the same masks.
        torch.manual_seed(self.seed * 1_000_003 + step)
        self.net.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            loss, state = self._loss(inputs, targets, state, self.train_net)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            nn.utils.clip_grad_norm_([p for p in self.net.parameters() if p.requires_grad], self.clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        return float(loss.detach()), state

    @torch.inference_mode()
    def evaluate_batch(self, inputs, targets):
        self.net.eval()
        return float(self._loss(inputs, targets)[0])

    # -- optimizer state, canonical layout -------------------------------------------------
    def _adam_step(self) -> float:
        assert self.optimizer is not None
        for state in self.optimizer.state.values():
            return float(state["step"])
        return 0.0

    def get_optimizer_state(self):
        assert self.optimizer is not None
        params = dict(self.net.named_parameters())
        moments: dict[str, dict[str, np.ndarray]] = {"exp_avg": {}, "exp_avg_sq": {}}
        for name, (torch_name, transposed) in parameter_map(self.spec).items():
            state = self.optimizer.state.get(params[torch_name], {})
            for key, slots in moments.items():
                value = (
                    state[key].detach().cpu().numpy() if key in state else np.zeros(params[torch_name].shape)
                )
                slots[name] = value.T if transposed else value
        return pack_optimizer_state(int(self._adam_step()), moments["exp_avg"], moments["exp_avg_sq"])

    def set_optimizer_state(self, state):
        assert self.optimizer is not None
        step, m, v = unpack_optimizer_state(state, canonical_shapes(self.spec))
        params = dict(self.net.named_parameters())
        for name, (torch_name, transposed) in parameter_map(self.spec).items():
            slots = {
                key: torch.tensor(np.ascontiguousarray(value.T if transposed else value)).to(self.device)
                for key, value in (("exp_avg", m[name]), ("exp_avg_sq", v[name]))
            }
            self.optimizer.state[params[torch_name]] = {"step": torch.tensor(float(step)), **slots}

    # -- state, canonical layout ------------------------------------------------------------
    def state_to_numpy(self, state):
        h, c = state
        if isinstance(h, list):  # per-layer lists, as step returns them
            h, c = torch.stack(h), torch.stack(c)
        return np.ascontiguousarray(torch.stack([h, c], dim=1).detach().cpu().numpy(), dtype=np.float32)

    def state_from_numpy(self, array):
        tensor = torch.from_numpy(np.asarray(array, dtype=np.float32)).to(self.device)
        return tensor[:, 0].contiguous(), tensor[:, 1].contiguous()

    # -- inference -------------------------------------------------------------------------
    def initial_state(self, batch):
        zeros = torch.zeros(self.spec.layers, batch, self.spec.hidden, device=self.device)
        return zeros, zeros.clone()

    @torch.inference_mode()
    def forward(self, tokens, state):
        self.net.eval()
        h, c = state
        if isinstance(h, list):  # per-layer lists, as step returns them
            h, c = torch.stack(h), torch.stack(c)
        logits, state = self.net(self._tensor(tokens), (h, c))
        return logits.cpu().numpy(), state

    def _prepare_step(self):
        """Weights for :meth:`step`, arranged so that one step is a few large operations.

        Layer 0's input projection becomes a [V, 4H] table indexed by token. The cell candidate's
        columns are doubled, so that one sigmoid over all four gates serves them all:
        tanh(x) = 2 sigmoid(2x) - 1.
        """
        net, hidden = self.net, self.spec.hidden

        def doubled(w: torch.Tensor) -> torch.Tensor:
            w = w.clone()
            w[..., 2 * hidden : 3 * hidden] *= 2
            return w

        first = net.inputs(torch.arange(self.spec.vocab_size, device=self.device))
        layers = []
        for k in range(self.spec.layers):
            w_ih_t = getattr(net.lstm, f"weight_ih_l{k}").t()
            w_hh_t = getattr(net.lstm, f"weight_hh_l{k}").t()
            bias = getattr(net.lstm, f"bias_ih_l{k}") + getattr(net.lstm, f"bias_hh_l{k}")
            layers.append((doubled(w_ih_t).contiguous(), doubled(w_hh_t).contiguous(), doubled(bias)))
        table = torch.addmm(layers[0][2], first, layers[0][0])
        self._step_weights = (
            table,
            layers,
            net.dense.weight.t().contiguous(),
            net.dense.bias.detach().clone(),
        )

    @torch.inference_mode()
    def step(self, tokens, state):
        rows = torch.from_numpy(np.asarray(tokens, dtype=np.int64)).to(self.device)
        logits, state = self.step_tensors(rows, state)
        return logits.cpu().numpy(), state

    def generate_tokens(self, tokens, state, settings, uniforms, *, return_logits=False):
        """Many tokens per call, the state kept in torch and the kernel chosen by batch (fused.py)."""
        from .fused import FusedGeneration

        return FusedGeneration(self)(tokens, state, settings, uniforms, return_logits)

    def step_tensors(self, rows: torch.Tensor, state):
        """:meth:`step` on a tensor of token ids [B]: logits [B, V] as a tensor, and the next state."""
        if self._step_weights is None:
            self._prepare_step()
        table, layers, dense_w, dense_b = self._step_weights
        hs, cs = state
        hidden = self.spec.hidden
        new_h, new_c = [], []
        x = None
        for k, (w_ih_t, w_hh_t, bias) in enumerate(layers):
            if k == 0:
                z = torch.addmm(table.index_select(0, rows), hs[0], w_hh_t)
            else:
                z = torch.addmm(torch.addmm(bias, x, w_ih_t), hs[k], w_hh_t)
            i, f, g, o = torch.sigmoid(z).split(hidden, dim=1)
            c = torch.addcmul(f * cs[k], i, g * 2 - 1)
            x = o * torch.tanh(c)
            new_h.append(x)
            new_c.append(c)
        return torch.addmm(dense_b, x, dense_w), (new_h, new_c)
