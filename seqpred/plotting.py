"""Loss curves of a run as a PNG. matplotlib is an optional extra: ``pip install seqpred[plot]``."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from .errors import RunError, SeqpredError, UsageError
from .reading import read_limited
from .runs import HISTORY_FILE


def read_history(run: Path) -> list[dict]:
    """The records of ``run``'s history; a last line cut short by a killed training is dropped, as
    resume drops it, and records that are not objects with a numeric step and loss are skipped."""
    path = run / HISTORY_FILE
    if not path.is_file():
        raise RunError(f"{run}: no training history ({HISTORY_FILE}) to plot")
    try:
        data = read_limited(path, RunError, "a history")
    except OSError as exc:
        raise RunError(f"{path}: cannot read ({exc.strerror or exc})") from None
    lines = data.decode("utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            if number == len(lines):  # cut short by a kill: resume drops it too
                continue
            raise RunError(
                f"{path}: line {number} is not valid JSON; restore the file from a copy or delete the line"
            ) from None
        if isinstance(record, dict) and all(_is_number(record.get(key)) for key in ("step", "loss")):
            records.append(record)
    return records


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_output(output: Path, formats: dict[str, str]) -> None:
    kind = output.suffix.lower().lstrip(".")
    if kind not in formats:
        raise UsageError(
            f"{output}: unknown image format {output.suffix or '(no extension)'!r}; "
            f"end the name in one of {', '.join('.' + k for k in sorted(formats))}"
        )
    if output.is_dir():
        raise UsageError(f"{output}: is a folder; give a file name, e.g. {output / 'curves.png'}")
    if not output.parent.is_dir():
        raise UsageError(f"{output.parent}: no such folder for the plot")


def _save_atomically(fig, output: Path) -> None:
    """Save to a new temporary file next to ``output`` and rename it over ``output``: a link planted
    at ``output`` is replaced, never followed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, format=output.suffix.lower().lstrip("."))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    formats = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    _check_output(output, formats)
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
    try:
        _save_atomically(fig, output)
    except OSError as exc:
        raise UsageError(f"{output}: cannot write the plot ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
    return output
