"""docs/writing-a-backend.md shows real code: its worked example must be the files that ship, its
tables every field of the spec and every check of the kit, and its call order the trainer's.

A fenced block whose info string names a file (```python file=PATH) must be that whole file; one
marked ```python excerpt=PATH must appear in the file verbatim. Editing the example's files without
the guide, or the guide without the files, fails here.
"""

import dataclasses
import re
from pathlib import Path

import pytest

from seqpred.backend import MODEL_METHODS
from seqpred.config import resolve
from seqpred.spec import ModelSpec
from seqpred.testing import BackendConformance
from seqpred.train import Trainer, resume

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "writing-a-backend.md"
BLOCK = re.compile(
    r"^```\w+ (?P<kind>file|excerpt)=(?P<path>\S+)\n(?P<body>.*?)\n```$", re.MULTILINE | re.DOTALL
)

#: The worked example's files that the guide must show in full.
SHOWN_IN_FULL = {
    "plugins/seqpred-numpy/pyproject.toml",
    "plugins/seqpred-numpy/src/seqpred_numpy/plugin.py",
    "tests/test_conformance.py",
}


BLOCKS = [(m["kind"], m["path"], m["body"]) for m in BLOCK.finditer(GUIDE.read_text(encoding="utf-8"))]


def test_the_guide_shows_the_example_files_in_full():
    assert {path for kind, path, _ in BLOCKS if kind == "file"} >= SHOWN_IN_FULL


@pytest.mark.parametrize(("kind", "path", "body"), BLOCKS, ids=[f"{kind}:{path}" for kind, path, _ in BLOCKS])
def test_each_block_is_the_real_code(kind, path, body):
    text = (ROOT / path).read_text(encoding="utf-8")
    if kind == "file":
        assert body + "\n" == text, f"the guide's copy of {path} differs from the file"
    else:
        assert body in text, f"the guide's excerpt of {path} is not in the file"


def test_the_guide_lists_every_test_of_the_kit():
    listed = set(re.findall(r"`(test_\w+)`", GUIDE.read_text(encoding="utf-8")))
    kit = {name for name in dir(BackendConformance) if name.startswith("test_")}
    assert kit <= listed, f"not described in the guide: {', '.join(sorted(kit - listed))}"


def test_the_guide_links_resolve():
    for target in re.findall(r"\]\((\.\./[^)#]+)\)", GUIDE.read_text(encoding="utf-8")):
        assert (GUIDE.parent / target).exists(), target


def section(title: str) -> str:
    """The guide's text under the heading ``title``, up to the next heading."""
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index(f"### {title}\n")
    end = re.compile(r"^#{2,3} ", re.MULTILINE).search(text, start + 4)
    return text[start : end.start() if end else len(text)]


def test_the_guide_names_every_spec_field_and_only_those():
    table = section("The model specification")
    fields = {field.name for field in dataclasses.fields(ModelSpec)}
    members = {name for name in vars(ModelSpec) if not name.startswith("_")} - fields
    rows = re.findall(r"^\| (.*?) \|", table, re.MULTILINE)  # the first column of both tables
    named = {name for row in rows for name in re.findall(r"`(\w+)[(`]", row)}
    assert fields <= named, f"ModelSpec fields missing from the guide: {sorted(fields - named)}"
    assert members <= named, f"ModelSpec methods missing from the guide: {sorted(members - named)}"
    assert named <= fields | members, f"not in ModelSpec: {sorted(named - fields - members)}"


def recorded_calls(monkeypatch, log: list[str]) -> None:
    """Make the numpy backend's models append the name of every contract method called to ``log``."""
    from seqpred_numpy.model import NumpyModel
    from seqpred_numpy.plugin import NumpyBackend

    def create_model(self, spec, *, device="cpu", seed=0):
        model = NumpyModel(spec, seed=seed)
        for name in MODEL_METHODS:
            method = getattr(model, name)

            def recording(*args, _name=name, _method=method, **kwargs):
                log.append(_name)
                return _method(*args, **kwargs)

            setattr(model, name, recording)
        return model

    monkeypatch.setattr(NumpyBackend, "create_model", create_model)


def first_calls(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def test_the_guide_gives_the_order_in_which_the_trainer_calls_a_model(monkeypatch, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog sat on the log.\n" * 20, encoding="utf-8")
    options = {
        "corpus": str(corpus), "backend": "numpy", "hidden": 8, "layers": 1, "embedding": 4, "seq_len": 8,
        "batch_size": 4, "max_steps": 4, "val_every": 2, "val_fraction": 0.2,
    }  # fmt: skip
    new_run: list[str] = []
    recorded_calls(monkeypatch, new_run)
    Trainer(resolve(options), tmp_path / "run").run()
    steps = section("The order in which the core calls a model").split("\nGenerating")[0]
    mentioned = [name for name in first_calls(re.findall(r"`(\w+)[(`]", steps)) if name in new_run]
    assert mentioned == first_calls(new_run), "the guide's order differs from the trainer's calls"

    resumed: list[str] = []
    recorded_calls(monkeypatch, resumed)
    resume(tmp_path / "run", {"max_steps": 6})
    assert resumed[:4] == ["configure_training", "set_weights", "set_optimizer_state", "train_batch"]
    assert "`set_weights(saved)`, then `set_optimizer_state(saved)`" in steps
