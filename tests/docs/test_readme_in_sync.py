"""The testing examples run by tests/docs are the ones the README shows, character for
character ."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent


def documented_blocks() -> list[str]:
    blocks = []
    for doc in (REPO / "README.md",):
        if doc.exists():
            blocks += re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
    return blocks


@pytest.mark.parametrize(("test_file", "marker"), [
    ("test_readme_example.py", "def test_chain_of_tasks(tq_app, tq_worker):"),
    ("test_readme_eager_example.py", "def tq_config():"),
])
def test_documented_example_is_the_tested_one(test_file: str, marker: str) -> None:
    candidates = [b for b in documented_blocks() if marker in b]
    assert candidates, f"no README example contains {marker!r}"
    source = (HERE / test_file).read_text()
    assert any(block in source for block in candidates), (
        f"{test_file} no longer matches the README example: update one or the other")
