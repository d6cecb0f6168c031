from __future__ import annotations

import pytest

from dockyard.db.quota_store import validate_quota
from dockyard.domain.errors import InvalidRequest
from dockyard.services.quota import parse_size

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1048576),
        ("500MB", 500_000_000),
        ("500 mb", 500_000_000),
        ("10GiB", 10 * 1024**3),
        ("1.5KiB", 1536),
        ("2TB", 2 * 1000**4),
        ("7b", 7),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "0GiB", "-5", "10XB", "10g", "1.5B", "1.2.3MB", "GiB", "1e9"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_size(text)


@pytest.mark.parametrize(("limit", "warn", "reject"), [(0, 80, 100), (10, 0, 100), (10, 80, 101), (10, 90, 80)])
def test_bad_quotas(limit: int, warn: int, reject: int) -> None:
    with pytest.raises(InvalidRequest):
        validate_quota(limit, warn, reject)


def test_good_quota() -> None:
    validate_quota(1, 100, 100)
    validate_quota(None, 1, 1)
