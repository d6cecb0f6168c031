from __future__ import annotations

import pytest

from dockyard.domain.errors import RangeNotSatisfiable
from dockyard.services.blobs import parse_range

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", (0, 10)),
        ("bytes=10-", (10, 90)),
        ("bytes=-10", (90, 10)),
        ("bytes=95-200", (95, 5)),
        ("bytes=-500", (0, 100)),
        ("bytes=99-99", (99, 1)),
    ],
)
def test_satisfiable(header: str, expected: tuple[int, int]) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    "header", ["bytes=100-", "bytes=5-2", "bytes=-0", "bytes=-", "items=0-1", "bytes=0-1,3-4", "bytes=a-b", "0-1"]
)
def test_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, 100)
    assert info.value.size == 100
