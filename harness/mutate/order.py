"""pytest plugin of `fuse-harness mutate` (`-p harness.mutate.order`): run first the tests
that caught earlier mutants of the same code.

$FUSE_HARNESS_MUTATE_FIRST names a JSON list of node ids, most likely to catch first
(harness.mutate.ledger.first_tests); those tests move to the front in that order, every other
test keeps its place. Without the variable the plugin does nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

FIRST_ENV = "FUSE_HARNESS_MUTATE_FIRST"


def front(nodeids: list[str], first: list[str]) -> list[int]:
    """The new order (indexes into nodeids): those in `first` by their rank there, then the rest."""
    rank = {n: i for i, n in enumerate(first)}
    return sorted(range(len(nodeids)), key=lambda i: (rank.get(nodeids[i], len(rank)), i))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    path = os.environ.get(FIRST_ENV)
    if not path:
        return
    try:
        first = [str(n) for n in json.loads(Path(path).read_text())]
    except (OSError, ValueError, TypeError):
        return
    if first:
        items[:] = [items[i] for i in front([it.nodeid for it in items], first)]
