"""Hooks of the whole suite."""

from __future__ import annotations

from collections import Counter

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give each schemathesis operation test a node id of its own.

    schemathesis names its items `test_x[GET /path]` but leaves every one the node id of the
    function; pytest-xdist schedules by node id, so all of them would run as one.
    """
    for item in items:
        if type(item).__name__ == "SchemathesisFunction" and "[" not in item.nodeid and item.parent is not None:
            # pytest keeps the node id in `_id`; if that changes, the check below fails loudly.
            item._id = item.parent.id.child(item.name)  # type: ignore[attr-defined]
    duplicated = sorted(nodeid for nodeid, count in Counter(item.nodeid for item in items).items() if count > 1)
    if duplicated:
        raise pytest.UsageError(f"tests share node ids (pytest-xdist would run one of each): {duplicated[:5]}")
