"""Loss curves of a run as a PNG. matplotlib is an optional extra: ``pip install seqpred[plot]``."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import RunError, SeqpredError
from .runs import HISTORY_FILE


def read_history(run: Path) -> list[dict]:
    path = run / HISTORY_FILE
    if not path.is_file():
        raise RunError(f"{run}: no training history ({HISTORY_FILE}) to plot")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise RunError(f"{path}: line {number} is not valid JSON") from None
    return records


def plot_history(run: str | Path, output: str | Path | None = None) -> Path:
    """Write the training (per step, smoothed) and validation curves of ``run``; return the PNG path."""
    run = Path(run)
    records = read_history(run)
    train = [(r["step"], r["loss"]) for r in records if r.get("event") == "train"]
    val = [(r["step"], r["loss"]) for r in records if r.get("event") == "validation"]
    if not train:
        raise RunError(f"{run}: the history holds no training steps yet")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SeqpredError("plotting needs matplotlib: pip install 'seqpred[plot]'") from None
    output = Path(output) if output is not None else run / "curves.png"
    steps, losses = zip(*train, strict=True)
    window = max(1, len(losses) // 50)
    smoothed = [
        sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
        for i in range(len(losses))
    ]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8)
    ax.plot(steps, smoothed, color="tab:blue", label="training")
    if val:
        ax.plot(*zip(*val, strict=True), color="tab:orange", marker="o", markersize=3, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(f"seqpred run {run.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(output)
    plt.close(fig)
    return output
