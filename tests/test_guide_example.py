"""docs/writing-a-backend.md shows real code: its worked example must be the files that ship.

A fenced block whose info string names a file (```python file=PATH) must be that whole file; one
marked ```python excerpt=PATH must appear in the file verbatim. Editing the example's files without
the guide, or the guide without the files, fails here.
"""

import re
from pathlib import Path

import pytest

from seqpred.testing import BackendConformance

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
