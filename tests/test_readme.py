"""Every ```python block of README.md runs as written, each in a fresh namespace from the repository root.

The blocks must be self-contained: they may use only what ships with the repository (the analytic mixture,
``saved_models/``), not a trained run or files a reader does not have. ```sh blocks are not run.
"""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def python_blocks(text: str) -> list:
    """``(line, source)`` of every fenced ```python block, in order (line is 1-based, of the opening fence)."""
    blocks = []
    for match in re.finditer(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.M | re.S):
        blocks.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    return blocks


BLOCKS = python_blocks(open(README, encoding="utf-8").read())


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 2  # the API and the ONNX Runtime snippets
    assert python_blocks("```python\na = 1\n```\n```sh\nls\n```\n```python\nb = 2\n```\n") == [(1, "a = 1\n"),
                                                                                               (7, "b = 2\n")]


@pytest.mark.parametrize("line, source", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_python_block_runs(line, source, monkeypatch):
    monkeypatch.chdir(ROOT)
    namespace = {"__name__": f"readme_block_{line}"}
    # padded so that a traceback's line numbers are README.md's own
    exec(compile("\n" * line + source, README, "exec"), namespace)  # noqa: S102 - the README's own code
