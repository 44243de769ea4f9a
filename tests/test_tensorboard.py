"""``--tensorboard``: the event files hold what ``history.jsonl`` holds, read back by TensorBoard itself."""

from __future__ import annotations

import io
import json
import math
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY, one_line_error

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

TRAIN_TAGS = {"train/loss", "train/bits_per_token", "train/lr", "train/tokens_per_s"}
VALIDATION_TAGS = {"validation/loss", "validation/bits_per_token", "validation/perplexity"}


def history(run: Path, event: str) -> list[dict]:
    records = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == event]


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in ``logdir`` as TensorBoard reads it: (step, value) in file order."""
    accumulator = event_accumulator.EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in tags}


def assert_series_match_history(logdir: Path, run: Path) -> None:
    series = scalars(logdir)
    assert set(series) == TRAIN_TAGS | VALIDATION_TAGS
    train, val = history(run, "train"), history(run, "validation")
    expected = {
        "train/loss": [(r["step"], r["loss"]) for r in train],
        "train/bits_per_token": [(r["step"], r["loss"] / math.log(2)) for r in train],
        "train/lr": [(r["step"], r["lr"]) for r in train],
        "train/tokens_per_s": [(r["step"], r["tokens_per_s"]) for r in train],
        "validation/loss": [(r["step"], r["loss"]) for r in val],
        "validation/bits_per_token": [(r["step"], r["bits_per_token"]) for r in val],
        "validation/perplexity": [(r["step"], r["perplexity"]) for r in val],
    }
    for tag, points in expected.items():
        assert [step for step, _ in series[tag]] == [step for step, _ in points], tag
        # event files store 32-bit floats
        assert [value for _, value in series[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag


def test_event_files_hold_the_history_of_the_run(cli, corpus, tmp_path):
    run, logdir = tmp_path / "run", tmp_path / "tb"
    result = cli(
        "train", corpus, "--backend", "torch", "--out", run, "--quiet", *TINY, "--max-steps", "12",
        "--tensorboard", logdir,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert list(logdir.glob("events.out.tfevents.*"))
    assert_series_match_history(logdir, run)
    assert [r["step"] for r in history(run, "validation")] == [5, 10, 12]


def test_a_resumed_run_continues_the_series_without_repeating_steps(cli, corpus, tmp_path):
    run, logdir = tmp_path / "run", tmp_path / "tb"
    common = ("--quiet", "--tensorboard", logdir)
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", "5", *common).exit_code == 0
    # Keep the checkpoint of step 5, train on to step 10, then go back to it: as if the process had
    # been killed at step 10, after the event files got steps 6 to 10 but before a checkpoint.
    shutil.copytree(run, tmp_path / "step5")
    assert cli("train", "--resume", run, "--max-steps", "10", *common).exit_code == 0
    shutil.rmtree(run)
    shutil.copytree(tmp_path / "step5", run)
    result = cli("train", "--resume", run, "--max-steps", "12", *common)
    assert result.exit_code == 0, result.output
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 3
    assert [r["step"] for r in history(run, "train")] == list(range(1, 13))
    assert_series_match_history(logdir, run)  # steps 6 to 10 and the validation of step 10 once each


@pytest.mark.slow
def test_the_reporter_composes_with_another_from_python(corpus, tmp_path):
    from seqpred.config import resolve
    from seqpred.progress import JsonReporter
    from seqpred.tensorboard import TensorBoardReporter
    from seqpred.train import train

    sizes = {"hidden": 16, "embedding": 8, "seq_len": 16, "batch_size": 8, "val_every": 5}
    config = resolve({"corpus": str(corpus), "max_steps": 6, **sizes})
    lines = io.StringIO()
    with TensorBoardReporter(tmp_path / "tb", then=JsonReporter(lines)) as reporter:
        train(config, tmp_path / "run", reporter=reporter)
    assert_series_match_history(tmp_path / "tb", tmp_path / "run")
    events = [json.loads(line)["event"] for line in lines.getvalue().splitlines()]
    assert events[0] == "start" and events.count("train") == 6 and events[-1] == "end"


def test_without_tensorboardx_the_error_says_what_to_install(cli, corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    result = cli("train", corpus, "--out", tmp_path / "run", *TINY, "--tensorboard", tmp_path / "tb")
    one_line_error(result, 1, "--tensorboard needs tensorboardX", "pip install 'seqpred[tensorboard]'")
    assert not (tmp_path / "run").exists()


def test_a_file_in_place_of_the_folder_is_refused(cli, corpus, tmp_path):
    (tmp_path / "tb").write_text("")
    result = cli("train", corpus, "--out", tmp_path / "run", *TINY, "--tensorboard", tmp_path / "tb")
    one_line_error(result, 2, "--tensorboard", "is not a folder")


def test_event_files_are_never_written_through_a_link(cli, corpus, tmp_path):
    """Links planted at the names of the next seconds' event files: the run writes a file of its own
    and the links' target is untouched."""
    import socket
    import time

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    logdir = tmp_path / "tb"
    logdir.mkdir()
    now = int(time.time())
    for second in range(now, now + 3):
        (logdir / f"events.out.tfevents.{second}.{socket.gethostname()}").symlink_to(victim)
    result = cli("train", corpus, "--out", tmp_path / "run", "--quiet", *TINY, "--max-steps", "3",
                 "--tensorboard", logdir)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious\n"
    written = [p for p in logdir.glob("events.out.tfevents.*") if not p.is_symlink()]
    assert len(written) == 1 and written[0].stat().st_size > 0


def test_the_event_file_opener_refuses_a_link_or_an_existing_file(tmp_path):
    from seqpred.tensorboard import NEW_FILES_ONLY, _NewFilesOnly

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "link").symlink_to(victim)
    opener = _NewFilesOnly()
    for name in ("link", "victim.txt"):
        with pytest.raises(FileExistsError):
            opener.open(f"{NEW_FILES_ONLY}:{tmp_path / name}")
    assert victim.read_text() == "precious\n"
    with opener.open(f"{NEW_FILES_ONLY}:{tmp_path / 'new'}") as handle:
        handle.write(b"event")
    assert (tmp_path / "new").read_bytes() == b"event"
