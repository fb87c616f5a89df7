"""Groups for `pytest -n 2 --dist loadgroup` (the README's test command): each test package runs whole on one
worker, so its package- and session-scoped fixtures (the shared vLLM server, the in-process reference build, the
Ray runtime, the trained reference LM, the tiny models) are built once, never once per worker. The analysis tests
share the evaluation tests' models, so they run with them."""
from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).parent
SAME_GROUP = {"analysis": "evaluate"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            package = Path(item.path).relative_to(TESTS).parts[0]
        except ValueError:
            continue
        item.add_marker(pytest.mark.xdist_group(SAME_GROUP.get(package, package)))
